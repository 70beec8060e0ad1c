//===- CudaDriver.h - The CUDA driver API, opened at run time ------*- C++ -*-===//
//
// Nestor never links libcuda: a binary linked against it (even the toolkit's stub) does not
// start on a machine without the NVIDIA driver, and most machines that build and test Nestor
// have none. The driver is opened with dlopen("libcuda.so.1") when a device is first asked
// for, and openDevice() reports "no CUDA device: <why>" where there is none.
//
// Everything a caller gets is an RAII handle: a buffer, stream, event or module frees itself,
// and each holds the device's (primary) context alive until it is gone, so destruction order
// between handles and the CudaDevice does not matter. Every handle makes its context current
// on the calling thread before it calls the driver, so handles may be used from any thread.
//
// Every failing driver call becomes an llvm::Error naming the call and the CUDA error
// ("cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)").
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CUDA_CUDADRIVER_H
#define NESTOR_CODEGEN_CUDA_CUDADRIVER_H

#include "lib/codegen/cuda/Nvrtc.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

// The driver's opaque handle types, declared as cuda.h declares them (incomplete structs at
// global scope), so that a handle passes unchanged to code that does include cuda.h.
struct CUctx_st;
struct CUmod_st;
struct CUfunc_st;
struct CUstream_st;
struct CUevent_st;

namespace nestor::cuda {

namespace detail {
class Context;
} // namespace detail

struct LaunchDim3 {
  unsigned x = 1, y = 1, z = 1;
};

/// Device memory; freed when the last owner goes. Addresses are what kernels receive.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&other) noexcept;
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  ~DeviceBuffer();

  uint64_t address() const { return pointer; }
  size_t size() const { return bytes; }

  /// Host -> device into [offset, offset + count). Synchronous.
  llvm::Error copyFromHost(const void *data, size_t count, size_t offset = 0);
  /// Device -> host from [offset, offset + count). Synchronous: waits for prior work on the
  /// default stream (and on streams from createStream(), which synchronise with it).
  llvm::Error copyToHost(void *data, size_t count, size_t offset = 0) const;
  /// Device -> device: the first `count` bytes of `source` to the start of this buffer. Ordered
  /// on the default stream; asynchronous to the host.
  llvm::Error copyFrom(const DeviceBuffer &source, size_t count, size_t sourceOffset = 0,
                       size_t offset = 0);
  /// Sets every byte to `value`.
  llvm::Error fill(uint8_t value);
  /// Sets `count` bytes from `offset` to `value`.
  llvm::Error fill(uint8_t value, size_t count, size_t offset);

private:
  friend class CudaDevice;
  void release();

  std::shared_ptr<detail::Context> context;
  uint64_t pointer = 0;
  size_t bytes = 0;
};

/// A stream that synchronises with the default stream (CU_STREAM_DEFAULT), so the synchronous
/// copies above observe kernels launched on it.
class Stream {
public:
  Stream() = default;
  Stream(Stream &&other) noexcept;
  Stream &operator=(Stream &&other) noexcept;
  ~Stream();

  CUstream_st *handle() const { return stream; }
  llvm::Error synchronize() const;

private:
  friend class CudaDevice;
  void release();

  std::shared_ptr<detail::Context> context;
  CUstream_st *stream = nullptr;
};

class Event {
public:
  Event() = default;
  Event(Event &&other) noexcept;
  Event &operator=(Event &&other) noexcept;
  ~Event();

  /// Records the event on `stream` (nullptr: the default stream).
  llvm::Error record(const Stream *stream = nullptr);
  llvm::Error synchronize() const;
  CUevent_st *handle() const { return event; }

private:
  friend class CudaDevice;
  friend llvm::Expected<float> elapsedMilliseconds(const Event &start, const Event &end);
  void release();

  std::shared_ptr<detail::Context> context;
  CUevent_st *event = nullptr;
};

/// Milliseconds between two recorded, completed events.
llvm::Expected<float> elapsedMilliseconds(const Event &start, const Event &end);

/// An entry point of a loaded module. It does not own anything: it is valid while its Module is.
class Kernel {
public:
  CUfunc_st *handle() const { return function; }
  const std::string &name() const { return entryName; }

private:
  friend class Module;
  CUfunc_st *function = nullptr;
  std::string entryName;
};

/// A loaded PTX or CUBIN image; unloaded when destroyed.
class Module {
public:
  Module() = default;
  Module(Module &&other) noexcept;
  Module &operator=(Module &&other) noexcept;
  ~Module();

  /// The `extern "C"` entry point `name`.
  llvm::Expected<Kernel> function(llvm::StringRef name) const;
  CUmod_st *handle() const { return module; }

private:
  friend class CudaDevice;
  void release();

  std::shared_ptr<detail::Context> context;
  CUmod_st *module = nullptr;
};

/// The argument list of one launch: each argument is copied into storage whose address does
/// not change, and pointers() is the kernelParams array cuLaunchKernel wants. Arguments are
/// passed by value with their C++ layout, so each must match the kernel parameter's type
/// exactly (int32_t for int, float for float, a buffer for a pointer).
class KernelArgs {
public:
  KernelArgs() = default;
  KernelArgs(const KernelArgs &) = delete;
  KernelArgs &operator=(const KernelArgs &) = delete;
  KernelArgs(KernelArgs &&) = default;
  KernelArgs &operator=(KernelArgs &&) = default;

  template <typename T> KernelArgs &add(const T &value) {
    static_assert(std::is_trivially_copyable_v<T>, "kernel arguments are copied bytewise");
    static_assert(sizeof(T) <= sizeof(Slot) && alignof(T) <= alignof(Slot),
                  "kernel argument larger than a slot");
    Slot &slot = slots.emplace_back();
    std::memcpy(slot.bytes, &value, sizeof(T));
    pointerList.push_back(slot.bytes);
    return *this;
  }
  /// A buffer is passed as its device address (a T* parameter).
  KernelArgs &add(const DeviceBuffer &buffer) { return add(buffer.address()); }

  llvm::ArrayRef<void *> pointers() const { return pointerList; }

private:
  struct alignas(16) Slot {
    unsigned char bytes[16];
  };
  std::deque<Slot> slots; // a deque never moves its elements when it grows
  std::vector<void *> pointerList;
};

class CudaDevice {
public:
  int ordinal() const { return deviceOrdinal; }
  const std::string &name() const { return deviceName; }
  /// "sm_90" for compute capability 9.0: the architecture to compile kernels for.
  const std::string &arch() const { return deviceArch; }
  /// major * 10 + minor.
  int computeCapability() const { return capability; }
  int multiprocessorCount() const { return multiprocessors; }
  size_t totalMemory() const { return memoryBytes; }

  llvm::Expected<DeviceBuffer> allocate(size_t bytes) const;
  llvm::Expected<Stream> createStream() const;
  llvm::Expected<Event> createEvent() const;
  /// Loads a PTX (NUL-terminated text; the driver JIT-compiles it) or CUBIN image.
  llvm::Expected<Module> loadModule(llvm::StringRef image) const;
  llvm::Expected<Module> loadModule(const CompiledModule &module) const;

  /// Launches `kernel` on `stream` (nullptr: the default stream). Asynchronous: execution
  /// errors surface at the next synchronising call.
  llvm::Error launch(const Kernel &kernel, LaunchDim3 grid, LaunchDim3 block, unsigned sharedBytes,
                     const Stream *stream, llvm::ArrayRef<void *> args) const;
  /// Waits for all work on the device's context.
  llvm::Error synchronize() const;

private:
  friend llvm::Expected<CudaDevice> openDevice(int ordinal, llvm::StringRef driverLibrary);

  std::shared_ptr<detail::Context> context;
  int deviceOrdinal = 0;
  std::string deviceName;
  std::string deviceArch;
  int capability = 0;
  int multiprocessors = 0;
  size_t memoryBytes = 0;
};

/// The device `ordinal`, with its primary context current on the calling thread. Where there is
/// none the error message starts with "no CUDA device" and says why: the driver library is not
/// there, cuInit failed (with the CUDA error's name), the driver reports no devices, or the
/// ordinal is out of range. `driverLibrary` is for tests (e.g. the toolkit's stub library).
llvm::Expected<CudaDevice> openDevice(int ordinal = 0,
                                      llvm::StringRef driverLibrary = "libcuda.so.1");

} // namespace nestor::cuda

#endif // NESTOR_CODEGEN_CUDA_CUDADRIVER_H
