//===- nestor_device.cuh - Device helpers for generated CUDA kernels -*- CUDA -*-===//
//
// Every kernel the CUDA backend emits includes this header. It is embedded in the compiler at
// build time and handed to NVRTC as an in-memory header, so it may include nothing that NVRTC
// does not have built in: no <cuda_fp16.h>/<cuda_bf16.h> (not built into NVRTC 13), no C++
// standard headers. bf16 values are therefore raw 16-bit patterns with explicit conversions.
//
// Conventions:
// - Block reductions are for 1-D blocks whose size is a multiple of 32 (at most 1024); every
//   thread of the block must call them (they synchronise the block), and every thread gets the
//   result. `scratch` is caller-provided shared memory of at least 32 elements; consecutive
//   reductions may reuse it.
// - The float4 helpers need 16-byte aligned addresses; kernels test alignment (isAligned16) and
//   fall back to scalar code, so they stay correct on odd sizes and offsets.
// - Indices are 64-bit (`long long`) wherever they address a whole buffer.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_DEVICE_CUH
#define NESTOR_DEVICE_CUH

namespace nestor {

constexpr unsigned kFullWarpMask = 0xffffffffu;
constexpr int kWarpSize = 32;

/// A bf16 value as stored: the upper 16 bits of the float with the same sign and exponent.
typedef unsigned short bf16_t;

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

/// A butterfly (xor) reduction: every lane ends with the sum of all 32 lanes.
template <typename T> __device__ __forceinline__ T warpSum(T value) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
    value += __shfl_xor_sync(kFullWarpMask, value, offset);
  return value;
}

template <typename T> __device__ __forceinline__ T warpMax(T value) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    T other = __shfl_xor_sync(kFullWarpMask, value, offset);
    value = other > value ? other : value;
  }
  return value;
}

/// -infinity without <cmath>: the identity of max.
__device__ __forceinline__ float negativeInfinity() { return __int_as_float(0xff800000); }

/// The sum over the block; see the conventions above.
template <typename T> __device__ __forceinline__ T blockSum(T value, T *scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  value = warpSum(value);
  __syncthreads(); // a previous reduction may still be reading scratch
  if (lane == 0)
    scratch[warp] = value;
  __syncthreads();
  // Every warp reduces the per-warp partials itself, which broadcasts the result to all threads
  // without another barrier.
  value = lane < warps ? scratch[lane] : T(0);
  return warpSum(value);
}

/// The maximum over the block; -infinity for a block whose values are all -infinity.
__device__ __forceinline__ float blockMax(float value, float *scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  value = warpMax(value);
  __syncthreads();
  if (lane == 0)
    scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : negativeInfinity();
  return warpMax(value);
}

//===----------------------------------------------------------------------===//
// bf16 on raw 16-bit storage
//===----------------------------------------------------------------------===//

__device__ __forceinline__ float bf16ToFloat(bf16_t value) {
  return __uint_as_float(static_cast<unsigned>(value) << 16);
}

/// Round to nearest, ties to even. NaNs stay NaN (quieted, sign kept) instead of being rounded
/// into infinity; finite values past the largest bf16 round to infinity, as IEEE rounding does.
__device__ __forceinline__ bf16_t floatToBf16(float value) {
  unsigned bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return static_cast<bf16_t>((bits >> 16) | 0x0040u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<bf16_t>(bits >> 16);
}

/// Two bf16 values packed in 32 bits (element 0 in the low half), as a bf16 pair loads.
__device__ __forceinline__ float2 bf16x2ToFloat2(unsigned packed) {
  return make_float2(__uint_as_float(packed << 16), __uint_as_float(packed & 0xffff0000u));
}

__device__ __forceinline__ unsigned float2ToBf16x2(float2 value) {
  return static_cast<unsigned>(floatToBf16(value.x)) |
         (static_cast<unsigned>(floatToBf16(value.y)) << 16);
}

//===----------------------------------------------------------------------===//
// Vectorised float4 access
//===----------------------------------------------------------------------===//

__device__ __forceinline__ bool isAligned16(const void *pointer) {
  return (reinterpret_cast<unsigned long long>(pointer) & 15ull) == 0;
}

/// Four consecutive floats from 16-byte aligned `pointer`.
__device__ __forceinline__ float4 load4(const float *pointer) {
  return *reinterpret_cast<const float4 *>(pointer);
}

/// As load4, through the read-only data cache: only for data no thread writes during the kernel.
__device__ __forceinline__ float4 load4ReadOnly(const float *pointer) {
  return __ldg(reinterpret_cast<const float4 *>(pointer));
}

__device__ __forceinline__ void store4(float *pointer, float4 value) {
  *reinterpret_cast<float4 *>(pointer) = value;
}

/// a * x + y, lane by lane, with one rounding per lane (fma).
__device__ __forceinline__ float4 fma4(float a, float4 x, float4 y) {
  return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}

//===----------------------------------------------------------------------===//
// Shared memory
//===----------------------------------------------------------------------===//

/// The block's dynamic shared memory (the launch's `sharedBytes`), 16-byte aligned. Kernels use
/// this instead of declaring `extern __shared__` arrays themselves, so that the host emulation
/// tests use (test/unit/cuda/) can provide it.
template <typename T> __device__ __forceinline__ T *dynamicShared() {
#ifdef NESTOR_HOST_EMULATION
  return reinterpret_cast<T *>(nestor_emu::dynamicSharedMemory());
#else
  extern __shared__ __align__(16) unsigned char nestorDynamicShared[];
  return reinterpret_cast<T *>(nestorDynamicShared);
#endif
}

//===----------------------------------------------------------------------===//
// Strided loops
//===----------------------------------------------------------------------===//

/// The indices start, start + stride, ... below end, for range-based for loops:
///   for (long long i : nestor::gridStride(n)) ...
class StrideRange {
public:
  class Iterator {
  public:
    __device__ __forceinline__ Iterator(long long index, long long stride)
        : index(index), stride(stride) {}
    __device__ __forceinline__ long long operator*() const { return index; }
    __device__ __forceinline__ Iterator &operator++() {
      index += stride;
      return *this;
    }
    // "Not yet past the end", so that a stride overshooting `end` still terminates.
    __device__ __forceinline__ bool operator!=(const Iterator &end) const {
      return index < end.index;
    }

  private:
    long long index;
    long long stride;
  };

  __device__ __forceinline__ StrideRange(long long start, long long end, long long stride)
      : first(start), last(end), stride(stride) {}
  __device__ __forceinline__ Iterator begin() const { return Iterator(first, stride); }
  __device__ __forceinline__ Iterator end() const { return Iterator(last, stride); }

private:
  long long first;
  long long last;
  long long stride;
};

/// Every thread of a 1-D grid visits its share of [0, n): one index per thread per sweep.
__device__ __forceinline__ StrideRange gridStride(long long n) {
  const long long start = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  return StrideRange(start, n, stride);
}

/// The threads of one block share [0, n) (a row's columns, say).
__device__ __forceinline__ StrideRange blockStride(long long n) {
  return StrideRange(threadIdx.x, n, blockDim.x);
}

/// The blocks of a 1-D grid share [0, n) (rows, say); uniform across a block, so block
/// reductions may be called inside the loop.
__device__ __forceinline__ StrideRange blockRows(long long n) {
  return StrideRange(blockIdx.x, n, gridDim.x);
}

//===----------------------------------------------------------------------===//
// Numerically safe pointwise functions
//===----------------------------------------------------------------------===//

/// exp that saturates near the largest float (exp(88.7) = 3.3e38, leaving room for expf's
/// error below FLT_MAX = 3.4e38) instead of overflowing to infinity, so that a product with 0
/// stays 0; exp(-inf) is still 0 and NaN stays NaN (fminf would turn it into the bound).
__device__ __forceinline__ float safeExp(float x) { return expf(x > 88.7f ? 88.7f : x); }

/// exp(x - max) for softmax-style normalisation: 0 where `max` is -infinity (a fully masked
/// row), where x - max would be NaN.
__device__ __forceinline__ float expShifted(float x, float max) {
  return max == negativeInfinity() ? 0.0f : expf(x - max);
}

/// log(1 + exp(x)) without overflow for large x or loss of precision for very negative x.
__device__ __forceinline__ float softplus(float x) {
  return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}

/// 1 / (1 + exp(-x)), evaluated on the side where exp cannot overflow.
__device__ __forceinline__ float sigmoid(float x) {
  if (x >= 0.0f)
    return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

/// x * sigmoid(x) (SiLU / swish).
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }

} // namespace nestor

#endif // NESTOR_DEVICE_CUH
