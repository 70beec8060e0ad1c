//===- ElasticSlicing.h - What an op sees while it is sliced -----*- C++ -*-===//
//
// `elastic-slice` (passes/ElasticSlice.cpp) turns the elastic model at one budget into a dense
// model. It asks each op it needs to slice itself (SliceOpInterface::sliceAtBudget) through a
// SliceState: dense values of operands (sliced on demand), the numeric value of routing values
// at the budget, active mask sizes, and weights cut to index lists, which the state records as
// the slice map. Ops never see the pass; the pass never switches over ops.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_DIALECTS_ELASTIC_ELASTICSLICING_H
#define NESTOR_DIALECTS_ELASTIC_ELASTICSLICING_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <vector>

namespace nestor::elastic {

class SliceState {
public:
  virtual ~SliceState() = default;

  /// Where dense ops are created (the end of the dense function's body).
  virtual mlir::OpBuilder &builder() = 0;

  /// The dense value standing for `value` (its producer is sliced first if need be).
  virtual mlir::FailureOr<mlir::Value> lookup(mlir::Value value) = 0;
  /// Declares `dense` the dense form of the elastic `value`.
  virtual void map(mlir::Value value, mlir::Value dense) = 0;

  /// The value of a routing tensor at the budget, row-major (its producer is evaluated first
  /// if need be; constants are read).
  virtual mlir::FailureOr<llvm::ArrayRef<double>> evaluate(mlir::Value value) = 0;
  virtual void setValue(mlir::Value value, std::vector<double> data) = 0;

  /// The channels a mask keeps in total (over all its groups) at the budget. A null mask (the
  /// axis is not elastic) keeps `fullSize`.
  virtual mlir::FailureOr<int64_t> activeSize(mlir::Value mask, int64_t fullSize) = 0;
  virtual void setActiveSize(mlir::Value mask, int64_t size) = 0;

  /// The dense weight: `weight` (a parameter of the elastic model) restricted to `indices[d]`
  /// along each dimension d. Recorded in the slice map; asking twice for the same weight
  /// must ask for the same indices (a tied weight).
  virtual mlir::FailureOr<mlir::Value>
  sliceWeight(mlir::Operation *user, mlir::Value weight,
              llvm::ArrayRef<std::vector<int64_t>> indices) = 0;
};

} // namespace nestor::elastic

#endif // NESTOR_DIALECTS_ELASTIC_ELASTICSLICING_H
