//===- HostRun.h - Run an emitted CUDA kernel on the host ---------*- C++ -*-===//
//
// For tests: compiles a KernelSource with the host C++ compiler under cuda_host_emulation.h
// (as a shared library beside the embedded nestor_device.cuh) and runs its launches on host
// buffers, so CI checks generated kernels against the CPU backend without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TEST_CUDA_HOSTRUN_H
#define NESTOR_TEST_CUDA_HOSTRUN_H

#include "lib/codegen/cuda/Emitter.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace nestor::cuda::test {

/// Parses `ir` (a module of func.func ops holding kernel ops) in `context`, with the kernel
/// dialect and every CUDA emitter registered; fails the current test on a parse error.
mlir::OwningOpRef<mlir::ModuleOp> parseKernelModule(mlir::MLIRContext &context, llvm::StringRef ir);

/// The first op of the kernel dialect in `module` (in its first function).
mlir::Operation *firstKernelOp(mlir::ModuleOp module);

/// Emits `op` (which must have a CUDA emitter) and compiles the result with NVRTC to PTX for
/// `arch`; returns the PTX, or the error.
llvm::Expected<std::string> compileToPtx(mlir::Operation *op, llvm::StringRef arch);

/// An emitted kernel compiled for the host under the emulation (a shared library beside the
/// embedded nestor_device.cuh); launch(i, params) runs launch i, parameters as cuLaunchKernel
/// takes them (params[j] points at parameter j's value: a 64-bit address or a long long).
class HostModule {
public:
  static llvm::Expected<std::unique_ptr<HostModule>> compile(mlir::Operation *op,
                                                             const KernelSource &kernel);
  ~HostModule();
  void launch(size_t index, llvm::ArrayRef<void *> params) const;

private:
  HostModule() = default;
  void *library = nullptr;
  std::string directory;
  std::vector<void (*)(void **, const long long *)> launchers;
  std::vector<std::array<long long, 7>> dims;
};

/// Runs `kernel` (emitted for `op`) with one host buffer per operand and per result of `op`, in
/// order (nullptr for an operand no launch reads). Extents come from the mask operands' values,
/// as the runtime computes them; scratch buffers are allocated and zeroed. The compile takes a
/// second or two; the run is slow (one OS thread per CUDA thread), so keep sizes small.
llvm::Error runOnHost(mlir::Operation *op, const KernelSource &kernel,
                      llvm::ArrayRef<const void *> operands, llvm::ArrayRef<void *> results);

/// `n` values from N(0, scale^2), deterministic in `seed`, as T.
template <typename T> std::vector<T> randomVector(size_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<T> v(n);
  for (T &x : v)
    x = T(normal(rng));
  return v;
}

} // namespace nestor::cuda::test

#endif // NESTOR_TEST_CUDA_HOSTRUN_H
