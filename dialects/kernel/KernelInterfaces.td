//===- KernelInterfaces.td - Interfaces of the kernel dialect ---*- tablegen -*-===//
#ifndef NESTOR_KERNEL_INTERFACES_TD
#define NESTOR_KERNEL_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Kernel_CudaEmitOpInterface : OpInterface<"CudaEmitOpInterface"> {
  let cppNamespace = "::nestor::kernel";
  let description = [{
    A kernel op that can write itself as CUDA C++ (lib/codegen/cuda/Emitter.h). The op emits
    one translation unit with `extern "C"` entry points and says how to launch them: grid and
    block sizes, and where each parameter comes from (an operand's or a result's buffer, the
    run-time active extent of a prefix-dense mask, a scratch buffer). Every size the op's types
    fix is written into the source as a constant; only active extents are run-time arguments,
    so elastic training never recompiles, and a sliced (dense) program has none. The models
    are attached by `nestor::cuda::registerCudaEmitters`, keeping the dialect free of codegen.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{Fills `out` with this op's CUDA source and launches, or emits an error and
                 fails for a configuration the emitter does not handle.}],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"emitCuda",
      /*args=*/(ins "::nestor::cuda::KernelSource &":$out)>
  ];
}

#endif // NESTOR_KERNEL_INTERFACES_TD
