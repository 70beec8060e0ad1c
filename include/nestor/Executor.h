//===- Executor.h - Run a planned kernel program on the CPU -----*- C++ -*-===//
//
// A CpuProgram is a kernel-dialect function after `kernel-plan-memory`, prepared once for
// repeated execution: its arena is allocated (the planned peak), every kernel op is bound to
// its CPU kernel (lib/codegen/cpu/Kernels.h) with the buffer addresses the plan gave it, and
// every `kernel.host` step to the float64 host evaluator. run() then executes the steps in
// order with no allocation and no IR walking.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_EXECUTOR_H
#define NESTOR_EXECUTOR_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace nestor::runtime {

/// Active entries per group of a hard prefix mask holding `entries` values of `element` type
/// (float32 or float64; phi and sigma follow them): one past the last nonzero entry of the
/// first group. Every executor derives prefix-dense extents with this rule.
int64_t activePrefix(const void *mask, mlir::Type element, int64_t entries, int64_t groups);

/// Bytes of a tensor of `type` as the executors store it (i1 as one byte per element).
int64_t bufferBytes(mlir::Type type);

/// One `kernel.host` step: its region as a function, evaluated on the host in float64 by the
/// reference interpreter (ElasticOps semantics), reading and writing plain row-major buffers of
/// the operands' and results' types. Both executors run host steps through it.
class HostStep {
public:
  /// Clones `op`'s region into a function of `module` (created on first use).
  static llvm::Expected<HostStep> create(mlir::Operation *op,
                                         mlir::OwningOpRef<mlir::ModuleOp> &module);
  /// `inputs` has one buffer per operand, `outputs` one per result.
  llvm::Error run(llvm::ArrayRef<const void *> inputs, llvm::ArrayRef<void *> outputs) const;

private:
  struct Port {
    std::vector<int64_t> shape;
    mlir::Type element;
  };
  mlir::func::FuncOp fn;
  std::vector<Port> ins, outs;
};

class CpuProgram {
public:
  /// Prepares `func` (a planned kernel function; float32 or float64 activations). The function
  /// must outlive the program.
  static llvm::Expected<std::unique_ptr<CpuProgram>> create(mlir::func::FuncOp func);
  ~CpuProgram();

  /// Runs one step. `args` holds one pointer per function argument, to row-major data of the
  /// argument's type (i32 tokens, i64 seed, i1 flag as one byte, floats). Errors name the
  /// failing op (e.g. a token outside the vocabulary).
  llvm::Error run(llvm::ArrayRef<const void *> args);

  /// The i-th result of the last run (valid until the next run), in the result's element type.
  const void *result(unsigned i) const;
  unsigned numResults() const;
  /// Bytes of the planned arena (the program's peak activation/gradient memory).
  int64_t arenaBytes() const;
  /// Name and time (seconds, accumulated over runs) of every step, for profiling.
  std::vector<std::pair<std::string, double>> profile() const;
  void setProfiling(bool enabled);
  /// Floating-point operations of the GEMMs executed since the last resetCounters() (at the
  /// extents actually computed).
  double gemmFlops() const;
  /// Calls `observer` after every step with the op it ran (nullptr: none). With buffer() it
  /// reads intermediate values, e.g. activations for the importance ranking.
  void setObserver(std::function<void(mlir::Operation *)> observer);
  /// The buffer of `value` (an argument or a kernel result of the program's function); valid
  /// until the plan reuses it, i.e. inside an observer call for the op that defines it.
  const void *buffer(mlir::Value value) const;
  void resetCounters();

  struct Impl;

private:
  explicit CpuProgram(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace nestor::runtime

#endif // NESTOR_EXECUTOR_H
