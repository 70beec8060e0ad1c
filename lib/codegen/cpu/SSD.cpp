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

template <typename T>
void nestor::cpu::ssdSequentialBackward(const SSDHead<T> &h, SSDHeadGrad<T> &g) {
  int64_t P = h.headDim, N = h.stateSize, L = h.length;
  // States S_0 .. S_L.
  std::vector<T> states((L + 1) * P * N, T(0));
  if (h.state)
    std::copy(h.state, h.state + P * N, states.begin());
  for (int64_t t = 0; t < L; ++t) {
    const T *x = h.x + t * h.xStride, *b = h.b + t * h.bStride;
    T dt = h.delta[t * h.deltaStride], decay = std::exp(dt * h.a);
    const T *prev = &states[t * P * N];
    T *cur = &states[(t + 1) * P * N];
    for (int64_t p = 0; p < P; ++p)
      for (int64_t n = 0; n < N; ++n)
        cur[p * N + n] = decay * prev[p * N + n] + dt * x[p] * b[n];
  }
  std::vector<T> dS(P * N, T(0)), dSnext(P * N, T(0));
  T decayNext = 0;
  for (int64_t t = L - 1; t >= 0; --t) {
    const T *x = h.x + t * h.xStride, *b = h.b + t * h.bStride, *c = h.c + t * h.cStride;
    const T *dy = g.dy + t * h.yStride;
    T dt = h.delta[t * h.deltaStride], decay = std::exp(dt * h.a);
    const T *cur = &states[(t + 1) * P * N], *prev = &states[t * P * N];
    T *dx = g.dx + t * h.xStride, *db = g.db + t * h.bStride, *dc = g.dc + t * h.cStride;
    T dDelta = 0, dotPrev = 0;
    for (int64_t p = 0; p < P; ++p) {
      g.dD += dy[p] * x[p];
      T dxp = h.d * dy[p];
      for (int64_t n = 0; n < N; ++n) {
        T ds = dS[p * N + n] = dy[p] * c[n] + decayNext * dSnext[p * N + n];
        dc[n] += cur[p * N + n] * dy[p];
        db[n] += dt * ds * x[p];
        dxp += dt * ds * b[n];
        dDelta += x[p] * ds * b[n];
        dotPrev += ds * prev[p * N + n];
      }
      dx[p] += dxp;
    }
    g.dDelta[t * h.deltaStride] += dDelta + h.a * decay * dotPrev;
    g.dA += dt * decay * dotPrev;
    std::swap(dS, dSnext);
    decayNext = decay;
  }
  if (g.dState && h.state)
    for (int64_t i = 0; i < P * N; ++i)
      g.dState[i] = decayNext * dSnext[i]; // dS_0 = a_1 dS_1
}

template <typename T>
void nestor::cpu::ssdChunkedBackward(const SSDHead<T> &h, int64_t chunk, SSDHeadGrad<T> &g) {
  int64_t P = h.headDim, N = h.stateSize, L = h.length;
  int64_t chunks = (L + chunk - 1) / chunk;
  auto X = [&](int64_t t) { return h.x + t * h.xStride; };
  auto Bm = [&](int64_t t) { return h.b + t * h.bStride; };
  auto Cm = [&](int64_t t) { return h.c + t * h.cStride; };
  auto dt = [&](int64_t t) { return h.delta[t * h.deltaStride]; };

  // Forward over chunks: the state entering each chunk, and cs (cumulative dt * A per chunk).
  std::vector<T> entry((chunks + 1) * P * N, T(0)), cs(L);
  if (h.state)
    std::copy(h.state, h.state + P * N, entry.begin());
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t s0 = c * chunk, q = std::min(chunk, L - s0);
    T run = 0;
    for (int64_t t = 0; t < q; ++t)
      cs[s0 + t] = run += dt(s0 + t) * h.a;
    const T *in = &entry[c * P * N];
    T *out = &entry[(c + 1) * P * N];
    T last = cs[s0 + q - 1];
    for (int64_t i = 0; i < P * N; ++i)
      out[i] = std::exp(last) * in[i];
    for (int64_t s = s0; s < s0 + q; ++s) {
      T w = std::exp(last - cs[s]) * dt(s);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t n = 0; n < N; ++n)
          out[p * N + n] += w * X(s)[p] * Bm(s)[n];
    }
  }

  std::vector<T> dSout(P * N, T(0)), dSin(P * N), dcs(L, T(0));
  for (int64_t c = chunks - 1; c >= 0; --c) {
    int64_t s0 = c * chunk, q = std::min(chunk, L - s0), tl = s0 + q - 1;
    const T *Sin = &entry[c * P * N];
    T last = cs[tl];
    // State update: S_out = e^{cs_L} S_in + sum_s e^{cs_L - cs_s} dt_s x_s (x) B_s.
    T dotIn = 0;
    for (int64_t i = 0; i < P * N; ++i) {
      dSin[i] = std::exp(last) * dSout[i];
      dotIn += dSout[i] * Sin[i];
    }
    dcs[tl] += std::exp(last) * dotIn;
    for (int64_t s = s0; s <= tl; ++s) {
      T e = std::exp(last - cs[s]), w = e * dt(s), outer = 0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t n = 0; n < N; ++n) {
          T d = dSout[p * N + n];
          outer += d * X(s)[p] * Bm(s)[n];
          g.dx[s * h.xStride + p] += w * d * Bm(s)[n];
          g.db[s * h.bStride + n] += w * d * X(s)[p];
        }
      g.dDelta[s * h.deltaStride] += e * outer;
      dcs[tl] += w * outer;
      dcs[s] -= w * outer;
    }
    for (int64_t t = s0; t <= tl; ++t) {
      const T *dy = g.dy + t * h.yStride;
      T et = std::exp(cs[t]);
      // Inter-chunk read: y_t += e^{cs_t} S_in C_t; skip: y_t += D x_t.
      T readDot = 0;
      for (int64_t p = 0; p < P; ++p) {
        g.dD += dy[p] * X(t)[p];
        g.dx[t * h.xStride + p] += h.d * dy[p];
        for (int64_t n = 0; n < N; ++n) {
          readDot += dy[p] * Sin[p * N + n] * Cm(t)[n];
          g.dc[t * h.cStride + n] += et * dy[p] * Sin[p * N + n];
          dSin[p * N + n] += et * dy[p] * Cm(t)[n];
        }
      }
      dcs[t] += et * readDot;
      // Intra-chunk: y_t += sum_{s<=t} (C_t . B_s) e^{cs_t - cs_s} dt_s x_s.
      for (int64_t s = s0; s <= t; ++s) {
        T cb = 0, gts = 0;
        for (int64_t n = 0; n < N; ++n)
          cb += Cm(t)[n] * Bm(s)[n];
        for (int64_t p = 0; p < P; ++p)
          gts += dy[p] * X(s)[p];
        T e = std::exp(cs[t] - cs[s]);
        T wgt = e * dt(s) * gts; // d(C_t . B_s)
        for (int64_t n = 0; n < N; ++n) {
          g.dc[t * h.cStride + n] += wgt * Bm(s)[n];
          g.db[s * h.bStride + n] += wgt * Cm(t)[n];
        }
        for (int64_t p = 0; p < P; ++p)
          g.dx[s * h.xStride + p] += cb * e * dt(s) * dy[p];
        g.dDelta[s * h.deltaStride] += cb * e * gts;
        T wcs = cb * e * dt(s) * gts;
        dcs[t] += wcs;
        dcs[s] -= wcs;
      }
    }
    std::swap(dSout, dSin);
  }
  if (g.dState && h.state)
    std::copy(dSout.begin(), dSout.end(), g.dState);
  // cs_t = sum_{u <= t in chunk} dt_u A: a reverse cumulative sum within each chunk.
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t s0 = c * chunk, q = std::min(chunk, L - s0);
    T acc = 0;
    for (int64_t u = s0 + q - 1; u >= s0; --u) {
      acc += dcs[u];
      g.dDelta[u * h.deltaStride] += h.a * acc;
      g.dA += dt(u) * acc;
    }
  }
}

namespace nestor::cpu {
template void ssdSequentialBackward<float>(const SSDHead<float> &, SSDHeadGrad<float> &);
template void ssdSequentialBackward<double>(const SSDHead<double> &, SSDHeadGrad<double> &);
template void ssdChunkedBackward<float>(const SSDHead<float> &, int64_t, SSDHeadGrad<float> &);
template void ssdChunkedBackward<double>(const SSDHead<double> &, int64_t, SSDHeadGrad<double> &);
} // namespace nestor::cpu
