//===- Mamba.cpp - CUDA emitters of the mamba kernels -------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

// No op of this family has a CUDA emitter yet: emitProgram lists them as unsupported.
void nestor::cuda::registerMambaEmitters(DialectRegistry &registry) {}
