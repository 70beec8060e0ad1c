//===- Reference.h - The float64 reference evaluator of elastic IR -*- C++ -*-===//
//
// A slow, obviously correct interpreter of elastic-dialect functions in float64: each op's
// semantics (ElasticOps.td) written once, with loops that follow the formulas of METHOD.md. It
// is the oracle the kernels, the gradients and the slicing are checked against; it is not a
// backend.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_REFERENCE_H
#define NESTOR_REFERENCE_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace nestor::ref {

/// A dense row-major float64 tensor. Integer tensors (tokens, budget, seed, flags) hold their
/// values exactly as doubles.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<double> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape, double fill = 0.0);
  Tensor(std::vector<int64_t> shape, std::vector<double> data);
  static Tensor scalar(double value) { return Tensor({}, {value}); }

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape[i]; }
  double &operator[](int64_t i) { return data[i]; }
  double operator[](int64_t i) const { return data[i]; }
};

/// Evaluates `func` on `args` (one per function argument, shapes matching the argument types
/// where they are static) and returns its results; a `!elastic.mask` result comes back packed
/// as [m..., phi, sigma]. Errors name the op and what went wrong (e.g. a token out of range).
llvm::Expected<std::vector<Tensor>> evaluate(mlir::func::FuncOp func, llvm::ArrayRef<Tensor> args);

/// Gumbel(0, 1) noise element `index` of stream `stream` under `seed` (elastic.gumbel_noise).
double gumbelNoise(uint64_t seed, uint64_t stream, uint64_t index);

} // namespace nestor::ref

#endif // NESTOR_REFERENCE_H
