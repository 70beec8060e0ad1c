//===- EmitProgram.h - Planned kernel IR to the program artifact -*- C++ -*-===//
//
// The last step of the compiler: a kernel-dialect function after `kernel-plan-memory` becomes a
// nestor.program.Function (engine/program/nestor_program.proto), the artifact the runtime
// (engine/, no MLIR) executes. Everything static is decided here: each value's storage (an
// arena offset of the memory plan, a caller argument, or constant bytes), each step's kernel
// kind with its operands and results by their ODS names, its attributes with defaults filled
// in, the depth gating, and each host step's elastic ops.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_EMITPROGRAM_H
#define NESTOR_EMITPROGRAM_H

#include "engine/cpu/CpuExecutor.h"
#include "engine/program/nestor_program.pb.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace nestor {

/// Serialises one planned kernel function. `numForwardResults` is recorded as the function's
/// forward-result count (-1: the results without `elastic.grad_of`). Fails naming the op and
/// what the program format cannot hold (an op without a runtime kernel, an attribute kind).
llvm::Expected<program::Function> emitProgramFunction(mlir::func::FuncOp func,
                                                      int numForwardResults = -1);

/// Every planned function of `module` (those with `kernel.arena_bytes`), in module order.
llvm::Expected<program::Program> emitProgram(mlir::ModuleOp module,
                                             const std::string &target = "cpu");

/// A runtime Status as an llvm::Error (the compiler's error type), at the layer boundary.
llvm::Error toError(const engine::Status &status);

/// Emits `func` and prepares it on the CPU runtime: what every in-process caller of a planned
/// function (trainer, bench, importance ranking, tests) runs.
llvm::Expected<std::unique_ptr<engine::CpuExecutor>> prepareCpu(mlir::func::FuncOp func,
                                                                int numForwardResults = -1);

/// The generator string programs record ("nestor <version>").
std::string programGenerator();

} // namespace nestor

#endif // NESTOR_EMITPROGRAM_H
