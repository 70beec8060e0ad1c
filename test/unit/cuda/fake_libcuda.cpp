//===- fake_libcuda.cpp - A CUDA driver library for tests, without a GPU ---===//
//
// Built as libcuda.so.1 in a directory of its own; a program run with that directory on
// LD_LIBRARY_PATH opens it where it would open the NVIDIA driver. It implements the driver
// calls of a `nestor build` executable's GPU path with the prototypes of the toolkit's cuda.h,
// so a program that called one with the wrong arguments, or in the wrong order, fails here as
// it would on a GPU:
//   - device memory is host memory, and every copy and memset must lie inside one live
//     allocation (CUDA_ERROR_ILLEGAL_ADDRESS otherwise); frees must match allocations;
//   - the module image must be PTX text, and every function asked for must be an `.entry` of
//     it;
//   - a launch runs the kernel of that name from $NESTOR_FAKE_CUDA_KERNELS, a shared library
//     built from the program's own source under the CUDA host emulation
//     (nestor_emulated_launch); without it, loading the module fails with a JIT log, like a
//     driver too old for the PTX.
// It is one device, "Nestor fake GPU", compute capability 9.0, 132 SMs, 4 GiB. The rest of
// what lib/codegen/cuda/CudaDriver.cpp resolves (streams, events, device-to-device copies, CUBIN
// modules) is there too, so `nestor devices` lists it; kernels run synchronously, so streams
// and events only check their handles.
//
//===----------------------------------------------------------------------===//
#include <cuda.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <memory>
#include <string>
#include <time.h>

#define FAKE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

struct Module {
  std::string ptx;
  void *kernels = nullptr;
  int (*launch)(const char *, unsigned, unsigned, void **) = nullptr;
};

struct Function {
  Module *module;
  std::string name;
};

int contextTag;
bool initialised = false;
std::map<CUdeviceptr, size_t> allocations;
std::map<std::string, std::unique_ptr<Function>> functions;

/// Whether [p, p + bytes) lies inside one live allocation.
bool inside(CUdeviceptr p, size_t bytes) {
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin())
    return false;
  --it;
  return p >= it->first && p + bytes <= it->first + it->second;
}

CUresult complain(CUresult rc, const char *what) {
  std::fprintf(stderr, "fake libcuda: %s\n", what);
  return rc;
}

} // namespace

FAKE_EXPORT CUresult CUDAAPI cuInit(unsigned int flags) {
  if (flags != 0)
    return complain(CUDA_ERROR_INVALID_VALUE, "cuInit flags must be 0");
  initialised = true;
  return CUDA_SUCCESS;
}

/// NVRTC opens libcuda.so.1 too, for the driver's private export tables: there are none here,
/// which it takes as an older driver.
FAKE_EXPORT CUresult CUDAAPI cuGetExportTable(const void **table, const CUuuid *) {
  *table = nullptr;
  return CUDA_ERROR_NOT_SUPPORTED;
}

FAKE_EXPORT CUresult CUDAAPI cuDeviceGetCount(int *count) {
  if (!initialised)
    return CUDA_ERROR_NOT_INITIALIZED;
  *count = 1;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuDeviceGet(CUdevice *device, int ordinal) {
  if (ordinal != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice device) {
  if (device != 0 || len <= 0)
    return CUDA_ERROR_INVALID_VALUE;
  std::snprintf(name, size_t(len), "Nestor fake GPU");
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuDeviceGetAttribute(int *value, CUdevice_attribute attribute,
                                                  CUdevice device) {
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *value = attribute == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 9
           : attribute == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT   ? 132
                                                                     : 0;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuDeviceTotalMem(size_t *bytes, CUdevice device) {
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *bytes = size_t(4) << 30;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuCtxSynchronize() { return CUDA_SUCCESS; }

FAKE_EXPORT CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *context, CUdevice device) {
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *context = reinterpret_cast<CUcontext>(&contextTag);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuDevicePrimaryCtxRelease(CUdevice device) {
  return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

FAKE_EXPORT CUresult CUDAAPI cuCtxSetCurrent(CUcontext context) {
  if (context != reinterpret_cast<CUcontext>(&contextTag))
    return complain(CUDA_ERROR_INVALID_CONTEXT, "cuCtxSetCurrent: not the primary context");
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuModuleLoadDataEx(CUmodule *module, const void *image,
                                                unsigned int numOptions, CUjit_option *options,
                                                void **optionValues) {
  const char *text = static_cast<const char *>(image);
  bool elf = text && std::memcmp(text,
                                 "\x7f"
                                 "ELF",
                                 4) == 0; // a CUBIN
  if (!text || (!elf && (!std::strstr(text, ".version") || !std::strstr(text, ".entry"))))
    return complain(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadDataEx: the image is not PTX");
  char *log = nullptr;
  size_t logSize = 0;
  for (unsigned i = 0; i < numOptions; ++i) {
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER)
      log = static_cast<char *>(optionValues[i]);
    else if (options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
      logSize = reinterpret_cast<uintptr_t>(optionValues[i]);
  }
  auto m = std::make_unique<Module>();
  m->ptx = elf ? std::string() : std::string(text);
  const char *path = std::getenv("NESTOR_FAKE_CUDA_KERNELS");
  std::string why = "NESTOR_FAKE_CUDA_KERNELS names no kernel library";
  if (path && *path) {
    m->kernels = ::dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!m->kernels)
      why = ::dlerror();
    else if (!(m->launch = reinterpret_cast<int (*)(const char *, unsigned, unsigned, void **)>(
                   ::dlsym(m->kernels, "nestor_emulated_launch"))))
      why = std::string(path) + " has no nestor_emulated_launch";
  }
  if (!m->launch) {
    if (log && logSize > 0)
      std::snprintf(log, logSize, "fake JIT: no kernels for this PTX: %s", why.c_str());
    return CUDA_ERROR_INVALID_PTX;
  }
  *module = reinterpret_cast<CUmodule>(m.release());
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuModuleLoadData(CUmodule *module, const void *image) {
  return cuModuleLoadDataEx(module, image, 0, nullptr, nullptr);
}

FAKE_EXPORT CUresult CUDAAPI cuModuleUnload(CUmodule module) {
  delete reinterpret_cast<Module *>(module);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuModuleGetFunction(CUfunction *function, CUmodule module,
                                                 const char *name) {
  auto *m = reinterpret_cast<Module *>(module);
  if (!m || m->ptx.find(std::string(".entry ") + name + "(") == std::string::npos)
    return CUDA_ERROR_NOT_FOUND;
  std::unique_ptr<Function> &f = functions[name];
  if (!f)
    f.reset(new Function{m, name});
  *function = reinterpret_cast<CUfunction>(f.get());
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuLaunchKernel(CUfunction function, unsigned int gridDimX,
                                            unsigned int gridDimY, unsigned int gridDimZ,
                                            unsigned int blockDimX, unsigned int blockDimY,
                                            unsigned int blockDimZ, unsigned int sharedMemBytes,
                                            CUstream stream, void **kernelParams, void **extra) {
  auto *f = reinterpret_cast<Function *>(function);
  if (!f || gridDimX == 0 || blockDimX == 0 || blockDimX > 1024)
    return CUDA_ERROR_INVALID_VALUE;
  (void)stream; // launches run at once, in order
  if (gridDimY != 1 || gridDimZ != 1 || blockDimY != 1 || blockDimZ != 1 || sharedMemBytes != 0 ||
      extra != nullptr || kernelParams == nullptr)
    return complain(CUDA_ERROR_NOT_SUPPORTED,
                    "cuLaunchKernel: only 1-D launches with "
                    "kernelParams and no dynamic shared memory are faked");
  if (f->module->launch(f->name.c_str(), gridDimX, blockDimX, kernelParams) != 0)
    return CUDA_ERROR_NOT_FOUND;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuMemAlloc(CUdeviceptr *pointer, size_t bytes) {
  if (bytes == 0)
    return CUDA_ERROR_INVALID_VALUE;
  void *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!p)
    return CUDA_ERROR_OUT_OF_MEMORY;
  *pointer = reinterpret_cast<CUdeviceptr>(p);
  allocations[*pointer] = bytes;
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuMemFree(CUdeviceptr pointer) {
  auto it = allocations.find(pointer);
  if (it == allocations.end())
    return complain(CUDA_ERROR_INVALID_VALUE, "cuMemFree of no allocation");
  std::free(reinterpret_cast<void *>(pointer));
  allocations.erase(it);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t bytes) {
  if (!inside(dst, bytes))
    return complain(CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemcpyHtoD outside an allocation");
  std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t bytes) {
  if (!inside(src, bytes))
    return complain(CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemcpyDtoH outside an allocation");
  std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
  if (!inside(dst, bytes) || !inside(src, bytes))
    return complain(CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemcpyDtoD outside an allocation");
  std::memmove(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), bytes);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuStreamCreate(CUstream *stream, unsigned int) {
  *stream = reinterpret_cast<CUstream>(new int(0));
  return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult CUDAAPI cuStreamDestroy(CUstream stream) {
  delete reinterpret_cast<int *>(stream);
  return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult CUDAAPI cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }

/// An event is the time it was recorded.
FAKE_EXPORT CUresult CUDAAPI cuEventCreate(CUevent *event, unsigned int) {
  *event = reinterpret_cast<CUevent>(new double(0));
  return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult CUDAAPI cuEventRecord(CUevent event, CUstream) {
  timespec t;
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  *reinterpret_cast<double *>(event) = double(t.tv_sec) * 1e3 + double(t.tv_nsec) * 1e-6;
  return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult CUDAAPI cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
FAKE_EXPORT CUresult CUDAAPI cuEventElapsedTime(float *ms, CUevent start, CUevent end) {
  *ms = float(*reinterpret_cast<double *>(end) - *reinterpret_cast<double *>(start));
  return CUDA_SUCCESS;
}
FAKE_EXPORT CUresult CUDAAPI cuEventDestroy(CUevent event) {
  delete reinterpret_cast<double *>(event);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t count) {
  if (!inside(dst, count))
    return complain(CUDA_ERROR_ILLEGAL_ADDRESS, "cuMemsetD8 outside an allocation");
  std::memset(reinterpret_cast<void *>(dst), value, count);
  return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult CUDAAPI cuGetErrorName(CUresult error, const char **name) {
  switch (error) {
  case CUDA_SUCCESS:
    *name = "CUDA_SUCCESS";
    return CUDA_SUCCESS;
  case CUDA_ERROR_INVALID_PTX:
    *name = "CUDA_ERROR_INVALID_PTX";
    return CUDA_SUCCESS;
  case CUDA_ERROR_ILLEGAL_ADDRESS:
    *name = "CUDA_ERROR_ILLEGAL_ADDRESS";
    return CUDA_SUCCESS;
  case CUDA_ERROR_NOT_FOUND:
    *name = "CUDA_ERROR_NOT_FOUND";
    return CUDA_SUCCESS;
  default:
    *name = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
  }
}

FAKE_EXPORT CUresult CUDAAPI cuGetErrorString(CUresult error, const char **text) {
  *text = error == CUDA_ERROR_INVALID_PTX ? "a PTX JIT compilation failed" : nullptr;
  return *text ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
