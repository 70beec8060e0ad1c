//===- KernelOps.h - The kernel dialect -------------------------*- C++ -*-===//
#ifndef NESTOR_DIALECTS_KERNEL_KERNELOPS_H
#define NESTOR_DIALECTS_KERNEL_KERNELOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/kernel/KernelDialect.h.inc"

namespace nestor::cuda {
struct KernelSource; // lib/codegen/cuda/Emitter.h
} // namespace nestor::cuda

#include "dialects/kernel/KernelInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialects/kernel/KernelOps.h.inc"

#endif // NESTOR_DIALECTS_KERNEL_KERNELOPS_H
