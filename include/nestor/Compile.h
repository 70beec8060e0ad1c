//===- Compile.h - From a spec to a runnable train step ---------*- C++ -*-===//
//
// The driver-level compile: import a spec, build its train step (elastic-autodiff), lower it to
// a planned kernel program for one batch shape (nestor-kernels), and prepare it for the CPU
// runtime (engine/). `nestor compile --emit kernels`, `nestor bench` and the trainer share it.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_COMPILE_H
#define NESTOR_COMPILE_H

#include "nestor/EmitProgram.h"
#include "nestor/Slice.h"
#include "nestor/Spec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <memory>
#include <string>
#include <vector>

namespace nestor {

struct StepOptions {
  int64_t batch = 1, seqLen = 1;
  bool float64 = false;
  /// Compute only the active prefix of each axis under hard masks.
  bool prefixDense = true;
  std::vector<int64_t> depthOrder;
  /// Give @parent a run-time per-layer keep input (ImportOptions::parentLayerKeep).
  bool parentLayerKeep = false;
};

/// One argument of a compiled step: a run-time input or a parameter, by name.
struct StepArg {
  std::string name;
  bool isParam = false;
  std::vector<int64_t> shape;
  mlir::Type elementType;
  int64_t numel() const;
  int64_t bytes() const;
};

/// A planned kernel train step and its CPU program.
struct CompiledStep {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mlir::func::FuncOp step;
  std::unique_ptr<engine::CpuExecutor> program;
  std::vector<StepArg> args;
  /// Forward results first (logits, loss, ...), then one gradient per parameter, in order.
  unsigned numForwardResults = 0;
  int argIndex(llvm::StringRef name) const;
};

/// The default batch shape of a spec: its first training stage's, else 1 x 64.
StepOptions defaultStepOptions(const spec::ModelSpec &spec);

/// Imports `spec` and compiles its train step (the elastic model's for elastic specs, the dense
/// model's otherwise) into a CPU program.
llvm::Expected<std::unique_ptr<CompiledStep>> compileTrainStep(mlir::MLIRContext &context,
                                                               const spec::ModelSpec &spec,
                                                               const StepOptions &options);

/// Runs the pipeline up to the planned kernel module only (for printing).
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
compileKernels(mlir::MLIRContext &context, const spec::ModelSpec &spec, const StepOptions &options);

/// The optimizer as kernel programs: `@grad_norm(grads...) -> tensor<f64>` (the squared global
/// norm, for clipping) and `@adamw_step(params..., grads..., exp_avg..., exp_avg_sq...,
/// hyper_model, hyper_router)`, one in-place `kernel.adamw` per parameter; `hyper_*` are
/// tensor<3xf64> [lr, step, grad_scale] for the model and for the routers (whose learning rate
/// the spec multiplies). Weight decay applies to matrices, not to vectors (norms, biases, A_log,
/// D, dt_bias), the usual practice.
struct OptimizerProgram {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::unique_ptr<engine::CpuExecutor> gradNorm, step;
};

llvm::Expected<std::unique_ptr<OptimizerProgram>>
compileOptimizer(mlir::MLIRContext &context, llvm::ArrayRef<StepArg> params,
                 const spec::Optimizer &optimizer);

/// The incremental decode step of `spec` (ImportOptions::decodeContext): one token of one
/// sequence at a time, with KV caches of `context` positions, lowered by the same kernel
/// pipeline as the train step and emitted as a program function `@decode_step` (the entry
/// point engine::ProgramDecoder runs). For an elastic spec the active sizes are run-time
/// inputs, so one program serves every budget of the parent; for a dense (sliced) spec the
/// sizes are the spec's. `depthOrder` is the depth ranking the dropped layers follow.
/// With `tokens` > 1, the same step appending `tokens` tokens at once, emitted as
/// `@prefill_<tokens>` (engine::prefillEntry).
llvm::Expected<program::Function>
compileDecodeStep(mlir::MLIRContext &context, const spec::ModelSpec &spec, int64_t contextLength,
                  llvm::ArrayRef<int64_t> depthOrder = {}, int64_t tokens = 1);

/// The longest prefill chunk by default: a prompt is read 256 tokens per call, in GEMMs of 256
/// rows, like the forward pass of training.
inline constexpr int64_t kDefaultPrefillChunk = 256;
/// The prefill chunks for a longest chunk C: C, C/16, C/256, ... while above 1 (256 gives 256
/// and 16). A prompt of n tokens then takes at most n/C + 15 + 15 calls (the last ones
/// `@decode_step`); none for C <= 1.
std::vector<int64_t> prefillChunks(int64_t longestChunk);
/// Every inference entry point of `spec` (what engine::ProgramDecoder runs): `@decode_step`,
/// then `@prefill_<C>` for each C of prefillChunks(longestChunk) below `contextLength`.
llvm::Expected<std::vector<program::Function>>
compileInference(mlir::MLIRContext &context, const spec::ModelSpec &spec, int64_t contextLength,
                 llvm::ArrayRef<int64_t> depthOrder = {},
                 int64_t longestChunk = kDefaultPrefillChunk);

/// The dense model of a trained elastic model at one budget (METHOD.md §8), built by the
/// `elastic-slice` pass: `module` holds `@parent` and the dense `@elastic_model(tokens,
/// weights...) -> logits` (`model`), whose weight arguments carry their slice of the parent;
/// `map` is that slice map, ready for slice::applySliceMap.
struct DenseModule {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mlir::func::FuncOp model;
  slice::SliceMap map;
};

/// Imports `spec` (elastic) with `depthOrder`, binds the trained routers from `weights` as
/// constants and runs elastic-slice at `budget`. Fails with the pass's diagnostics.
llvm::Expected<DenseModule> sliceToDense(mlir::MLIRContext &context, const spec::ModelSpec &spec,
                                         const train::TensorMap &weights, llvm::StringRef budget,
                                         llvm::ArrayRef<int64_t> depthOrder);

} // namespace nestor

#endif // NESTOR_COMPILE_H
