//===- ElasticDialect.cpp - The elastic dialect ----------------------------===//
#include "dialects/elastic/ElasticDialect.h"
#include "dialects/elastic/ElasticOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace nestor::elastic;

#include "dialects/elastic/ElasticDialect.cpp.inc"
#include "dialects/elastic/ElasticEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/elastic/ElasticAttrs.cpp.inc"

void ElasticDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/elastic/ElasticOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/elastic/ElasticAttrs.cpp.inc"
      >();
  registerTypes();
}
