//===- cuda_host_emulation.h - Run generated CUDA C++ on the host -*- C++ -*-===//
//
// Force-included (-include) when a test compiles an emitted kernel with the host C++ compiler:
// the CUDA execution model, emulated. Blocks run one after another; the threads of a block are
// fibers (ucontext) on the calling OS thread, switched at every __syncthreads, so a barrier is
// a real barrier: a thread waits there until every thread of the block that has not returned
// has reached one (as on Volta and later GPUs, exited threads do not block a barrier).
// `__shared__` variables are shared by the block's threads, and warp shuffles exchange values
// through a per-block buffer (every thread of the block must take part, as the block
// reductions do). Dynamic shared memory starts filled with 0xff bytes (NaN as floats), so
// reading it before writing shows up.
//
// Fibers, not OS threads: a barrier is then a round of context switches in one process
// instead of a futex wake-up of every thread, and a launch creates no threads. On x86-64 the
// switch is a few instructions (callee-saved registers, MXCSR and the x87 control word, as
// the SysV ABI has them survive a call); elsewhere it is swapcontext.
//
// It checks the arithmetic and indexing of a kernel, not its speed or its memory model: blocks
// never overlap, so races between blocks go unseen.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CUDA_HOST_EMULATION_H
#define NESTOR_CUDA_HOST_EMULATION_H

#define NESTOR_HOST_EMULATION 1

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

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

#if defined(__x86_64__) && defined(__GNUC__)
#define NESTOR_EMU_FAST_SWITCH 1
/// Saves the callee-saved state on this stack, stores the stack pointer in *save, and resumes
/// the stack `next` (one this function saved, or a fresh one fiberStart() prepared).
__attribute__((naked, noinline)) static void switchStack(void ** /*save*/, void * /*next*/) {
  asm volatile("pushq %rbp\n\t"
               "pushq %rbx\n\t"
               "pushq %r12\n\t"
               "pushq %r13\n\t"
               "pushq %r14\n\t"
               "pushq %r15\n\t"
               "subq $8, %rsp\n\t"
               "stmxcsr (%rsp)\n\t"
               "fnstcw 4(%rsp)\n\t"
               "movq %rsp, (%rdi)\n\t"
               "movq %rsi, %rsp\n\t"
               "ldmxcsr (%rsp)\n\t"
               "fldcw 4(%rsp)\n\t"
               "addq $8, %rsp\n\t"
               "popq %r15\n\t"
               "popq %r14\n\t"
               "popq %r13\n\t"
               "popq %r12\n\t"
               "popq %rbx\n\t"
               "popq %rbp\n\t"
               "ret\n\t");
}
#endif

/// One CUDA thread: its context, its stack (with a guard page below it) and its index.
struct Fiber {
  void *sp = nullptr; // the saved stack pointer (fast switch)
  ucontext_t context; // the saved context (swapcontext)
  void *mapping = nullptr;
  size_t mappingBytes = 0;
  uint3 threadIndex;
  bool done = false;

  Fiber() = default;
  Fiber(const Fiber &) = delete;
  Fiber &operator=(const Fiber &) = delete;
  ~Fiber() {
    if (mapping)
      ::munmap(mapping, mappingBytes);
  }
};

/// Stack per CUDA thread: kernels keep their per-thread tiles there.
constexpr size_t kFiberStack = 256 * 1024;

inline std::vector<std::unique_ptr<Fiber>> fibers;
inline Fiber *current = nullptr;
inline void *schedulerSp = nullptr;
inline ucontext_t scheduler;
inline const std::function<void()> *currentBody = nullptr;
inline uint3 blockIndex;
inline dim3 blockDimension, gridDimension;
inline std::vector<unsigned char> exchange, dynamicShared;
inline std::mutex atomicMutex;

inline void *dynamicSharedMemory() { return dynamicShared.data(); }

inline unsigned linearThread() {
  const uint3 &t = current->threadIndex;
  return t.x + blockDimension.x * (t.y + blockDimension.y * t.z);
}
inline unsigned blockThreads() { return blockDimension.x * blockDimension.y * blockDimension.z; }

/// __syncthreads: back to the scheduler, which resumes this thread once every thread of the
/// block still running is waiting too.
inline void sync() {
  if (!current) {
    std::fprintf(stderr, "host emulation: __syncthreads outside a kernel launch\n");
    std::abort();
  }
#ifdef NESTOR_EMU_FAST_SWITCH
  switchStack(&current->sp, schedulerSp);
#else
  if (::swapcontext(&current->context, &scheduler) != 0)
    std::abort();
#endif
}

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

inline void fiberEntry() {
  (*currentBody)();
  current->done = true;
#ifdef NESTOR_EMU_FAST_SWITCH
  switchStack(&current->sp, schedulerSp); // never resumed
  __builtin_unreachable();
#endif
  // Returning resumes uc_link: the scheduler.
}

/// Makes `f` start `fiberEntry` on its own stack when next resumed.
inline void fiberStart(Fiber &f, long page) {
  char *base = static_cast<char *>(f.mapping) + page;
#ifdef NESTOR_EMU_FAST_SWITCH
  // The frame switchStack pops: MXCSR and the x87 control word (their defaults), six
  // callee-saved registers, and fiberEntry as the return address, placed so that fiberEntry
  // starts with the stack aligned as after a call (rsp + 8 a multiple of 16).
  uintptr_t top = (reinterpret_cast<uintptr_t>(base) + kFiberStack) & ~uintptr_t(15);
  auto *frame = reinterpret_cast<uint64_t *>(top - 72);
  uint32_t control[2] = {0x1f80u, 0x037fu};
  std::memcpy(frame, control, sizeof(control));
  for (int i = 1; i <= 6; ++i)
    frame[i] = 0;
  frame[7] = reinterpret_cast<uint64_t>(&fiberEntry);
  f.sp = frame;
#else
  ::getcontext(&f.context);
  f.context.uc_stack.ss_sp = base;
  f.context.uc_stack.ss_size = kFiberStack;
  f.context.uc_link = &scheduler;
  ::makecontext(&f.context, fiberEntry, 0);
#endif
}

/// Runs `body` as the kernel launch `d` = [grid x, y, z, block x, y, z, shared bytes]: block
/// by block, each block's threads as fibers run in rounds from one barrier to the next.
inline void launch(const long long *d, const std::function<void()> &body) {
  gridDimension = {unsigned(d[0]), unsigned(d[1]), unsigned(d[2])};
  blockDimension = {unsigned(d[3]), unsigned(d[4]), unsigned(d[5])};
  unsigned threads = blockThreads();
  exchange.assign(size_t(threads) * 16, 0);
  dynamicShared.assign(size_t(d[6]), 0xff);
  long page = ::sysconf(_SC_PAGESIZE);
  while (fibers.size() < threads) {
    auto f = std::make_unique<Fiber>();
    f->mappingBytes = kFiberStack + size_t(page);
    f->mapping = ::mmap(nullptr, f->mappingBytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f->mapping == MAP_FAILED) {
      std::fprintf(stderr, "host emulation: cannot map a fiber stack\n");
      std::abort();
    }
    ::mprotect(f->mapping, size_t(page), PROT_NONE); // a stack overflow faults
    fibers.push_back(std::move(f));
  }
  currentBody = &body;
  for (unsigned bz = 0; bz < gridDimension.z; ++bz)
    for (unsigned by = 0; by < gridDimension.y; ++by)
      for (unsigned bx = 0; bx < gridDimension.x; ++bx) {
        blockIndex = {bx, by, bz};
        for (unsigned t = 0; t < threads; ++t) {
          Fiber &f = *fibers[t];
          f.threadIndex = {t % blockDimension.x, (t / blockDimension.x) % blockDimension.y,
                           t / (blockDimension.x * blockDimension.y)};
          f.done = false;
          fiberStart(f, page);
        }
        // Rounds: each thread runs to its next barrier (or its end); a round ends when all
        // have, which is when the barrier opens.
        for (bool running = true; running;) {
          running = false;
          for (unsigned t = 0; t < threads; ++t) {
            Fiber &f = *fibers[t];
            if (f.done)
              continue;
            current = &f;
#ifdef NESTOR_EMU_FAST_SWITCH
            switchStack(&schedulerSp, f.sp);
#else
            if (::swapcontext(&scheduler, &f.context) != 0)
              std::abort();
#endif
            running = running || !f.done;
          }
        }
        current = nullptr;
        std::fill(dynamicShared.begin(), dynamicShared.end(), (unsigned char)0xff);
      }
  currentBody = nullptr;
}

} // namespace nestor_emu

#define threadIdx (nestor_emu::current->threadIndex)
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
