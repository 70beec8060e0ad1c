//===- Pipelines.cpp - Nestor's pass pipelines ------------------------------===//
//
// Pipelines are plain functions over OpPassManager, shared by the driver (`nestor compile`) and
// nestor-opt (registered under the same names).
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void nestor::buildTrainStepPipeline(OpPassManager &pm, const TrainStepPipelineOptions &options) {
  pm.addPass(createElasticAutodiffPass({options.function, options.lossIndex}));
}

void nestor::buildKernelPipeline(OpPassManager &pm, const KernelPipelineOptions &options) {
  pm.addPass(
      createConvertElasticToKernelPass({options.batch, options.seqLen, options.prefixDense}));
  pm.addPass(createCSEPass());
  pm.addNestedPass<func::FuncOp>(createKernelFusePass());
  pm.addPass(createCanonicalizerPass());
  pm.addNestedPass<func::FuncOp>(createKernelPlanMemoryPass());
}

void nestor::registerNestorPipelines() {
  PassPipelineRegistration<KernelPipelineOptions>(
      "nestor-kernels",
      "Elastic IR to a planned kernel program (lowering, CSE, fusion, memory plan)",
      buildKernelPipeline);
  PassPipelineRegistration<TrainStepPipelineOptions>(
      "nestor-train-step",
      "The train step of a model function: forward, losses and every parameter's gradient",
      buildTrainStepPipeline);
}
