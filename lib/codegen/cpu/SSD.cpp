//===- SSD.cpp - Mamba2 state-space scan kernels for the CPU ---------------===//
#include "lib/codegen/cpu/SSD.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

using namespace nestor::cpu;

template <typename T> void nestor::cpu::ssdSequential(const SSDHead<T> &h) {
  int64_t P = h.headDim, N = h.stateSize;
  T *S = h.state;
  std::vector<T> owned;
  if (!S) {
    owned.assign(P * N, T(0));
    S = owned.data();
  }
  for (int64_t t = 0; t < h.length; ++t) {
    const T *x = h.x + t * h.xStride, *b = h.b + t * h.bStride, *c = h.c + t * h.cStride;
    T dt = h.delta[t * h.deltaStride], decay = std::exp(dt * h.a);
    T *y = h.y + t * h.yStride;
    for (int64_t p = 0; p < P; ++p) {
      T *s = S + p * N, acc = h.d * x[p], dx = dt * x[p];
      for (int64_t n = 0; n < N; ++n) {
        s[n] = decay * s[n] + dx * b[n];
        acc += s[n] * c[n];
      }
      y[p] = acc;
    }
  }
}

int64_t nestor::cpu::ssdChunkedScratchSize(int64_t headDim, int64_t stateSize, int64_t chunk) {
  // cumulative decay (Q), the C.B score matrix (Q x Q), the incoming state (P x N).
  return chunk + chunk * chunk + headDim * stateSize;
}

template <typename T> void nestor::cpu::ssdChunked(const SSDHead<T> &h, int64_t chunk, T *scratch) {
  int64_t P = h.headDim, N = h.stateSize;
  T *cs = scratch;               // [Q] within-chunk cumulative sum of dt * A
  T *scores = scratch + chunk;   // [Q, Q] (C_t . B_s) exp(cs_t - cs_s) dt_s, s <= t
  T *S = scores + chunk * chunk; // [P, N] state entering the chunk
  if (h.state)
    std::memcpy(S, h.state, sizeof(T) * P * N);
  else
    std::fill(S, S + P * N, T(0));

  for (int64_t start = 0; start < h.length; start += chunk) {
    int64_t q = std::min(chunk, h.length - start);
    T run = 0;
    for (int64_t t = 0; t < q; ++t)
      cs[t] = run += h.delta[(start + t) * h.deltaStride] * h.a;

    // 1. Intra-chunk: Y_diag[t] = sum_{s<=t} (C_t . B_s) exp(cs_t - cs_s) dt_s x_s.
    for (int64_t t = 0; t < q; ++t) {
      const T *c = h.c + (start + t) * h.cStride;
      for (int64_t s = 0; s <= t; ++s) {
        const T *b = h.b + (start + s) * h.bStride;
        T dot = 0;
        for (int64_t n = 0; n < N; ++n)
          dot += c[n] * b[n];
        scores[t * chunk + s] =
            dot * std::exp(cs[t] - cs[s]) * h.delta[(start + s) * h.deltaStride];
      }
    }
    for (int64_t t = 0; t < q; ++t) {
      T *y = h.y + (start + t) * h.yStride;
      const T *xt = h.x + (start + t) * h.xStride;
      const T *c = h.c + (start + t) * h.cStride;
      T decayIn = std::exp(cs[t]);
      for (int64_t p = 0; p < P; ++p) {
        // 4. Inter-chunk: Y_off[t] = exp(cs_t) C_t S_{c-1}; plus the skip D x.
        T acc = h.d * xt[p], off = 0;
        const T *s = S + p * N;
        for (int64_t n = 0; n < N; ++n)
          off += s[n] * c[n];
        acc += decayIn * off;
        for (int64_t src = 0; src <= t; ++src)
          acc += scores[t * chunk + src] * h.x[(start + src) * h.xStride + p];
        y[p] = acc;
      }
    }
    // 2.-3. The chunk's state: S_c = exp(cs_last) S_{c-1} + sum_s exp(cs_last - cs_s) dt_s x_s B_s.
    T last = cs[q - 1], decayAll = std::exp(last);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t n = 0; n < N; ++n)
        S[p * N + n] *= decayAll;
    for (int64_t s = 0; s < q; ++s) {
      const T *xs = h.x + (start + s) * h.xStride, *b = h.b + (start + s) * h.bStride;
      T w = std::exp(last - cs[s]) * h.delta[(start + s) * h.deltaStride];
      for (int64_t p = 0; p < P; ++p) {
        T wx = w * xs[p];
        T *srow = S + p * N;
        for (int64_t n = 0; n < N; ++n)
          srow[n] += wx * b[n];
      }
    }
  }
  if (h.state)
    std::memcpy(h.state, S, sizeof(T) * P * N);
}

namespace nestor::cpu {
template void ssdSequential<float>(const SSDHead<float> &);
template void ssdSequential<double>(const SSDHead<double> &);
template void ssdChunked<float>(const SSDHead<float> &, int64_t, float *);
template void ssdChunked<double>(const SSDHead<double> &, int64_t, double *);
} // namespace nestor::cpu
