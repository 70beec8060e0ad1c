//===- Executor.h - Helpers of the MLIR-walking CUDA executor ---*- C++ -*-===//
//
// What runtime/cuda/DeviceProgram.cpp still reads from planned kernel IR. The CPU runs
// programs through the runtime without MLIR (engine/cpu/CpuExecutor.h); the CUDA executor is
// the next to move there (issue 14), and these helpers go with it.
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
/// the operands' and results' types. The CUDA executor runs host steps through it.
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

} // namespace nestor::runtime

#endif // NESTOR_EXECUTOR_H
