//===- DeviceProgram.h - Run a planned kernel program on a GPU ---*- C++ -*-===//
//
// The CUDA backend's executor. A DeviceProgram is a kernel-dialect function after
// `kernel-plan-memory`, prepared once for a KernelDevice: the same static memory plan as the
// CPU (one device arena, every kernel result at its planned offset), every kernel op emitted as
// CUDA C++ (lib/codegen/cuda/Emitter.h), compiled and loaded once, and every `kernel.host` step
// run on the host in float64 (HostStep), its inputs read back from the device and its results
// sent to it. run() then launches the steps in order on one stream.
//
// Prefix-dense extents are computed on the host from each mask's value (the masks come from
// host steps, so the host has them); layers the depth router dropped are skipped as on the
// CPU (their results zeroed, or a GEMM's accumulator passed through).
//
// A KernelDevice is the CUDA driver (openCudaKernelDevice) or, in tests, the host emulation of
// the CUDA execution model (test/unit/cuda/), which checks a whole program against the CPU
// executor without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_DEVICEPROGRAM_H
#define NESTOR_DEVICEPROGRAM_H

#include "lib/codegen/cuda/Emitter.h"
#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nestor::runtime {

/// A device that runs emitted kernels. Memory is addressed by 64-bit device addresses; what it
/// allocates lives as long as the device.
class KernelDevice {
public:
  virtual ~KernelDevice() = default;
  /// E.g. "NVIDIA H200 (sm_90)".
  virtual std::string description() const = 0;
  /// `bytes` of zeroed device memory, 256-byte aligned.
  virtual llvm::Expected<uint64_t> allocate(size_t bytes) = 0;
  virtual llvm::Error upload(uint64_t dst, const void *src, size_t bytes) = 0;
  virtual llvm::Error download(void *dst, uint64_t src, size_t bytes) = 0;
  virtual llvm::Error copy(uint64_t dst, uint64_t src, size_t bytes) = 0;
  virtual llvm::Error fill(uint64_t dst, uint8_t value, size_t bytes) = 0;
  /// Compiles (or finds cached) and loads `kernel`, emitted for `op`; the handle names it.
  virtual llvm::Expected<size_t> load(mlir::Operation *op, const cuda::KernelSource &kernel) = 0;
  /// Launch `index` of loaded kernel `handle`. `params[i]` points at parameter i's value: a
  /// 64-bit device address for buffers, a `long long` for extents (cuLaunchKernel's layout).
  virtual llvm::Error launch(size_t handle, size_t index, llvm::ArrayRef<void *> params) = 0;
  /// Waits for every launch and copy issued so far; reports a kernel's failure.
  virtual llvm::Error synchronize() = 0;
};

/// The CUDA device `ordinal`: the driver opened with dlopen, kernels compiled by NVRTC for the
/// device's architecture and cached in `cacheDirectory` (empty: memory only). Without a GPU the
/// error says "no CUDA device: ..." and why.
llvm::Expected<std::unique_ptr<KernelDevice>>
openCudaKernelDevice(int ordinal = 0, const std::string &cacheDirectory = "");

/// The parameter values of `launch` (emitted for `op`), one 8-byte slot each, as
/// cuLaunchKernel reads them: `buffer(kind, index)` gives the device address of an operand,
/// result or scratch buffer, and each extent is computed (activePrefix) from the host copy of
/// its mask, `maskData(operand index)`.
llvm::Expected<std::vector<uint64_t>>
launchValues(mlir::Operation *op, const cuda::Launch &launch,
             llvm::function_ref<uint64_t(cuda::KernelArg::Kind, unsigned)> buffer,
             llvm::function_ref<llvm::Expected<const void *>(unsigned)> maskData);

class DeviceProgram {
public:
  /// Prepares `func` (a planned kernel function) for `device`, which must outlive the program;
  /// so must `func`. Fails naming the op when an op has no CUDA emitter or fails to compile.
  static llvm::Expected<std::unique_ptr<DeviceProgram>> create(mlir::func::FuncOp func,
                                                               KernelDevice &device);
  ~DeviceProgram();

  /// Binds argument `i` to `bytes` of device memory at `address` (e.g. weights that stay on the
  /// device between steps, shared by the train step and the optimizer): run() neither uploads
  /// it nor writes it back, and ignores its host pointer.
  llvm::Error bindArgument(unsigned i, uint64_t address, size_t bytes);

  /// Runs one step, like engine::CpuExecutor::run: one host pointer per function argument.
  /// Arguments a kernel updates in place (kernel.adamw's parameter and moments) are written back.
  llvm::Error run(llvm::ArrayRef<const void *> args);
  /// The i-th result of the last run, copied to the host (valid until the next call).
  llvm::Expected<const void *> result(unsigned i);
  unsigned numResults() const;
  int64_t arenaBytes() const;
  /// Distinct kernels loaded (identical ops share one).
  size_t numKernels() const;

  struct Impl;

private:
  explicit DeviceProgram(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

/// Greedy decoding of a dense model (a sliced budget) on `device`: the planned forward `@model`
/// for batch 1 and `prompt.size() + maxTokens` positions runs once per generated token, and the
/// logits at the last filled position choose the next one (the model is causal, so the
/// positions past the text change nothing). Returns the tokens after `prompt`, up to
/// `maxTokens`, stopping after `stopToken`. Not incremental: each token costs a whole forward.
llvm::Expected<std::vector<int32_t>>
greedyOnDevice(mlir::MLIRContext &context, const spec::ModelSpec &dense,
               const train::TensorMap &weights, const std::vector<int32_t> &prompt,
               int64_t maxTokens, int32_t stopToken, KernelDevice &device);

} // namespace nestor::runtime

#endif // NESTOR_DEVICEPROGRAM_H
