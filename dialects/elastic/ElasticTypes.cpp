//===- ElasticTypes.cpp - Types of the elastic dialect ---------------------===//
#include "dialects/elastic/ElasticTypes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace nestor::elastic;

#define GET_TYPEDEF_CLASSES
#include "dialects/elastic/ElasticTypes.cpp.inc"

void ElasticDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/elastic/ElasticTypes.cpp.inc"
      >();
}

LogicalResult MaskType::verify(function_ref<InFlightDiagnostic()> emitError, AxisKind axis,
                               int64_t size, int64_t groups) {
  if (size <= 0)
    return emitError() << "mask size must be positive, got " << size;
  if (groups <= 0)
    return emitError() << "mask group count must be positive, got " << groups;
  bool grouped = axis == AxisKind::AttnHeads || axis == AxisKind::MambaHeads;
  if (!grouped && groups != 1)
    return emitError() << "a " << stringifyAxisKind(axis)
                       << " mask has no groups; only attn_heads and mamba_heads masks do";
  if (size % groups != 0)
    return emitError() << "mask size " << size << " is not divisible by its " << groups
                       << " groups";
  return success();
}

RankedTensorType nestor::elastic::maskCotangentType(MaskType mask, Type elementType) {
  return RankedTensorType::get({mask.getSize() + 2}, elementType);
}
