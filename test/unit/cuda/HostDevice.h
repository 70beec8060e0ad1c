//===- HostDevice.h - A KernelDevice on the host emulation --------*- C++ -*-===//
//
// For tests: runtime::KernelDevice with host memory and kernels compiled for the host under
// cuda_host_emulation.h (HostModule), so a DeviceProgram, the CUDA executor, runs a whole
// kernel program without a GPU and can be compared with the CPU executor.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TEST_CUDA_HOSTDEVICE_H
#define NESTOR_TEST_CUDA_HOSTDEVICE_H

#include "nestor/DeviceProgram.h"
#include "test/unit/cuda/HostRun.h"

#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace nestor::cuda::test {

class HostDevice final : public runtime::KernelDevice {
public:
  std::string description() const override { return "host emulation"; }
  llvm::Expected<uint64_t> allocate(size_t bytes) override;
  llvm::Error upload(uint64_t dst, const void *src, size_t bytes) override;
  llvm::Error download(void *dst, uint64_t src, size_t bytes) override;
  llvm::Error copy(uint64_t dst, uint64_t src, size_t bytes) override;
  llvm::Error fill(uint64_t dst, uint8_t value, size_t bytes) override;
  llvm::Expected<size_t> load(mlir::Operation *op, const KernelSource &kernel) override;
  llvm::Error launch(size_t handle, size_t index, llvm::ArrayRef<void *> params) override;
  llvm::Error synchronize() override { return llvm::Error::success(); }

  /// Kernel launches so far.
  size_t launches() const { return launchCount; }

private:
  /// Checks that [address, address + bytes) lies in one allocation.
  llvm::Error check(uint64_t address, size_t bytes) const;

  /// Frees what allocate's aligned new[] returned with the matching aligned delete[].
  struct AlignedDelete {
    void operator()(unsigned char *p) const { ::operator delete[](p, std::align_val_t(256)); }
  };
  std::vector<std::unique_ptr<unsigned char[], AlignedDelete>> blocks;
  std::map<uint64_t, size_t> sizes; // start -> bytes
  /// Kernels compile in the background (two at a time on two cores): a launch waits for its own.
  struct Pending {
    std::future<llvm::Expected<std::unique_ptr<HostModule>>> compiling;
    std::unique_ptr<HostModule> module;
  };
  llvm::Expected<HostModule *> ready(size_t handle);
  // Declared before `modules`, whose futures use them until they finish: destroyed after it.
  std::mutex compileMutex;
  std::condition_variable compileSlots;
  unsigned compilers = 0;
  std::vector<std::unique_ptr<Pending>> modules;
  size_t launchCount = 0;
};

} // namespace nestor::cuda::test

#endif // NESTOR_TEST_CUDA_HOSTDEVICE_H
