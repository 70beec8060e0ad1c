//===- cuda_host_emulation.h - Run generated CUDA C++ on the host -*- C++ -*-===//
//
// Force-included (-include) when a test compiles an emitted kernel with the host C++ compiler:
// the CUDA execution model, emulated. Blocks run one after another; the threads of a block are
// OS threads, so __syncthreads is a real barrier (it aborts, naming itself, if the block's
// threads do not all reach it: a divergent barrier hangs a GPU), `__shared__` variables are
// shared by the block's threads, and warp shuffles exchange values through a per-block buffer
// (every thread of the block must take part, as the block reductions do). Dynamic shared memory
// starts filled with 0xff bytes (NaN as floats), so reading it before writing shows up.
//
// It checks the arithmetic and indexing of a kernel, not its speed or its memory model: blocks
// never overlap, so races between blocks go unseen.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CUDA_HOST_EMULATION_H
#define NESTOR_CUDA_HOST_EMULATION_H

#define NESTOR_HOST_EMULATION 1

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __restrict__ __restrict

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

namespace nestor_emu {

class Barrier {
public:
  explicit Barrier(unsigned n) : n(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m);
    unsigned long g = generation;
    if (++count == n) {
      count = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return generation != g; })) {
      std::fprintf(stderr, "host emulation: __syncthreads waited 30 s: not every thread of the "
                           "block reached it (a divergent barrier)\n");
      std::abort();
    }
  }

private:
  std::mutex m;
  std::condition_variable cv;
  unsigned n, count = 0;
  unsigned long generation = 0;
};

inline thread_local uint3 threadIndex, blockIndex;
inline dim3 blockDimension, gridDimension;
inline Barrier *blockBarrier = nullptr;
inline std::vector<unsigned char> exchange, dynamicShared;
inline std::mutex atomicMutex;

inline void *dynamicSharedMemory() { return dynamicShared.data(); }

inline unsigned linearThread() {
  return threadIndex.x + blockDimension.x * (threadIndex.y + blockDimension.y * threadIndex.z);
}
inline unsigned blockThreads() { return blockDimension.x * blockDimension.y * blockDimension.z; }

inline void sync() { blockBarrier->wait(); }

/// Every thread publishes `v`, then reads lane `source(lane)` of its warp (its own value when
/// that lane is outside the warp or the block).
template <typename T, typename Source> T shuffle(T v, Source source) {
  static_assert(sizeof(T) <= 16, "shuffle of a type wider than 16 bytes");
  unsigned tid = linearThread(), lane = tid % 32, base = tid - lane;
  std::memcpy(&exchange[tid * 16], &v, sizeof(T));
  sync();
  long src = source(static_cast<long>(lane));
  T r = v;
  if (src >= 0 && src < 32 && base + src < blockThreads())
    std::memcpy(&r, &exchange[(base + src) * 16], sizeof(T));
  sync();
  return r;
}

/// Runs `body` as the kernel launch `d` = [grid x, y, z, block x, y, z, shared bytes]. One OS
/// thread per CUDA thread of a block, reused for every block: the blocks run one after another,
/// separated by a barrier.
inline void launch(const long long *d, const std::function<void()> &body) {
  gridDimension = {unsigned(d[0]), unsigned(d[1]), unsigned(d[2])};
  blockDimension = {unsigned(d[3]), unsigned(d[4]), unsigned(d[5])};
  unsigned threads = blockThreads();
  exchange.assign(size_t(threads) * 16, 0);
  dynamicShared.assign(size_t(d[6]), 0xff);
  Barrier barrier(threads);
  blockBarrier = &barrier;
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIndex = {t % blockDimension.x, (t / blockDimension.x) % blockDimension.y,
                     t / (blockDimension.x * blockDimension.y)};
      for (unsigned bz = 0; bz < gridDimension.z; ++bz)
        for (unsigned by = 0; by < gridDimension.y; ++by)
          for (unsigned bx = 0; bx < gridDimension.x; ++bx) {
            blockIndex = {bx, by, bz};
            body();
            barrier.wait(); // the block is done
            if (t == 0)
              std::fill(dynamicShared.begin(), dynamicShared.end(), (unsigned char)0xff);
            barrier.wait(); // the next block starts with fresh dynamic shared memory
          }
    });
  for (std::thread &th : pool)
    th.join();
  blockBarrier = nullptr;
}

} // namespace nestor_emu

#define threadIdx (nestor_emu::threadIndex)
#define blockIdx (nestor_emu::blockIndex)
#define blockDim (nestor_emu::blockDimension)
#define gridDim (nestor_emu::gridDimension)
#define warpSize 32

inline void __syncthreads() { nestor_emu::sync(); }
inline void __syncwarp(unsigned = 0xffffffffu) { nestor_emu::sync(); }

template <typename T> T __shfl_xor_sync(unsigned, T v, int laneMask, int = 32) {
  return nestor_emu::shuffle(v, [&](long lane) { return lane ^ laneMask; });
}
template <typename T> T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) {
  return nestor_emu::shuffle(v, [&](long lane) { return lane + long(delta); });
}
template <typename T> T __shfl_up_sync(unsigned, T v, unsigned delta, int = 32) {
  return nestor_emu::shuffle(v, [&](long lane) { return lane - long(delta); });
}
template <typename T> T __shfl_sync(unsigned, T v, int srcLane, int = 32) {
  return nestor_emu::shuffle(v, [&](long) { return long(srcLane); });
}

template <typename T> T __ldg(const T *p) { return *p; }

template <typename To, typename From> inline To nestorBitCast(From v) {
  To r;
  std::memcpy(&r, &v, sizeof(To));
  return r;
}
inline float __int_as_float(int v) { return nestorBitCast<float>(v); }
inline float __uint_as_float(unsigned v) { return nestorBitCast<float>(v); }
inline int __float_as_int(float v) { return nestorBitCast<int>(v); }
inline unsigned __float_as_uint(float v) { return nestorBitCast<unsigned>(v); }
inline double __longlong_as_double(long long v) { return nestorBitCast<double>(v); }
inline long long __double_as_longlong(double v) { return nestorBitCast<long long>(v); }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

template <typename T> T atomicAdd(T *address, T value) {
  std::lock_guard<std::mutex> lock(nestor_emu::atomicMutex);
  T old = *address;
  *address = old + value;
  return old;
}
template <typename T> T atomicMax(T *address, T value) {
  std::lock_guard<std::mutex> lock(nestor_emu::atomicMutex);
  T old = *address;
  *address = std::max(old, value);
  return old;
}

using std::max;
using std::min;

#endif // NESTOR_CUDA_HOST_EMULATION_H
