//===- Attention.cpp - Causal GQA flash attention for the CPU --------------===//
//
// Flash-style (FlashAttention-2) forward and backward: queries are processed in tiles of kTile
// rows against key tiles of kTile rows, with an online softmax (running max and sum per query
// row) in the forward and the probabilities recomputed from the saved log-sum-exp in the
// backward. Nothing larger than a kTile x kTile block of scores exists at any time, so memory is
// O(L) per head rather than O(L^2).
//
// Threading and reproducibility: every output element is produced by exactly one task, which
// computes it in a fixed order, so results are bit-identical whatever the thread count.
// - forward and dQ: one task per (sequence, query head, query tile);
// - dK and dV: one task per (sequence, KV head, key tile). Several query heads share a KV head
//   (GQA), so the task loops over that group's query heads and over the query tiles at or after
//   its key tile itself, owning its dK/dV rows instead of racing on them. The price is that the
//   scores and dP are computed a second time, in the dQ pass; atomics or per-thread dK/dV copies
//   would avoid that but make the summation order depend on the schedule.
//
// The tile products are one small register-blocked GEMM (tileGemm) written as loops whose
// innermost dimension is contiguous (the key index over a transposed K/V tile, or the head
// dimension) so that they vectorise; OpenBLAS would buy little at these sizes and would have to
// be kept from threading inside the OpenMP region. exp is a vectorisable polynomial (expNormal)
// rather than libm's scalar call.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"
#include "lib/codegen/cpu/Vector.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace nestor::cpu {
namespace {

/// Query and key tile size. 64 keeps a tile of scores (16 KiB in float) and a transposed K/V
/// tile (8 KiB at hd = 32) in L1.
constexpr int64_t kTile = 64;

/// Sizes and strides shared by the three passes.
struct Geometry {
  int64_t batch, length, heads, kvHeads, hd, group, qActive, tiles;
  int64_t qStride, kvStride; // row strides of q/a/da/dq and of k/v/dk/dv
  explicit Geometry(const AttentionShape &s)
      : batch(s.batch), length(s.length), heads(s.heads), kvHeads(s.kvHeads), hd(s.headDim),
        group(s.kvHeads > 0 ? s.heads / s.kvHeads : 0),
        qActive(std::clamp<int64_t>(s.qActive, 0, group)), tiles((s.length + kTile - 1) / kTile),
        qStride(s.heads * s.headDim), kvStride(s.kvHeads * s.headDim) {}
  /// Nothing to compute, or head counts the op verifier rejects (heads not a multiple of
  /// kvHeads), which would otherwise index past the KV heads.
  bool empty() const {
    return batch <= 0 || length <= 0 || hd <= 0 || group <= 0 || heads % kvHeads != 0;
  }
  bool active(int64_t h) const { return h % group < qActive; }
  int64_t rows(int64_t tile) const { return std::min(kTile, length - tile * kTile); }
  /// Offset of (sequence b, position i, head h) in a [rows, heads*hd] buffer, and in a
  /// [rows, kvHeads*hd] one.
  int64_t qAt(int64_t b, int64_t i, int64_t h) const { return (b * length + i) * qStride + h * hd; }
  int64_t kvAt(int64_t b, int64_t j, int64_t g) const {
    return (b * length + j) * kvStride + g * hd;
  }
  /// Index of row i of (b, h) in lse and D.
  int64_t statAt(int64_t b, int64_t h, int64_t i) const { return (b * heads + h) * length + i; }

  /// One of the batch * heads * tiles query-tile tasks (forward, dQ, cached step): sequence b,
  /// query head h, tile qt of n rows from row i0. Causal tiles get more work the later they
  /// start, so the late ones are handed out first and a dynamic schedule ends balanced.
  struct QueryTile {
    int64_t b, h, qt, i0, n;
  };
  int64_t queryTasks() const { return batch * heads * tiles; }
  QueryTile queryTile(int64_t task) const {
    int64_t qt = tiles - 1 - task % tiles;
    return {task / (heads * tiles), task / tiles % heads, qt, qt * kTile, rows(qt)};
  }
  /// Zeroes the n rows of head h's hd columns at out (row stride qStride): what an inactive
  /// head writes.
  template <typename T> void zeroRows(T *out, int64_t n) const {
    for (int64_t i = 0; i < n; ++i)
      std::fill(out + i * qStride, out + i * qStride + hd, T(0));
  }
};

/// out[e * kTile + j] = rows[j * stride + e] for j < n: a K or V tile transposed, so that the
/// score products run along the key index, contiguously.
template <typename T>
void transposeTile(const T *rows, int64_t stride, int64_t n, int64_t hd, T *out) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < hd; ++e)
      out[e * kTile + j] = rows[j * stride + e];
}

/// The register block of tileGemm: 8 rows of C by one 32-byte line of columns (8 floats or 4
/// doubles, one AVX2 vector) is 8 independent accumulators, enough to cover the FMA latency,
/// with registers to spare for the B line and the broadcast A values. (Two-vector lines made
/// GCC spill accumulators and ran about 20% slower.)
constexpr int64_t kBlockRows = 8, kLineBytes = 32;

/// The one small GEMM every tile product is made of:
///   c[i * ldc + col] = (accumulate ? c[i * ldc + col] : 0) + sum_{k0 <= k < k1} A(i, k) *
///   b[k * ldb + col]
/// for i < n and col < cols, with A(i, k) = a[i * lda + k] (a[k * lda + i] when TransA), and
/// [k0, k1) = kRange(i0, i1) and cols = colEnd(i0, i1) for the block of rows [i0, i1) holding
/// i. The ranges let the causal tiles skip what is all zero (or never read): A entries inside
/// [k0, k1) that a row does not need must be 0, and columns past colEnd are left untouched.
/// Each element sums its k in increasing order, whatever path computes it.
template <bool TransA, typename T, typename KRange, typename ColEnd>
void tileGemm(int64_t n, const T *a, int64_t lda, const T *b, int64_t ldb, T *c, int64_t ldc,
              bool accumulate, KRange kRange, ColEnd colEnd) {
  constexpr int64_t W = kLineBytes / sizeof(T);
  auto at = [&](int64_t i, int64_t k) { return TransA ? a[k * lda + i] : a[i * lda + k]; };
  for (int64_t i0 = 0; i0 < n; i0 += kBlockRows) {
    int64_t i1 = std::min(n, i0 + kBlockRows), cols = colEnd(i0, i1), c0 = 0;
    auto [k0, k1] = kRange(i0, i1);
    if (i1 - i0 == kBlockRows)
      for (; c0 + W <= cols; c0 += W) {
        // A local accumulator block (not c itself): the compiler cannot prove c and b apart,
        // and would otherwise reload and store c on every k.
        T acc[kBlockRows][W];
        for (int64_t r = 0; r < kBlockRows; ++r)
          for (int64_t w = 0; w < W; ++w)
            acc[r][w] = accumulate ? c[(i0 + r) * ldc + c0 + w] : T(0);
        for (int64_t k = k0; k < k1; ++k) {
          const T *bk = b + k * ldb + c0;
          T a0 = at(i0, k), a1 = at(i0 + 1, k), a2 = at(i0 + 2, k), a3 = at(i0 + 3, k);
          T a4 = at(i0 + 4, k), a5 = at(i0 + 5, k), a6 = at(i0 + 6, k), a7 = at(i0 + 7, k);
#pragma omp simd
          for (int64_t w = 0; w < W; ++w) {
            acc[0][w] += a0 * bk[w];
            acc[1][w] += a1 * bk[w];
            acc[2][w] += a2 * bk[w];
            acc[3][w] += a3 * bk[w];
            acc[4][w] += a4 * bk[w];
            acc[5][w] += a5 * bk[w];
            acc[6][w] += a6 * bk[w];
            acc[7][w] += a7 * bk[w];
          }
        }
        for (int64_t r = 0; r < kBlockRows; ++r)
          for (int64_t w = 0; w < W; ++w)
            c[(i0 + r) * ldc + c0 + w] = acc[r][w];
      }
    // The rows of a short block, and the columns past the last full line (head dims that are
    // not a multiple of the line).
    for (int64_t i = i0; i < i1; ++i) {
      T *ci = c + i * ldc;
      if (!accumulate)
        std::fill(ci + c0, ci + cols, T(0));
      for (int64_t k = k0; k < k1; ++k) {
        T ak = at(i, k);
        const T *bk = b + k * ldb;
#pragma omp simd
        for (int64_t col = c0; col < cols; ++col)
          ci[col] += ak * bk[col];
      }
    }
  }
}

/// The constants of each floating-point format that expNormal (and the ordered bits) need.
template <typename T> struct ExpFormat;
template <> struct ExpFormat<float> {
  using Int = int32_t;
  static constexpr int kMantissa = 23, kBias = 127;
  static constexpr float kLo = -87.0f, kHi = 88.0f; // exp is a normal float in between
  static constexpr float kShift = 12582912.0f;      // 1.5 * 2^23
  // ln2 = kLn2Hi + kLn2Lo, kLn2Hi with 9 significant bits so that k * kLn2Hi is exact.
  static constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440054690583e-4f;
};
template <> struct ExpFormat<double> {
  using Int = int64_t;
  static constexpr int kMantissa = 52, kBias = 1023;
  static constexpr double kLo = -708.0, kHi = 709.0;
  static constexpr double kShift = 6755399441055744.0;         // 1.5 * 2^52
  static constexpr double kLn2Hi = 6.93147180369123816490e-01; // 32 significant bits
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
};

/// The bits of x as a signed integer that orders like x (negative values' magnitude bits
/// flipped); the map is its own inverse.
template <typename T> typename ExpFormat<T>::Int orderedBits(T x) {
  using Int = typename ExpFormat<T>::Int;
  Int i;
  std::memcpy(&i, &x, sizeof i);
  const Int magnitude = std::numeric_limits<Int>::max();
  return i ^ ((i >> (8 * sizeof(Int) - 1)) & magnitude);
}
template <typename T> T fromOrderedBits(typename ExpFormat<T>::Int i) {
  const auto magnitude = std::numeric_limits<typename ExpFormat<T>::Int>::max();
  i ^= (i >> (8 * sizeof i - 1)) & magnitude;
  T x;
  std::memcpy(&x, &i, sizeof x);
  return x;
}

/// exp(x) to a couple of ulp in plain arithmetic that vectorises inside a simd loop: std::exp
/// is a libm call per element, and was about a third of the run time. The kernels only take exp
/// of scores minus their row's maximum or log-sum-exp (<= 0 up to rounding), so the argument is
/// clamped to where exp is a normal number: anything smaller is as good as 0 next to a row sum
/// >= 1.
/// Method: x = k ln2 + r with k = round(x / ln2) (adding and subtracting 1.5 * 2^mantissa
/// rounds, and leaves k in the low bits of t), r reduced in two steps (ln2 = hi + lo with k *
/// hi exact), exp(r) by its Taylor series (|r| <= ln2/2: the first omitted term is below half
/// an ulp), times 2^k built in the exponent field.
/// Written for GCC's vectoriser under IEEE semantics (-ftrapping-math): no floating-point
/// comparisons (the clamp compares the ordered integer bits), and NaN carried through by adding
/// x - x (0 for finite x; NaN for NaN and for an infinite x, which finite inputs never give)
/// rather than by a select.
template <typename T> inline T expNormal(T x) {
  using F = ExpFormat<T>;
  using Int = typename F::Int;
  T x0 = x;
  Int bits = orderedBits(x), lo = orderedBits(F::kLo), hi = orderedBits(F::kHi);
  bits = bits < lo ? lo : bits;
  bits = bits > hi ? hi : bits;
  x = fromOrderedBits<T>(bits);
  T t = x * T(1.4426950408889634) + F::kShift, k = t - F::kShift;
  T r = x - k * F::kLn2Hi;
  r = r - k * F::kLn2Lo;
  // Horner over 1/n!, from n = 7 (float) or 13 (double) down to 0; written out, because a
  // loop here would keep the caller's simd loop from vectorising.
  T p;
  if constexpr (sizeof(T) == 4) {
    p = T(1.0 / 5040);
  } else {
    p = T(1.0 / 6227020800.0);
    p = p * r + T(1.0 / 479001600.0);
    p = p * r + T(1.0 / 39916800.0);
    p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0);
    p = p * r + T(1.0 / 40320.0);
    p = p * r + T(1.0 / 5040.0);
  }
  p = p * r + T(1.0 / 720);
  p = p * r + T(1.0 / 120);
  p = p * r + T(1.0 / 24);
  p = p * r + T(1.0 / 6);
  p = p * r + T(0.5);
  p = p * r + T(1);
  p = p * r + T(1);
  Int kBits, shiftBits;
  std::memcpy(&kBits, &t, sizeof kBits);
  std::memcpy(&shiftBits, &F::kShift, sizeof shiftBits);
  Int scaleBits = (kBits - shiftBits + F::kBias) << F::kMantissa;
  T scale;
  std::memcpy(&scale, &scaleBits, sizeof scale);
  return p * scale + (x0 - x0);
}

/// Recomputes the probabilities of one (query tile, key tile) pair in place over the scores:
/// p = exp(s * scale - lse_i) for the keys row i sees (j < min(m, i + diag + 1), diag = query
/// tile start - key tile start), 0 for the rest of the m keys.
template <typename T>
void probabilities(T *s, int64_t n, int64_t m, int64_t diag, T scale, const T *lse) {
  for (int64_t i = 0; i < n; ++i) {
    T *si = s + i * kTile, l = lse[i];
    int64_t end = std::min(m, i + diag + 1);
#pragma omp simd
    for (int64_t j = 0; j < end; ++j)
      si[j] = expNormal(si[j] * scale - l);
    std::fill(si + end, si + m, T(0));
  }
}

/// dS = P * (dP - D_i), in place over dP, on the keys each row sees; 0 on the rest.
template <typename T>
void scoreGrad(const T *p, T *dp, int64_t n, int64_t m, int64_t diag, const T *dRow) {
  for (int64_t i = 0; i < n; ++i) {
    const T *pi = p + i * kTile;
    T *di = dp + i * kTile, d = dRow[i];
    int64_t end = std::min(m, i + diag + 1);
#pragma omp simd
    for (int64_t j = 0; j < end; ++j)
      di[j] = pi[j] * (di[j] - d);
    std::fill(di + end, di + m, T(0));
  }
}

/// The causal limits of one (query tile, key tile) pair: the key tile has m rows and the query
/// tile starts diag rows after it (before it, diag < 0, in the cached step). Query rows [i0, i1)
/// (tile-local) see keys j < clamp(i1 + diag, 0, m); key rows [j0, j1) are seen by query rows
/// i >= j0 - diag. Rows of a block that need less find zeros in P and dS there.
struct Causal {
  int64_t m, diag, hd;
  int64_t keysSeen(int64_t, int64_t i1) const { return std::clamp<int64_t>(i1 + diag, 0, m); }
  std::pair<int64_t, int64_t> keys(int64_t i0, int64_t i1) const { return {0, keysSeen(i0, i1)}; }
  std::pair<int64_t, int64_t> queries(int64_t j0, int64_t, int64_t n) const {
    return {std::max<int64_t>(0, j0 - diag), n};
  }
};

/// s = x yt^T: scores (x = q, yt = K^T) or dP (x = dA, yt = V^T), on the keys each row block
/// sees, rounded up to whole register lines (at most kTile, a multiple of the line): the
/// columns past the keys seen or past the tile's m keys come from whatever yt holds there, are
/// never read, and cost less than the narrow remainder loop.
template <typename T>
void scores(const Causal &c, const T *x, int64_t stride, int64_t n, const T *yt, T *s) {
  constexpr int64_t W = kLineBytes / sizeof(T);
  static_assert(kTile % W == 0, "rounded-up columns must stay inside the tile");
  tileGemm<false>(
      n, x, stride, yt, kTile, s, kTile, false,
      [&](int64_t, int64_t) { return std::pair<int64_t, int64_t>(0, c.hd); },
      [&](int64_t i0, int64_t i1) { return (c.keysSeen(i0, i1) + W - 1) / W * W; });
}

/// out += p y: the probabilities times V (forward) or dS times K (dQ), p [n, kTile], y key
/// rows with stride yStride, out [n, hd].
template <typename T>
void accumulateRows(const Causal &c, const T *p, int64_t n, const T *y, int64_t yStride, T *out) {
  tileGemm<false>(
      n, p, kTile, y, yStride, out, c.hd, true,
      [&](int64_t i0, int64_t i1) { return c.keys(i0, i1); },
      [&](int64_t, int64_t) { return c.hd; });
}

/// out += p^T x: P^T dA (dV) or dS^T q (dK), p [n, kTile], x query rows with stride xStride,
/// out [m, hd].
template <typename T>
void accumulateCols(const Causal &c, const T *p, int64_t n, const T *x, int64_t xStride, T *out) {
  tileGemm<true>(
      c.m, p, kTile, x, xStride, out, c.hd, true,
      [&](int64_t j0, int64_t j1) { return c.queries(j0, j1, n); },
      [&](int64_t, int64_t) { return c.hd; });
}

/// The forward of one tile of n query rows of one head: query row i (tile-local) is at
/// position first + i and attends to key rows 0 .. first + i of k and v (row stride kvStride,
/// the head's KV columns already offset). out (row stride qStride) gets the attention output;
/// lse, when given, each row's log-sum-exp of the scaled scores. The training forward (first =
/// the tile's start) and the cached step (first = the cache position of the tile) share it.
template <typename T> struct FlashTile {
  std::vector<T> kt, sc, acc, mx, sum; // transposed K tile, scores, output rows, row stats
  explicit FlashTile(int64_t hd)
      : kt(hd * kTile), sc(kTile * kTile), acc(kTile * hd), mx(kTile), sum(kTile) {}

  void run(const T *q, int64_t qStride, int64_t n, int64_t first, const T *k, const T *v,
           int64_t kvStride, int64_t hd, T *out, T *lse) {
    using Bits = typename ExpFormat<T>::Int;
    const T scale = T(1) / std::sqrt(T(hd));
    const T negInf = -std::numeric_limits<T>::infinity();
    std::fill(acc.begin(), acc.end(), T(0));
    std::fill(mx.begin(), mx.end(), negInf);
    std::fill(sum.begin(), sum.end(), T(0));
    int64_t keys = first + n;
    for (int64_t j0 = 0; j0 < keys; j0 += kTile) {
      Causal c{std::min(kTile, keys - j0), first - j0, hd};
      const T *kj = k + j0 * kvStride, *vj = v + j0 * kvStride;
      if (n < kBlockRows) {
        // Fewer rows than a register block (a decode step): transposing the K tile would cost
        // as much as the products, so each score is a dot product along a contiguous K row.
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0, end = c.keysSeen(i, i + 1); j < end; ++j)
            sc[i * kTile + j] = dot(q + i * qStride, kj + j * kvStride, hd);
      } else {
        transposeTile(kj, kvStride, c.m, hd, kt.data());
        scores(c, q, qStride, n, kt.data(), sc.data());
      }
      // Online softmax: the row's running sum and output are rescaled by exp(old max - new
      // max), and the tile's scores become exp(score - new max) (0 past the causal limit).
      for (int64_t i = 0; i < n; ++i) {
        T *si = sc.data() + i * kTile;
        // A tile that starts after a row's position (first is no tile start in the cached step)
        // has keys the row does not see at all.
        int64_t end = std::clamp<int64_t>(i + c.diag + 1, 0, c.m);
        // The maximum is taken over the ordered integer bits: an integer max reduction
        // vectorises everywhere, a floating-point one not under IEEE semantics. (A NaN score
        // with the sign bit clear wins and turns the row into NaN, as it should.)
        Bits maxBits = orderedBits(negInf);
#pragma omp simd reduction(max : maxBits)
        for (int64_t j = 0; j < end; ++j) {
          si[j] *= scale;
          Bits bits = orderedBits(si[j]);
          maxBits = bits > maxBits ? bits : maxBits;
        }
        T newMax = std::max(mx[i], fromOrderedBits<T>(maxBits)), rowSum = 0;
        T alpha = mx[i] == negInf ? T(0) : std::exp(mx[i] - newMax);
#pragma omp simd reduction(+ : rowSum)
        for (int64_t j = 0; j < end; ++j) {
          si[j] = expNormal(si[j] - newMax);
          rowSum += si[j];
        }
        std::fill(si + end, si + c.m, T(0));
        mx[i] = newMax;
        sum[i] = sum[i] * alpha + rowSum;
        T *ai = acc.data() + i * hd;
#pragma omp simd
        for (int64_t e = 0; e < hd; ++e)
          ai[e] *= alpha;
      }
      accumulateRows(c, sc.data(), n, vj, kvStride, acc.data());
    }
    // Every row has at least its diagonal key, so sum >= 1 and the max is finite.
    for (int64_t i = 0; i < n; ++i) {
      T inv = T(1) / sum[i];
      for (int64_t e = 0; e < hd; ++e)
        out[i * qStride + e] = acc[i * hd + e] * inv;
      if (lse)
        lse[i] = mx[i] + std::log(sum[i]);
    }
  }
};

} // namespace

template <typename T>
void attentionForward(const AttentionShape &s, const T *q, const T *k, const T *v, T *a, T *lse) {
  Geometry g(s);
  if (g.empty())
    return;
  int64_t hd = g.hd;
#pragma omp parallel
  {
    FlashTile<T> tile(hd);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < g.queryTasks(); ++task) {
      auto [b, h, qt, i0, n] = g.queryTile(task);
      T *out = a + g.qAt(b, i0, h), *stat = lse + g.statAt(b, h, i0);
      if (!g.active(h)) {
        g.zeroRows(out, n);
        std::fill(stat, stat + n, T(0));
        continue;
      }
      int64_t kvh = h / g.group;
      tile.run(q + g.qAt(b, i0, h), g.qStride, n, i0, k + g.kvAt(b, 0, kvh), v + g.kvAt(b, 0, kvh),
               g.kvStride, hd, out, stat);
    }
  }
}

template <typename T>
void attentionBackward(const AttentionShape &s, const T *q, const T *k, const T *v, const T *a,
                       const T *lse, const T *da, T *dq, T *dk, T *dv) {
  Geometry g(s);
  if (g.empty())
    return;
  int64_t hd = g.hd, L = g.length;
  const T scale = T(1) / std::sqrt(T(hd));

  // D_i = sum_e dA[i, e] a[i, e] = sum_j P_ij dP_ij, the softmax backward's row term.
  std::vector<T> dRow(g.batch * g.heads * L, T(0));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < g.batch * L; ++r)
    for (int64_t h = 0; h < g.heads; ++h)
      if (g.active(h)) {
        const T *ar = a + r * g.qStride + h * hd, *dr = da + r * g.qStride + h * hd;
        T acc = 0;
        for (int64_t e = 0; e < hd; ++e)
          acc += dr[e] * ar[e];
        dRow[g.statAt(r / L, h, r % L)] = acc;
      }

#pragma omp parallel
  {
    std::vector<T> kt(hd * kTile), vt(hd * kTile), p(kTile * kTile), dp(kTile * kTile);
    std::vector<T> accK(kTile * hd), accV(kTile * hd);
    // P and dS of one (query tile, key tile) pair from the transposed K and V tiles in kt, vt.
    auto recompute = [&](const Causal &c, int64_t b, int64_t h, int64_t i0, int64_t n) {
      const T *qi = q + g.qAt(b, i0, h), *dai = da + g.qAt(b, i0, h);
      scores(c, qi, g.qStride, n, kt.data(), p.data());
      probabilities(p.data(), n, c.m, c.diag, scale, lse + g.statAt(b, h, i0));
      scores(c, dai, g.qStride, n, vt.data(), dp.data());
      scoreGrad(p.data(), dp.data(), n, c.m, c.diag, dRow.data() + g.statAt(b, h, i0));
    };

    // dK and dV: one task per (sequence, KV head, key tile), over the group's active query
    // heads and the query tiles that can see the key tile (those at or after it).
    int64_t kvTasks = g.batch * g.kvHeads * g.tiles;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < kvTasks; ++task) {
      int64_t b = task / (g.kvHeads * g.tiles), kvh = task / g.tiles % g.kvHeads;
      int64_t ktile = task % g.tiles, j0 = ktile * kTile, m = g.rows(ktile);
      std::fill(accK.begin(), accK.end(), T(0));
      std::fill(accV.begin(), accV.end(), T(0));
      transposeTile(k + g.kvAt(b, j0, kvh), g.kvStride, m, hd, kt.data());
      transposeTile(v + g.kvAt(b, j0, kvh), g.kvStride, m, hd, vt.data());
      for (int64_t h = kvh * g.group; h < kvh * g.group + g.qActive; ++h)
        for (int64_t qt = ktile; qt < g.tiles; ++qt) {
          int64_t i0 = qt * kTile, n = g.rows(qt);
          Causal c{m, i0 - j0, hd};
          recompute(c, b, h, i0, n);
          accumulateCols(c, p.data(), n, da + g.qAt(b, i0, h), g.qStride, accV.data());
          accumulateCols(c, dp.data(), n, q + g.qAt(b, i0, h), g.qStride, accK.data());
        }
      for (int64_t j = 0; j < m; ++j)
        for (int64_t e = 0; e < hd; ++e) {
          dk[g.kvAt(b, j0 + j, kvh) + e] = accK[j * hd + e] * scale;
          dv[g.kvAt(b, j0 + j, kvh) + e] = accV[j * hd + e];
        }
    }

    // dQ: one task per (sequence, query head, query tile), over the key tiles up to the
    // diagonal. accK serves as the dQ accumulator.
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < g.queryTasks(); ++task) {
      auto [b, h, qt, i0, n] = g.queryTile(task);
      T *out = dq + g.qAt(b, i0, h);
      if (!g.active(h)) {
        g.zeroRows(out, n);
        continue;
      }
      int64_t kvh = h / g.group;
      std::fill(accK.begin(), accK.end(), T(0));
      for (int64_t ktile = 0; ktile <= qt; ++ktile) {
        int64_t j0 = ktile * kTile;
        Causal c{g.rows(ktile), i0 - j0, hd};
        const T *kj = k + g.kvAt(b, j0, kvh);
        transposeTile(kj, g.kvStride, c.m, hd, kt.data());
        transposeTile(v + g.kvAt(b, j0, kvh), g.kvStride, c.m, hd, vt.data());
        recompute(c, b, h, i0, n);
        accumulateRows(c, dp.data(), n, kj, g.kvStride, accK.data());
      }
      for (int64_t i = 0; i < n; ++i)
        for (int64_t e = 0; e < hd; ++e)
          out[i * g.qStride + e] = accK[i * hd + e] * scale;
    }
  }
}

template <typename T>
void attentionStep(const AttentionShape &s, int64_t context, int64_t position, const T *q,
                   const T *k, const T *v, T *kCache, T *vCache, T *a) {
  Geometry g(s);
  if (g.empty())
    return;
  int64_t B = g.batch, L = g.length, hd = g.hd;
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(k + b * L * g.kvStride, L * g.kvStride,
                kCache + (b * context + position) * g.kvStride);
    std::copy_n(v + b * L * g.kvStride, L * g.kvStride,
                vCache + (b * context + position) * g.kvStride);
  }
  // The new tokens are query tiles at cache rows position + i0 over the cache, as in the
  // training forward (a prompt read in one piece gets its forward's tiles).
  int64_t work = B * g.heads * L * (position + L) * hd;
#pragma omp parallel if (work > (1 << 16))
  {
    FlashTile<T> tile(hd);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < g.queryTasks(); ++task) {
      auto [b, h, qt, i0, n] = g.queryTile(task);
      T *out = a + g.qAt(b, i0, h);
      if (!g.active(h)) {
        g.zeroRows(out, n);
        continue;
      }
      int64_t kvh = h / g.group;
      const T *kc = kCache + b * context * g.kvStride + kvh * hd;
      const T *vc = vCache + b * context * g.kvStride + kvh * hd;
      tile.run(q + g.qAt(b, i0, h), g.qStride, n, position + i0, kc, vc, g.kvStride, hd, out,
               nullptr);
    }
  }
}

template void attentionStep<float>(const AttentionShape &, int64_t, int64_t, const float *,
                                   const float *, const float *, float *, float *, float *);
template void attentionStep<double>(const AttentionShape &, int64_t, int64_t, const double *,
                                    const double *, const double *, double *, double *, double *);
template void attentionForward<float>(const AttentionShape &, const float *, const float *,
                                      const float *, float *, float *);
template void attentionForward<double>(const AttentionShape &, const double *, const double *,
                                       const double *, double *, double *);
template void attentionBackward<float>(const AttentionShape &, const float *, const float *,
                                       const float *, const float *, const float *, const float *,
                                       float *, float *, float *);
template void attentionBackward<double>(const AttentionShape &, const double *, const double *,
                                        const double *, const double *, const double *,
                                        const double *, double *, double *, double *);

} // namespace nestor::cpu
