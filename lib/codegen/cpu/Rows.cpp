//===- Rows.cpp - Row-wise CPU kernels: embedding, norms, masks, losses ------===//
//
// Every kernel here walks rows independently, so rows are split across OpenMP threads. The
// column reductions of the backward kernels (weight and mask cotangents) are summed over fixed
// blocks of rows first and the block partials added in block order, so the result is the same
// whatever the number of threads (bit for bit: a training run is reproducible on any machine
// with the same kernels).
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace nestor::cpu {
namespace {

constexpr int64_t kRowBlock = 64;

int64_t numBlocks(int64_t rows) { return (rows + kRowBlock - 1) / kRowBlock; }

/// Sums `parts` [blocks, width] over blocks, in block order, into out[width] (overwritten).
template <typename T>
void sumBlocks(const std::vector<T> &parts, int64_t blocks, int64_t width, T *out) {
  std::fill(out, out + width, T(0));
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t c = 0; c < width; ++c)
      out[c] += parts[b * width + c];
}

template <typename T> T maskAt(const T *mask, int64_t i) { return mask ? mask[i] : T(1); }

/// phi and sigma of a mask of n entries (1 without a mask).
template <typename T> T phiOf(const T *mask, int64_t n) { return mask ? mask[n] : T(1); }
template <typename T> T sigmaOf(const T *mask, int64_t n) { return mask ? mask[n + 1] : T(1); }

/// Log-sum-exp of row x[0..n) / temperature.
template <typename T> T logSumExp(const T *x, int64_t n, T invTemp) {
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < n; ++i)
    mx = std::max(mx, x[i] * invTemp);
  T sum = 0;
  for (int64_t i = 0; i < n; ++i)
    sum += std::exp(x[i] * invTemp - mx);
  return mx + std::log(sum);
}

} // namespace

template <typename T>
int64_t embedForward(const int32_t *tokens, int64_t rows, const T *table, int64_t vocab, int64_t d,
                     const T *mask, int64_t dActive, T *out) {
  for (int64_t r = 0; r < rows; ++r)
    if (tokens[r] < 0 || tokens[r] >= vocab)
      return r;
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T *src = table + static_cast<int64_t>(tokens[r]) * d;
    T *dst = out + r * d;
    for (int64_t c = 0; c < dActive; ++c)
      dst[c] = src[c] * maskAt(mask, c);
    std::fill(dst + dActive, dst + d, T(0));
  }
  return -1;
}

template <typename T>
void embedBackward(const int32_t *tokens, int64_t rows, const T *table, int64_t vocab, int64_t d,
                   const T *mask, int64_t dActive, const T *dOut, T *dTable, T *dMask) {
  // Scatter-add in row order (tokens repeat, so rows cannot be split without a reduction);
  // parallel over column stripes instead, which keeps the order per element fixed.
  std::fill(dTable, dTable + vocab * d, T(0));
  constexpr int64_t stripe = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < dActive; c0 += stripe) {
    int64_t c1 = std::min(dActive, c0 + stripe);
    for (int64_t r = 0; r < rows; ++r) {
      T *dst = dTable + static_cast<int64_t>(tokens[r]) * d;
      const T *g = dOut + r * d;
      for (int64_t c = c0; c < c1; ++c)
        dst[c] += g[c] * maskAt(mask, c);
    }
    if (dMask)
      for (int64_t c = c0; c < c1; ++c) {
        T acc = 0;
        for (int64_t r = 0; r < rows; ++r)
          acc += dOut[r * d + c] * table[static_cast<int64_t>(tokens[r]) * d + c];
        dMask[c] = acc;
      }
  }
  if (dMask)
    std::fill(dMask + dActive, dMask + d + 2, T(0));
}

template <typename T>
void rmsnormForward(const T *x, int64_t rows, int64_t d, const T *w, double eps, const T *mask,
                    int64_t dActive, T *y) {
  T phi = phiOf(mask, d), sigma = sigmaOf(mask, d);
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * d;
    T *yr = y + r * d;
    // Channels past dActive are zero in the residual stream (prefix-dense invariant).
    T ss = 0;
    for (int64_t c = 0; c < dActive; ++c)
      ss += xr[c] * xr[c];
    T inv = T(1) / std::sqrt(ss / T(d) + T(eps) * phi);
    for (int64_t c = 0; c < dActive; ++c)
      yr[c] = maskAt(mask, c) * sigma * w[c] * xr[c] * inv;
    std::fill(yr + dActive, yr + d, T(0));
  }
}

template <typename T>
void rmsnormBackward(const T *x, int64_t rows, int64_t d, const T *w, double eps, const T *mask,
                     int64_t dActive, const T *dy, T *dx, T *dw, T *dMask) {
  T phi = phiOf(mask, d), sigma = sigmaOf(mask, d);
  int64_t blocks = numBlocks(rows);
  // Per block: [dw (d) | dm (d) | dphi | dsigma].
  int64_t width = 2 * d + 2;
  std::vector<T> parts(blocks * width, T(0));
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    T *part = &parts[blk * width];
    for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
      const T *xr = x + r * d, *g = dy + r * d;
      T ss = 0;
      for (int64_t c = 0; c < dActive; ++c)
        ss += xr[c] * xr[c];
      T inv = T(1) / std::sqrt(ss / T(d) + T(eps) * phi);
      T gx = 0, ds = 0;
      for (int64_t c = 0; c < dActive; ++c) {
        T m = maskAt(mask, c), xn = xr[c] * inv;
        gx += g[c] * m * sigma * w[c] * xr[c];
        part[c] += g[c] * m * sigma * xn;
        part[d + c] += g[c] * sigma * w[c] * xn;
        ds += g[c] * m * w[c] * xn;
      }
      T inv3 = inv * inv * inv;
      T *dxr = dx + r * d;
      for (int64_t c = 0; c < dActive; ++c)
        dxr[c] = g[c] * maskAt(mask, c) * sigma * w[c] * inv - xr[c] * inv3 / T(d) * gx;
      std::fill(dxr + dActive, dxr + d, T(0));
      part[2 * d] += T(-0.5) * T(eps) * inv3 * gx;
      part[2 * d + 1] += ds;
    }
  }
  std::vector<T> total(width);
  sumBlocks(parts, blocks, width, total.data());
  std::copy_n(total.data(), d, dw);
  if (dMask) {
    std::copy_n(total.data() + d, d, dMask);
    dMask[d] = total[2 * d];
    dMask[d + 1] = total[2 * d + 1];
  }
}

template <typename T>
void maskForward(const T *x, int64_t rows, int64_t width, int64_t block, const T *mask,
                 int64_t groups, int64_t active, T *y) {
  int64_t entries = width / block, perGroup = entries / groups;
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < entries; ++i) {
      const T *src = x + r * width + i * block;
      T *dst = y + r * width + i * block;
      T m = i % perGroup < active ? maskAt(mask, i) : T(0);
      for (int64_t c = 0; c < block; ++c)
        dst[c] = src[c] * m;
    }
}

template <typename T>
void maskBackward(const T *x, const T *dy, int64_t rows, int64_t width, int64_t block,
                  const T *mask, int64_t groups, int64_t active, T *dx, T *dMask) {
  int64_t entries = width / block, perGroup = entries / groups, blocks = numBlocks(rows);
  std::vector<T> parts(dMask ? blocks * entries : 0, T(0));
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r)
      for (int64_t i = 0; i < entries; ++i) {
        int64_t base = r * width + i * block;
        bool on = i % perGroup < active;
        T m = on ? maskAt(mask, i) : T(0), acc = 0;
        for (int64_t c = 0; c < block; ++c) {
          dx[base + c] = dy[base + c] * m;
          acc += dy[base + c] * x[base + c];
        }
        if (dMask && on)
          parts[blk * entries + i] += acc;
      }
  if (dMask) {
    sumBlocks(parts, blocks, entries, dMask);
    dMask[entries] = dMask[entries + 1] = T(0);
  }
}

template <typename T>
void relu2Forward(const T *u, int64_t rows, int64_t f, const T *mask, int64_t fActive, T *a) {
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T *ur = u + r * f;
    T *ar = a + r * f;
    for (int64_t c = 0; c < fActive; ++c) {
      T v = std::max(ur[c] * maskAt(mask, c), T(0));
      ar[c] = v * v;
    }
    std::fill(ar + fActive, ar + f, T(0));
  }
}

template <typename T>
void relu2Backward(const T *u, int64_t rows, int64_t f, const T *mask, int64_t fActive, const T *dA,
                   T *du, T *dMask) {
  int64_t blocks = numBlocks(rows);
  std::vector<T> parts(dMask ? blocks * f : 0, T(0));
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
      const T *ur = u + r * f, *g = dA + r * f;
      T *dur = du + r * f;
      for (int64_t c = 0; c < fActive; ++c) {
        T m = maskAt(mask, c), t = g[c] * T(2) * std::max(ur[c] * m, T(0));
        dur[c] = t * m;
        if (dMask)
          parts[blk * f + c] += t * ur[c];
      }
      std::fill(dur + fActive, dur + f, T(0));
    }
  if (dMask) {
    sumBlocks(parts, blocks, f, dMask);
    dMask[f] = dMask[f + 1] = T(0);
  }
}

template <typename T>
void depthGateForward(const T *h, const T *block, int64_t n, T gamma, T *out) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i)
    out[i] = h[i] + gamma * block[i];
}

template <typename T>
void depthGateBackward(const T *block, const T *dy, int64_t n, T gamma, T *dBlock, T *dGamma) {
  int64_t chunk = 4096, chunks = (n + chunk - 1) / chunk;
  std::vector<T> parts(chunks, T(0));
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t k = 0; k < chunks; ++k) {
    T acc = 0;
    for (int64_t i = k * chunk; i < std::min(n, (k + 1) * chunk); ++i) {
      dBlock[i] = gamma * dy[i];
      acc += dy[i] * block[i];
    }
    parts[k] = acc;
  }
  T total = 0;
  for (T p : parts)
    total += p;
  *dGamma = total;
}

template <typename T>
T crossEntropyForward(const T *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                      int64_t ignoreIndex) {
  std::vector<T> loss(rows, T(0));
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r)
    if (targets[r] != ignoreIndex)
      loss[r] = logSumExp(logits + r * vocab, vocab, T(1)) - logits[r * vocab + targets[r]];
  T sum = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r)
    if (targets[r] != ignoreIndex) {
      sum += loss[r];
      ++count;
    }
  return count ? sum / T(count) : T(0);
}

template <typename T>
void crossEntropyBackward(const T *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                          int64_t ignoreIndex, T dLoss, T *dLogits) {
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r)
    count += targets[r] != ignoreIndex;
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    T *g = dLogits + r * vocab;
    if (targets[r] == ignoreIndex) {
      std::fill(g, g + vocab, T(0));
      continue;
    }
    const T *x = logits + r * vocab;
    T lse = logSumExp(x, vocab, T(1)), scale = dLoss / T(count);
    for (int64_t i = 0; i < vocab; ++i)
      g[i] = scale * std::exp(x[i] - lse);
    g[targets[r]] -= scale;
  }
}

template <typename T>
T klForward(const T *student, const T *teacher, int64_t rows, int64_t vocab, double temperature) {
  T invTemp = T(1) / T(temperature);
  std::vector<T> kl(rows, T(0));
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T *s = student + r * vocab, *t = teacher + r * vocab;
    T lseS = logSumExp(s, vocab, invTemp), lseT = logSumExp(t, vocab, invTemp), acc = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      T lt = t[i] * invTemp - lseT, ls = s[i] * invTemp - lseS;
      acc += std::exp(lt) * (lt - ls);
    }
    kl[r] = acc;
  }
  T sum = 0;
  for (T v : kl)
    sum += v;
  return rows ? sum / T(rows) : T(0);
}

template <typename T>
void klBackward(const T *student, const T *teacher, int64_t rows, int64_t vocab, double temperature,
                T dLoss, T *dStudent) {
  T invTemp = T(1) / T(temperature), scale = dLoss / (T(rows) * T(temperature));
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T *s = student + r * vocab, *t = teacher + r * vocab;
    T lseS = logSumExp(s, vocab, invTemp), lseT = logSumExp(t, vocab, invTemp);
    T *g = dStudent + r * vocab;
    for (int64_t i = 0; i < vocab; ++i)
      g[i] = scale * (std::exp(s[i] * invTemp - lseS) - std::exp(t[i] * invTemp - lseT));
  }
}

template <typename T> void add(const T *a, const T *b, int64_t n, T *out) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
}

template <typename T>
void adamw(T *p, const T *g, T *m, T *v, int64_t n, double lr, double beta1, double beta2,
           double eps, double weightDecay, int64_t step, double gradScale) {
  T b1 = T(beta1), b2 = T(beta2), c1 = T(1.0 / (1.0 - std::pow(beta1, double(step))));
  T c2 = T(1.0 / (1.0 - std::pow(beta2, double(step))));
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i] * T(gradScale);
    m[i] = b1 * m[i] + (T(1) - b1) * gi;
    v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
    p[i] -= T(lr) * (m[i] * c1 / (std::sqrt(v[i] * c2) + T(eps)) + T(weightDecay) * p[i]);
  }
}

#define NESTOR_INSTANTIATE(T)                                                                      \
  template int64_t embedForward<T>(const int32_t *, int64_t, const T *, int64_t, int64_t,          \
                                   const T *, int64_t, T *);                                       \
  template void embedBackward<T>(const int32_t *, int64_t, const T *, int64_t, int64_t, const T *, \
                                 int64_t, const T *, T *, T *);                                    \
  template void rmsnormForward<T>(const T *, int64_t, int64_t, const T *, double, const T *,       \
                                  int64_t, T *);                                                   \
  template void rmsnormBackward<T>(const T *, int64_t, int64_t, const T *, double, const T *,      \
                                   int64_t, const T *, T *, T *, T *);                             \
  template void maskForward<T>(const T *, int64_t, int64_t, int64_t, const T *, int64_t, int64_t,  \
                               T *);                                                               \
  template void maskBackward<T>(const T *, const T *, int64_t, int64_t, int64_t, const T *,        \
                                int64_t, int64_t, T *, T *);                                       \
  template void relu2Forward<T>(const T *, int64_t, int64_t, const T *, int64_t, T *);             \
  template void relu2Backward<T>(const T *, int64_t, int64_t, const T *, int64_t, const T *, T *,  \
                                 T *);                                                             \
  template void depthGateForward<T>(const T *, const T *, int64_t, T, T *);                        \
  template void depthGateBackward<T>(const T *, const T *, int64_t, T, T *, T *);                  \
  template T crossEntropyForward<T>(const T *, int64_t, int64_t, const int32_t *, int64_t);        \
  template void crossEntropyBackward<T>(const T *, int64_t, int64_t, const int32_t *, int64_t, T,  \
                                        T *);                                                      \
  template T klForward<T>(const T *, const T *, int64_t, int64_t, double);                         \
  template void klBackward<T>(const T *, const T *, int64_t, int64_t, double, T, T *);             \
  template void add<T>(const T *, const T *, int64_t, T *);                                        \
  template void adamw<T>(T *, const T *, T *, T *, int64_t, double, double, double, double,        \
                         double, int64_t, double);

NESTOR_INSTANTIATE(float)
NESTOR_INSTANTIATE(double)
#undef NESTOR_INSTANTIATE

} // namespace nestor::cpu
