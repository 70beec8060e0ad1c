//===- Registration.cpp - Attach every CUDA emitter ------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

void nestor::cuda::registerCudaEmitters(mlir::DialectRegistry &registry) {
  registerRowEmitters(registry);
  registerLossEmitters(registry);
  registerOptimizerEmitters(registry);
  registerGemmEmitters(registry);
  registerMambaEmitters(registry);
  registerAttentionEmitters(registry);
}
