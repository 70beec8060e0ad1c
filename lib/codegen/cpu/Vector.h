//===- Vector.h - Short vectors for the CPU kernels' inner loops -*- C++ -*-===//
//
// A float reduction does not vectorise by itself (the compiler keeps the order of the sums
// without -ffast-math), so the kernels whose inner loop is a dot product keep their partial
// sums in vectors explicitly: GCC/Clang vector extensions, 32 bytes (one AVX register on x86,
// two SSE or NEON registers elsewhere). The order of the sums is then fixed by the code, the
// same at every call, whatever the compiler.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CPU_VECTOR_H
#define NESTOR_CODEGEN_CPU_VECTOR_H

#include <cstdint>

namespace nestor::cpu {

/// A vector of 32 bytes of T, loaded from any address.
template <typename T> struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / sizeof(T);
  static type load(const T *p) {
    type v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  static T sum(type v) {
    T s = T(0);
    for (int64_t l = 0; l < kLanes; ++l)
      s += v[l];
    return s;
  }
};

/// sum a[i] b[i] over n entries: two vector accumulators, then the tail.
template <typename T> inline T dot(const T *a, const T *b, int64_t n) {
  using V = Vec<T>;
  typename V::type lo{}, hi{};
  int64_t i = 0;
  for (; i + 2 * V::kLanes <= n; i += 2 * V::kLanes) {
    lo += V::load(a + i) * V::load(b + i);
    hi += V::load(a + i + V::kLanes) * V::load(b + i + V::kLanes);
  }
  for (; i + V::kLanes <= n; i += V::kLanes)
    lo += V::load(a + i) * V::load(b + i);
  T s = V::sum(lo + hi);
  for (; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

} // namespace nestor::cpu

#endif // NESTOR_CODEGEN_CPU_VECTOR_H
