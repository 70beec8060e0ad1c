//===- HostDevice.cpp - A KernelDevice on the host emulation ---------------===//
#include "test/unit/cuda/HostDevice.h"

#include <algorithm>
#include <cstring>
#include <thread>

using namespace nestor::cuda::test;

llvm::Expected<uint64_t> HostDevice::allocate(size_t bytes) {
  size_t rounded = (bytes + 255) / 256 * 256;
  // 256-byte aligned, as cuMemAlloc's are.
  auto *raw = new (std::align_val_t(256)) unsigned char[rounded];
  std::memset(raw, 0, rounded);
  blocks.emplace_back(raw);
  uint64_t a = reinterpret_cast<uint64_t>(raw);
  sizes[a] = rounded;
  return a;
}

llvm::Error HostDevice::check(uint64_t address, size_t bytes) const {
  auto it = sizes.upper_bound(address);
  if (it != sizes.begin()) {
    --it;
    if (address - it->first + bytes <= it->second)
      return llvm::Error::success();
  }
  return llvm::createStringError("host device: 0x%llx + %zu bytes is outside every allocation",
                                 static_cast<unsigned long long>(address), bytes);
}

llvm::Error HostDevice::upload(uint64_t dst, const void *src, size_t bytes) {
  if (llvm::Error e = check(dst, bytes))
    return e;
  std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return llvm::Error::success();
}

llvm::Error HostDevice::download(void *dst, uint64_t src, size_t bytes) {
  if (llvm::Error e = check(src, bytes))
    return e;
  std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
  return llvm::Error::success();
}

llvm::Error HostDevice::copy(uint64_t dst, uint64_t src, size_t bytes) {
  if (llvm::Error e = check(dst, bytes))
    return e;
  if (llvm::Error e = check(src, bytes))
    return e;
  std::memmove(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), bytes);
  return llvm::Error::success();
}

llvm::Error HostDevice::fill(uint64_t dst, uint8_t value, size_t bytes) {
  if (llvm::Error e = check(dst, bytes))
    return e;
  std::memset(reinterpret_cast<void *>(dst), value, bytes);
  return llvm::Error::success();
}

llvm::Expected<size_t> HostDevice::load(mlir::Operation *op, const KernelSource &kernel) {
  auto pending = std::make_unique<Pending>();
  pending->compiling = std::async(std::launch::async, [this, op, kernel] {
    // At most one compiler per core at a time.
    {
      std::unique_lock<std::mutex> lock(compileMutex);
      compileSlots.wait(
          lock, [&] { return compilers < std::max(1u, std::thread::hardware_concurrency()); });
      ++compilers;
    }
    auto m = HostModule::compile(op, kernel);
    {
      std::lock_guard<std::mutex> lock(compileMutex);
      --compilers;
    }
    compileSlots.notify_one();
    return m;
  });
  modules.push_back(std::move(pending));
  return modules.size() - 1;
}

llvm::Expected<HostModule *> HostDevice::ready(size_t handle) {
  if (handle >= modules.size())
    return llvm::createStringError("host device: no kernel %zu", handle);
  Pending &p = *modules[handle];
  if (!p.module) {
    auto m = p.compiling.get();
    if (!m)
      return m.takeError();
    p.module = std::move(*m);
  }
  return p.module.get();
}

llvm::Error HostDevice::launch(size_t handle, size_t index, llvm::ArrayRef<void *> params) {
  auto m = ready(handle);
  if (!m)
    return m.takeError();
  (*m)->launch(index, params);
  ++launchCount;
  return llvm::Error::success();
}
