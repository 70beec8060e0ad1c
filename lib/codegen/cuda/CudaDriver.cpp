//===- CudaDriver.cpp - The CUDA driver API, opened at run time -----------===//
//
// The function types below restate the driver's C ABI for the entry points Nestor uses (CUresult
// and CUdevice are int, CUdeviceptr is a 64-bit integer, the handles are pointers to opaque
// structs). Versioned entry points are resolved by their versioned names (cuMemAlloc_v2, ...), the
// names cuda.h maps the plain ones to; those are the ABI every supported driver exports.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/CudaDriver.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

#include <dlfcn.h>

#include <mutex>
#include <utility>

using namespace nestor::cuda;

namespace {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = CUctx_st *;
using CUmodule = CUmod_st *;
using CUfunction = CUfunc_st *;
using CUstream = CUstream_st *;
using CUevent = CUevent_st *;

constexpr CUresult kSuccess = 0;
constexpr int kAttributeMultiprocessorCount = 16;
constexpr int kAttributeComputeCapabilityMajor = 75;
constexpr int kAttributeComputeCapabilityMinor = 76;
constexpr unsigned kStreamDefault = 0;
constexpr unsigned kEventDefault = 0;

/// The entry points, resolved once per library path and never unloaded (handles and their
/// destructors may run until the process exits).
struct DriverApi {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuModuleLoadData)(CUmodule *, const void *);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void **, void **);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*cuMemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
  CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, size_t);
  CUresult (*cuStreamCreate)(CUstream *, unsigned);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  CUresult (*cuEventCreate)(CUevent *, unsigned);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
  CUresult (*cuEventDestroy)(CUevent);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);
};

/// Names for the results openDevice reports, for drivers (the stub library among them) whose
/// cuGetErrorName does not answer before cuInit succeeds.
const char *knownResultName(CUresult result) {
  switch (result) {
  case 3:
    return "CUDA_ERROR_NOT_INITIALIZED";
  case 4:
    return "CUDA_ERROR_DEINITIALIZED";
  case 34:
    return "CUDA_ERROR_STUB_LIBRARY";
  case 35:
    return "CUDA_ERROR_INSUFFICIENT_DRIVER";
  case 100:
    return "CUDA_ERROR_NO_DEVICE";
  case 101:
    return "CUDA_ERROR_INVALID_DEVICE";
  case 803:
    return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
  case 804:
    return "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE";
  case 999:
    return "CUDA_ERROR_UNKNOWN";
  default:
    return nullptr;
  }
}

/// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
std::string describe(const DriverApi &api, CUresult result) {
  const char *name = nullptr;
  const char *text = nullptr;
  if (api.cuGetErrorName(result, &name) != kSuccess || !name)
    name = knownResultName(result);
  if (api.cuGetErrorString(result, &text) != kSuccess)
    text = nullptr;
  std::string out = name ? name : "CUresult " + std::to_string(result);
  if (text && *text)
    out += std::string(" (") + text + ")";
  return out;
}

llvm::Error driverError(const llvm::Twine &message) {
  return llvm::createStringError(std::make_error_code(std::errc::io_error), message);
}

llvm::Error check(const DriverApi &api, CUresult result, const llvm::Twine &call) {
  if (result == kSuccess)
    return llvm::Error::success();
  return driverError(call + " failed: " + describe(api, result));
}

/// The resolved API for `path`, or why it could not be loaded.
llvm::Expected<const DriverApi *> loadDriver(llvm::StringRef path) {
  static std::mutex mutex;
  static llvm::StringMap<std::unique_ptr<DriverApi>> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = loaded.find(path); it != loaded.end())
    return it->second.get();

  void *library = ::dlopen(path.str().c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char *why = ::dlerror();
    return driverError("no CUDA device: the CUDA driver library " + path + " was not found (" +
                       (why ? why : "dlopen failed") + ")");
  }
  auto api = std::make_unique<DriverApi>();
  std::string missing;
  auto resolve = [&](auto &slot, std::initializer_list<const char *> names) {
    for (const char *name : names)
      if (void *symbol = ::dlsym(library, name)) {
        slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(symbol);
        return;
      }
    if (missing.empty())
      missing = *names.begin();
  };
  resolve(api->cuInit, {"cuInit"});
  resolve(api->cuDeviceGetCount, {"cuDeviceGetCount"});
  resolve(api->cuDeviceGet, {"cuDeviceGet"});
  resolve(api->cuDeviceGetAttribute, {"cuDeviceGetAttribute"});
  resolve(api->cuDeviceGetName, {"cuDeviceGetName"});
  resolve(api->cuDeviceTotalMem, {"cuDeviceTotalMem_v2"});
  resolve(api->cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"});
  resolve(api->cuDevicePrimaryCtxRelease, {"cuDevicePrimaryCtxRelease_v2"});
  resolve(api->cuCtxSetCurrent, {"cuCtxSetCurrent"});
  resolve(api->cuCtxSynchronize, {"cuCtxSynchronize"});
  resolve(api->cuModuleLoadData, {"cuModuleLoadData"});
  resolve(api->cuModuleUnload, {"cuModuleUnload"});
  resolve(api->cuModuleGetFunction, {"cuModuleGetFunction"});
  resolve(api->cuLaunchKernel, {"cuLaunchKernel"});
  resolve(api->cuMemAlloc, {"cuMemAlloc_v2"});
  resolve(api->cuMemFree, {"cuMemFree_v2"});
  resolve(api->cuMemcpyHtoD, {"cuMemcpyHtoD_v2"});
  resolve(api->cuMemcpyDtoH, {"cuMemcpyDtoH_v2"});
  resolve(api->cuMemcpyDtoD, {"cuMemcpyDtoD_v2"});
  resolve(api->cuMemsetD8, {"cuMemsetD8_v2"});
  resolve(api->cuStreamCreate, {"cuStreamCreate"});
  resolve(api->cuStreamDestroy, {"cuStreamDestroy_v2"});
  resolve(api->cuStreamSynchronize, {"cuStreamSynchronize"});
  resolve(api->cuEventCreate, {"cuEventCreate"});
  resolve(api->cuEventRecord, {"cuEventRecord"});
  resolve(api->cuEventSynchronize, {"cuEventSynchronize"});
  // CUDA 12.8 added the _v2 (same signature); older drivers have only the original.
  resolve(api->cuEventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"});
  resolve(api->cuEventDestroy, {"cuEventDestroy_v2"});
  resolve(api->cuGetErrorName, {"cuGetErrorName"});
  resolve(api->cuGetErrorString, {"cuGetErrorString"});
  if (!missing.empty()) {
    ::dlclose(library);
    return driverError("no CUDA device: the CUDA driver library " + path + " lacks " + missing +
                       " (driver too old?)");
  }
  return (loaded[path] = std::move(api)).get();
}

} // namespace

namespace nestor::cuda::detail {

/// A retained primary context; released when the last handle that uses it is gone.
class Context {
public:
  Context(const DriverApi &api, CUdevice device, CUcontext context)
      : api(api), device(device), context(context) {}
  Context(const Context &) = delete;
  Context &operator=(const Context &) = delete;
  ~Context() { api.cuDevicePrimaryCtxRelease(device); }

  const DriverApi &driver() const { return api; }
  llvm::Error makeCurrent() const {
    return check(api, api.cuCtxSetCurrent(context), "cuCtxSetCurrent");
  }
  /// For destructors, which have no way to report an error.
  void makeCurrentQuietly() const { api.cuCtxSetCurrent(context); }

private:
  const DriverApi &api;
  CUdevice device;
  CUcontext context;
};

} // namespace nestor::cuda::detail

//===----------------------------------------------------------------------===//
// Handles
//===----------------------------------------------------------------------===//

DeviceBuffer::DeviceBuffer(DeviceBuffer &&other) noexcept
    : context(std::move(other.context)), pointer(std::exchange(other.pointer, 0)),
      bytes(std::exchange(other.bytes, 0)) {}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    release();
    context = std::move(other.context);
    pointer = std::exchange(other.pointer, 0);
    bytes = std::exchange(other.bytes, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { release(); }

void DeviceBuffer::release() {
  if (context && pointer) {
    context->makeCurrentQuietly();
    context->driver().cuMemFree(pointer);
  }
  pointer = 0;
  bytes = 0;
  context.reset();
}

static llvm::Error checkRange(llvm::StringRef what, size_t offset, size_t count, size_t size) {
  if (offset <= size && count <= size - offset)
    return llvm::Error::success();
  return driverError(what + ": bytes [" + llvm::Twine(offset) + ", " + llvm::Twine(offset + count) +
                     ") outside a buffer of " + llvm::Twine(size) + " bytes");
}

llvm::Error DeviceBuffer::copyFromHost(const void *data, size_t count, size_t offset) {
  if (llvm::Error error = checkRange("DeviceBuffer::copyFromHost", offset, count, bytes))
    return error;
  if (count == 0)
    return llvm::Error::success();
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuMemcpyHtoD(pointer + offset, data, count), "cuMemcpyHtoD_v2");
}

llvm::Error DeviceBuffer::copyToHost(void *data, size_t count, size_t offset) const {
  if (llvm::Error error = checkRange("DeviceBuffer::copyToHost", offset, count, bytes))
    return error;
  if (count == 0)
    return llvm::Error::success();
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuMemcpyDtoH(data, pointer + offset, count), "cuMemcpyDtoH_v2");
}

llvm::Error DeviceBuffer::copyFrom(const DeviceBuffer &source, size_t count, size_t sourceOffset,
                                   size_t offset) {
  if (llvm::Error error =
          checkRange("DeviceBuffer::copyFrom (source)", sourceOffset, count, source.bytes))
    return error;
  if (llvm::Error error = checkRange("DeviceBuffer::copyFrom (target)", offset, count, bytes))
    return error;
  if (count == 0)
    return llvm::Error::success();
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuMemcpyDtoD(pointer + offset, source.pointer + sourceOffset, count),
               "cuMemcpyDtoD_v2");
}

llvm::Error DeviceBuffer::fill(uint8_t value) { return fill(value, bytes, 0); }

llvm::Error DeviceBuffer::fill(uint8_t value, size_t count, size_t offset) {
  if (llvm::Error error = checkRange("DeviceBuffer::fill", offset, count, bytes))
    return error;
  if (count == 0)
    return llvm::Error::success();
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuMemsetD8(pointer + offset, value, count), "cuMemsetD8_v2");
}

Stream::Stream(Stream &&other) noexcept
    : context(std::move(other.context)), stream(std::exchange(other.stream, nullptr)) {}

Stream &Stream::operator=(Stream &&other) noexcept {
  if (this != &other) {
    release();
    context = std::move(other.context);
    stream = std::exchange(other.stream, nullptr);
  }
  return *this;
}

Stream::~Stream() { release(); }

void Stream::release() {
  if (context && stream) {
    context->makeCurrentQuietly();
    context->driver().cuStreamDestroy(stream);
  }
  stream = nullptr;
  context.reset();
}

llvm::Error Stream::synchronize() const {
  if (!context)
    return driverError("Stream::synchronize: an empty stream");
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuStreamSynchronize(stream), "cuStreamSynchronize");
}

Event::Event(Event &&other) noexcept
    : context(std::move(other.context)), event(std::exchange(other.event, nullptr)) {}

Event &Event::operator=(Event &&other) noexcept {
  if (this != &other) {
    release();
    context = std::move(other.context);
    event = std::exchange(other.event, nullptr);
  }
  return *this;
}

Event::~Event() { release(); }

void Event::release() {
  if (context && event) {
    context->makeCurrentQuietly();
    context->driver().cuEventDestroy(event);
  }
  event = nullptr;
  context.reset();
}

llvm::Error Event::record(const Stream *stream) {
  if (!context)
    return driverError("Event::record: an empty event");
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuEventRecord(event, stream ? stream->handle() : nullptr), "cuEventRecord");
}

llvm::Error Event::synchronize() const {
  if (!context)
    return driverError("Event::synchronize: an empty event");
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuEventSynchronize(event), "cuEventSynchronize");
}

llvm::Expected<float> nestor::cuda::elapsedMilliseconds(const Event &start, const Event &end) {
  if (!start.context || !end.context)
    return driverError("elapsedMilliseconds: an empty event");
  if (llvm::Error error = start.context->makeCurrent())
    return error;
  const DriverApi &api = start.context->driver();
  float milliseconds = 0;
  if (llvm::Error error = check(api, api.cuEventElapsedTime(&milliseconds, start.event, end.event),
                                "cuEventElapsedTime"))
    return error;
  return milliseconds;
}

Module::Module(Module &&other) noexcept
    : context(std::move(other.context)), module(std::exchange(other.module, nullptr)) {}

Module &Module::operator=(Module &&other) noexcept {
  if (this != &other) {
    release();
    context = std::move(other.context);
    module = std::exchange(other.module, nullptr);
  }
  return *this;
}

Module::~Module() { release(); }

void Module::release() {
  if (context && module) {
    context->makeCurrentQuietly();
    context->driver().cuModuleUnload(module);
  }
  module = nullptr;
  context.reset();
}

llvm::Expected<Kernel> Module::function(llvm::StringRef name) const {
  if (!context)
    return driverError("Module::function: an empty module");
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  Kernel kernel;
  kernel.entryName = name.str();
  if (llvm::Error error =
          check(api, api.cuModuleGetFunction(&kernel.function, module, kernel.entryName.c_str()),
                "cuModuleGetFunction(" + kernel.entryName + ")"))
    return error;
  return kernel;
}

//===----------------------------------------------------------------------===//
// The device
//===----------------------------------------------------------------------===//

llvm::Expected<DeviceBuffer> CudaDevice::allocate(size_t bytes) const {
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  DeviceBuffer buffer;
  if (bytes > 0) {
    CUdeviceptr pointer = 0;
    if (llvm::Error error = check(api, api.cuMemAlloc(&pointer, bytes),
                                  "cuMemAlloc_v2(" + llvm::Twine(bytes) + " bytes)"))
      return error;
    buffer.pointer = pointer;
  }
  buffer.context = context;
  buffer.bytes = bytes;
  return buffer;
}

llvm::Expected<Stream> CudaDevice::createStream() const {
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  Stream stream;
  if (llvm::Error error =
          check(api, api.cuStreamCreate(&stream.stream, kStreamDefault), "cuStreamCreate"))
    return error;
  stream.context = context;
  return stream;
}

llvm::Expected<Event> CudaDevice::createEvent() const {
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  Event event;
  if (llvm::Error error =
          check(api, api.cuEventCreate(&event.event, kEventDefault), "cuEventCreate"))
    return error;
  event.context = context;
  return event;
}

llvm::Expected<Module> CudaDevice::loadModule(llvm::StringRef image) const {
  if (image.empty())
    return driverError("CudaDevice::loadModule: an empty image");
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  // PTX must be NUL-terminated; a CUBIN (ELF) carries its own size.
  std::string terminated;
  const void *data = image.data();
  if (!image.starts_with("\x7f"
                         "ELF") &&
      image.back() != '\0') {
    terminated = image.str();
    data = terminated.c_str();
  }
  Module module;
  if (llvm::Error error =
          check(api, api.cuModuleLoadData(&module.module, data), "cuModuleLoadData"))
    return error;
  module.context = context;
  return module;
}

llvm::Expected<Module> CudaDevice::loadModule(const CompiledModule &compiled) const {
  if (llvm::Error error = context->makeCurrent())
    return error;
  if (compiled.image.empty())
    return driverError("CudaDevice::loadModule: an empty " + outputName(compiled.kind) +
                       " image for " + compiled.arch);
  const DriverApi &api = context->driver();
  Module module;
  // std::string keeps a NUL after its bytes, so a PTX image needs no copy.
  if (llvm::Error error =
          check(api, api.cuModuleLoadData(&module.module, compiled.image.c_str()),
                "cuModuleLoadData(" + outputName(compiled.kind) + " for " + compiled.arch + ")"))
    return error;
  module.context = context;
  return module;
}

llvm::Error CudaDevice::launch(const Kernel &kernel, LaunchDim3 grid, LaunchDim3 block,
                               unsigned sharedBytes, const Stream *stream,
                               llvm::ArrayRef<void *> args) const {
  if (!kernel.handle())
    return driverError("CudaDevice::launch: an empty kernel handle");
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  // The driver reads kernelParams but takes them as void **.
  std::vector<void *> params(args.begin(), args.end());
  std::string call;
  llvm::raw_string_ostream os(call);
  os << "cuLaunchKernel(" << kernel.name() << ", grid " << grid.x << "x" << grid.y << "x" << grid.z
     << ", block " << block.x << "x" << block.y << "x" << block.z << ", " << sharedBytes
     << " shared bytes)";
  return check(api,
               api.cuLaunchKernel(kernel.handle(), grid.x, grid.y, grid.z, block.x, block.y,
                                  block.z, sharedBytes, stream ? stream->handle() : nullptr,
                                  params.empty() ? nullptr : params.data(), nullptr),
               call);
}

llvm::Error CudaDevice::synchronize() const {
  if (llvm::Error error = context->makeCurrent())
    return error;
  const DriverApi &api = context->driver();
  return check(api, api.cuCtxSynchronize(), "cuCtxSynchronize");
}

llvm::Expected<CudaDevice> nestor::cuda::openDevice(int ordinal, llvm::StringRef driverLibrary) {
  llvm::Expected<const DriverApi *> loaded = loadDriver(driverLibrary);
  if (!loaded)
    return loaded.takeError();
  const DriverApi &api = **loaded;

  if (CUresult result = api.cuInit(0); result != kSuccess)
    return driverError("no CUDA device: cuInit failed with " + describe(api, result));
  int count = 0;
  if (CUresult result = api.cuDeviceGetCount(&count); result != kSuccess)
    return driverError("no CUDA device: cuDeviceGetCount failed with " + describe(api, result));
  if (count == 0)
    return driverError("no CUDA device: the CUDA driver reports zero devices");
  if (ordinal < 0 || ordinal >= count)
    return driverError("no CUDA device: ordinal " + llvm::Twine(ordinal) +
                       " was asked for, but the CUDA driver reports " + llvm::Twine(count) +
                       " device(s)");

  CUdevice device = 0;
  if (llvm::Error error = check(api, api.cuDeviceGet(&device, ordinal), "cuDeviceGet"))
    return error;
  CudaDevice result;
  result.deviceOrdinal = ordinal;
  int major = 0, minor = 0;
  if (llvm::Error error =
          check(api, api.cuDeviceGetAttribute(&major, kAttributeComputeCapabilityMajor, device),
                "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)"))
    return error;
  if (llvm::Error error =
          check(api, api.cuDeviceGetAttribute(&minor, kAttributeComputeCapabilityMinor, device),
                "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)"))
    return error;
  if (llvm::Error error = check(
          api,
          api.cuDeviceGetAttribute(&result.multiprocessors, kAttributeMultiprocessorCount, device),
          "cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)"))
    return error;
  result.capability = major * 10 + minor;
  result.deviceArch = "sm_" + std::to_string(major) + std::to_string(minor);
  char name[256] = {};
  if (llvm::Error error =
          check(api, api.cuDeviceGetName(name, sizeof(name) - 1, device), "cuDeviceGetName"))
    return error;
  result.deviceName = name;
  if (llvm::Error error =
          check(api, api.cuDeviceTotalMem(&result.memoryBytes, device), "cuDeviceTotalMem_v2"))
    return error;

  CUcontext context = nullptr;
  if (llvm::Error error =
          check(api, api.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain"))
    return error;
  result.context = std::make_shared<detail::Context>(api, device, context);
  if (llvm::Error error = result.context->makeCurrent())
    return error;
  return result;
}
