//===- Passes.h - Nestor's passes and pipelines -----------------*- C++ -*-===//
#ifndef NESTOR_PASSES_PASSES_H
#define NESTOR_PASSES_PASSES_H

#include "dialects/elastic/ElasticDialect.h"
#include "dialects/kernel/KernelOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace nestor {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Options of the `nestor-train-step` pipeline.
struct TrainStepPipelineOptions : public mlir::PassPipelineOptions<TrainStepPipelineOptions> {
  Option<std::string> function{*this, "function",
                               llvm::cl::desc("The model function to differentiate"),
                               llvm::cl::init("elastic_model")};
  Option<unsigned> lossIndex{*this, "loss-index",
                             llvm::cl::desc("Which result of the function is the loss"),
                             llvm::cl::init(1)};
};

/// Forward, losses and gradients in one `@<function>_train_step` (elastic-autodiff).
void buildTrainStepPipeline(mlir::OpPassManager &pm, const TrainStepPipelineOptions &options);

/// Options of the `nestor-kernels` pipeline.
struct KernelPipelineOptions : public mlir::PassPipelineOptions<KernelPipelineOptions> {
  Option<int64_t> batch{*this, "batch", llvm::cl::desc("Sequences per step"), llvm::cl::init(1)};
  Option<int64_t> seqLen{*this, "seq-len", llvm::cl::desc("Tokens per sequence"),
                         llvm::cl::init(1)};
  Option<bool> prefixDense{*this, "prefix-dense",
                           llvm::cl::desc("Compute only the active prefix under hard masks"),
                           llvm::cl::init(true)};
};

/// Elastic IR to a planned kernel program: convert-elastic-to-kernel, CSE (which shares the
/// forward intermediates with the backward's recomputation), kernel-fuse, kernel-plan-memory.
void buildKernelPipeline(mlir::OpPassManager &pm, const KernelPipelineOptions &options);

/// Registers the pipelines above with nestor-opt's pass registry.
void registerNestorPipelines();

/// Registers Nestor's dialects (elastic, and the upstream dialects its IR uses) in `registry`.
void registerNestorDialects(mlir::DialectRegistry &registry);

/// Registers every Nestor pass and pipeline with the global pass registry (nestor-opt).
void registerNestorPassesAndPipelines();

} // namespace nestor

#endif // NESTOR_PASSES_PASSES_H
