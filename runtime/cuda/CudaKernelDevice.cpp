//===- CudaKernelDevice.cpp - KernelDevice on the CUDA driver --------------===//
//
// Memory is one DeviceBuffer per allocation, found again by address; kernels are compiled by
// NVRTC for the device's architecture (through the kernel cache) and loaded as modules.
//
//===----------------------------------------------------------------------===//
#include "nestor/DeviceProgram.h"

#include "lib/codegen/cuda/CudaDriver.h"
#include "lib/codegen/cuda/KernelCache.h"

#include <map>

using namespace nestor;
using namespace nestor::runtime;

namespace {

class CudaKernelDevice final : public KernelDevice {
public:
  CudaKernelDevice(cuda::CudaDevice device, const std::string &cacheDirectory)
      : device(std::move(device)), cache(cacheDirectory, "nestor-cuda-1") {}

  std::string description() const override { return device.name() + " (" + device.arch() + ")"; }

  llvm::Expected<uint64_t> allocate(size_t bytes) override {
    // Rounded to 256 bytes so that every allocation keeps the alignment vector loads need.
    auto buffer = device.allocate((bytes + 255) / 256 * 256);
    if (!buffer)
      return buffer.takeError();
    if (llvm::Error e = buffer->fill(0))
      return e;
    uint64_t a = buffer->address();
    starts[a] = buffers.size();
    buffers.push_back(std::move(*buffer));
    return a;
  }

  llvm::Error upload(uint64_t dst, const void *src, size_t bytes) override {
    auto [buffer, offset] = find(dst, bytes);
    if (!buffer)
      return outside(dst, bytes);
    return buffer->copyFromHost(src, bytes, offset);
  }

  llvm::Error download(void *dst, uint64_t src, size_t bytes) override {
    auto [buffer, offset] = find(src, bytes);
    if (!buffer)
      return outside(src, bytes);
    return buffer->copyToHost(dst, bytes, offset);
  }

  llvm::Error copy(uint64_t dst, uint64_t src, size_t bytes) override {
    auto [to, toOffset] = find(dst, bytes);
    auto [from, fromOffset] = find(src, bytes);
    if (!to || !from)
      return outside(to ? src : dst, bytes);
    return to->copyFrom(*from, bytes, fromOffset, toOffset);
  }

  llvm::Error fill(uint64_t dst, uint8_t value, size_t bytes) override {
    auto [buffer, offset] = find(dst, bytes);
    if (!buffer)
      return outside(dst, bytes);
    return buffer->fill(value, bytes, offset);
  }

  llvm::Expected<size_t> load(mlir::Operation *op, const cuda::KernelSource &kernel) override {
    cuda::CompileRequest request;
    request.name = kernel.fileName();
    request.source = kernel.source;
    request.headers = cuda::deviceHeaders();
    request.arch = device.arch();
    request.output = cuda::Output::CUBIN;
    auto image = cache.getOrCompile(request);
    if (!image)
      return image.takeError();
    auto module = device.loadModule(**image);
    if (!module)
      return module.takeError();
    Loaded entry;
    for (const cuda::Launch &l : kernel.launches) {
      auto fn = module->function(l.entry);
      if (!fn)
        return fn.takeError();
      entry.kernels.push_back(*fn);
    }
    entry.launches = kernel.launches;
    entry.module = std::move(*module);
    modules.push_back(std::move(entry));
    return modules.size() - 1;
  }

  llvm::Error launch(size_t handle, size_t index, llvm::ArrayRef<void *> params) override {
    const Loaded &m = modules.at(handle);
    const cuda::Launch &l = m.launches.at(index);
    cuda::LaunchDim3 grid{unsigned(l.grid.x), unsigned(l.grid.y), unsigned(l.grid.z)};
    cuda::LaunchDim3 block{unsigned(l.block.x), unsigned(l.block.y), unsigned(l.block.z)};
    return device.launch(m.kernels.at(index), grid, block, unsigned(l.sharedBytes), nullptr,
                         params);
  }

  llvm::Error synchronize() override { return device.synchronize(); }

private:
  struct Loaded {
    cuda::Module module;
    std::vector<cuda::Kernel> kernels;
    std::vector<cuda::Launch> launches;
  };

  /// The allocation holding [address, address + bytes) and the offset into it.
  std::pair<cuda::DeviceBuffer *, size_t> find(uint64_t address, size_t bytes) {
    auto it = starts.upper_bound(address);
    if (it == starts.begin())
      return {nullptr, 0};
    --it;
    cuda::DeviceBuffer &b = buffers[it->second];
    size_t offset = address - it->first;
    if (offset + bytes > b.size())
      return {nullptr, 0};
    return {&b, offset};
  }

  static llvm::Error outside(uint64_t address, size_t bytes) {
    return llvm::createStringError("device range 0x%llx + %zu bytes is outside every allocation",
                                   static_cast<unsigned long long>(address), bytes);
  }

  cuda::CudaDevice device;
  cuda::KernelCache cache;
  std::vector<cuda::DeviceBuffer> buffers;
  std::map<uint64_t, size_t> starts;
  std::vector<Loaded> modules;
};

} // namespace

llvm::Expected<std::unique_ptr<KernelDevice>>
nestor::runtime::openCudaKernelDevice(int ordinal, const std::string &cacheDirectory) {
  auto device = cuda::openDevice(ordinal);
  if (!device)
    return device.takeError();
  return std::make_unique<CudaKernelDevice>(std::move(*device), cacheDirectory);
}
