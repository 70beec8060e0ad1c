//===- Reference.h - The float64 reference evaluator of elastic IR -*- C++ -*-===//
//
// A slow, obviously correct interpreter of elastic-dialect functions in float64: each op's
// semantics (ElasticOps.td) written once, with loops that follow the formulas of METHOD.md. It
// is the oracle the kernels, the gradients and the slicing are checked against; it is not a
// backend. The router and budget ops' semantics live in HostOps.h, shared with the runtime.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_REFERENCE_H
#define NESTOR_REFERENCE_H

#include "nestor/HostOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace nestor::ref {

/// Evaluates `func` on `args` (one per function argument, shapes matching the argument types
/// where they are static) and returns its results; a `!elastic.mask` result comes back packed
/// as [m..., phi, sigma]. Errors name the op and what went wrong (e.g. a token out of range).
llvm::Expected<std::vector<Tensor>> evaluate(mlir::func::FuncOp func, llvm::ArrayRef<Tensor> args);

} // namespace nestor::ref

#endif // NESTOR_REFERENCE_H
