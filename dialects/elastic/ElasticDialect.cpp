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

LogicalResult ElasticDialect::verifyRegionArgAttribute(Operation *op, unsigned regionIndex,
                                                       unsigned argIndex,
                                                       NamedAttribute attribute) {
  if (attribute.getName() != "elastic.param")
    return success();
  auto name = dyn_cast<StringAttr>(attribute.getValue());
  if (!name || name.getValue().empty())
    return op->emitOpError() << "argument " << argIndex
                             << ": 'elastic.param' must name the weight (a non-empty string)";
  if (regionIndex >= op->getNumRegions() || op->getRegion(regionIndex).empty())
    return success();
  Type type = op->getRegion(regionIndex).getArgument(argIndex).getType();
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return op->emitOpError() << "argument " << argIndex << ": weight '" << name.getValue()
                             << "' must be a statically shaped tensor (the spec fixes its "
                                "sizes), got "
                             << type;
  return success();
}
