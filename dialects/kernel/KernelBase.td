//===- KernelBase.td - The kernel dialect -------------------------*- tablegen -*-===//
//
// The `kernel` dialect is Nestor's fused-kernel level: every op is one kernel launch of a
// backend (a CPU function in lib/codegen/cpu/Kernels.h; later a generated CUDA kernel). Values
// are statically shaped tensors; `kernel-plan-memory` assigns each one a byte offset in one
// arena by liveness, so after planning every tensor is an explicit buffer.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_KERNEL_BASE_TD
#define NESTOR_KERNEL_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/OpBase.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def Kernel_Dialect : Dialect {
  let name = "kernel";
  let summary = "Fused kernels with explicit buffers: GEMMs, row kernels, scans, attention";
  let description = [{
    The kernel program of a train step or a forward pass. Elastic masks are plain tensors here:
    a `!elastic.mask<axis, n>` becomes `tensor<(n+2)xT>` holding `[m_0 .. m_{n-1}, phi, sigma]`
    (the layout of its cotangent). An op marked `prefix_dense` has hard prefix masks: the backend
    derives each masked axis's active extent from the mask at run time and computes only that
    prefix (per group for grouped axes), writing zeros elsewhere.
  }];
  let cppNamespace = "::nestor::kernel";
}

class Kernel_Op<string mnemonic, list<Trait> traits = []>
    : Op<Kernel_Dialect, mnemonic, traits>;

def Kernel_Float : AnyTypeOf<[F32, F64]>;
def Kernel_FloatTensor : RankedTensorOf<[F32, F64]>;
def Kernel_Vector : 1DTensorOf<[F32, F64]>;
def Kernel_Scalar : 0DTensorOf<[F32, F64]>;
def Kernel_Tokens : 2DTensorOf<[I32]>;
// The run-time value of an elastic mask: n multipliers, phi, sigma.
def Kernel_OptionalMask : Optional<Kernel_Vector>;

#endif // NESTOR_KERNEL_BASE_TD
