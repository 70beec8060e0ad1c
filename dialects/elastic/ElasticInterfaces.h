//===- ElasticInterfaces.h - Interfaces and traits of elastic ---*- C++ -*-===//
#ifndef NESTOR_DIALECTS_ELASTIC_ELASTICINTERFACES_H
#define NESTOR_DIALECTS_ELASTIC_ELASTICINTERFACES_H

#include "dialects/elastic/ElasticDialect.h"
#include "mlir/IR/OpDefinition.h"

namespace nestor::elastic {

class SliceState; // dialects/elastic/ElasticSlicing.h

/// One mask operand of an op and the axis it must describe.
struct MaskUse {
  unsigned operandIndex;
  AxisKind axis;
  int64_t size;
  int64_t groups = 1;
};

/// The operand of an optional mask (ODS `getXMaskMutable()`), or null when absent. Found by
/// position, not by value: one mask value may fill two operands.
inline mlir::OpOperand *maskOperand(mlir::MutableOperandRange range) {
  return range.empty() ? nullptr : &*range.begin();
}

/// Verifies that every `!elastic.mask` operand of `op` is declared by its MaskedOpInterface and
/// has the declared axis, size and group count.
llvm::LogicalResult verifyMaskConsistency(mlir::Operation *op);

/// The dialect-wide trait every elastic op carries (appended by `Elastic_Op`).
template <typename ConcreteType>
class ElasticMaskConsistency
    : public mlir::OpTrait::TraitBase<ConcreteType, ElasticMaskConsistency> {
public:
  static llvm::LogicalResult verifyTrait(mlir::Operation *op) { return verifyMaskConsistency(op); }
};

} // namespace nestor::elastic

#include "dialects/elastic/ElasticInterfaces.h.inc"

#endif // NESTOR_DIALECTS_ELASTIC_ELASTICINTERFACES_H
