//===- Attention.cpp - CUDA emitters of the attention kernels -------------------------===//
//
// Causal GQA flash attention (semantics: lib/codegen/cpu/Attention.cpp and Kernels.h,
// "Causal GQA attention"), in float32 or float64 SIMT arithmetic (no tensor cores, so that the
// results match the CPU kernel to rounding).
//
// Every kernel works on pairs of tiles: an "A" tile of 4 * RG rows that the block owns (query
// rows in the forward and dQ, key rows in dK/dV) and a "B" tile of 4 * CG rows it streams past
// them (keys, or query rows). Thread (rg, cg) of the RG x CG threads computes the 4 x 4 scores
// of A rows rg + RG i and B rows cg + CG j (rows interleaved so that a warp's shared-memory
// reads hit distinct banks), and owns the output rows rg + RG i at the head-dim columns
// 4 cg + 4 CG u + w of each chunk. Tiles live in shared memory row-major over the head dim,
// in chunks of E columns: one chunk (E >= head_dim) keeps the block's own tile resident; when
// the tiles of a whole head do not fit in 48 KiB the head dim is streamed chunk by chunk (and
// the own tile re-read from L2). Probabilities (or dS) go through shared memory as
// [B row][4 rg + i], so that both the writes and the row reads are float4 accesses.
//
// Launches (grid x, y, z; block):
// - attention_forward: (query tiles, heads, batch); RG * CG threads. Online softmax over key
//   tiles 0 .. the diagonal; row maxima and final sums combined through shared memory.
// - attention_grad_rowdot: D_i = sum_e dA a per (row, head), grid-stride, into scratch 0.
// - attention_grad_dkdv: (key tiles, KV heads, batch); loops over the group's active query
//   heads and the query tiles at or after the key tile, owning its dK/dV rows (no atomics).
// - attention_grad_dq: (query tiles, heads, batch); key tiles 0 .. the diagonal.
// Everything is deterministic: each output element is summed by one thread in a fixed order.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;
using Kind = KernelArg::Kind;

namespace {

/// Shared memory one block may use without opting in to more (the runtime launches with the
/// default limit).
constexpr int64_t kSharedLimit = 48 * 1024;

/// The sizes an attention op's types fix.
struct Shape {
  int64_t batch = 0, length = 0, heads = 0, kvHeads = 0, headDim = 0;
  bool isDouble = false;
  int64_t elementBytes() const { return isDouble ? 8 : 4; }
};

/// Checks the operand types against the head counts (the ops have no verifier) and reads the
/// sizes: q [B, L, nh*hd], k and v [B, L, nkv*hd], lse [B, nh, L], all of one element type.
LogicalResult readShape(Operation *op, Value q, Value k, Value v, Value lse, int64_t nh,
                        int64_t nkv, int64_t hd, Shape &s) {
  auto qt = cast<RankedTensorType>(q.getType());
  auto kt = cast<RankedTensorType>(k.getType());
  auto vt = cast<RankedTensorType>(v.getType());
  auto lt = cast<RankedTensorType>(lse.getType());
  if (qt.getRank() != 3 || kt.getRank() != 3 || vt != kt || lt.getRank() != 3)
    return op->emitError("expects q, k, v of rank 3 (k and v of one type) and lse of rank 3");
  if (!qt.hasStaticShape() || !kt.hasStaticShape() || !lt.hasStaticShape())
    return op->emitError("expects static shapes");
  if (nh % nkv != 0)
    return op->emitError("num_heads (")
           << nh << ") is not a multiple of num_kv_heads (" << nkv << ")";
  s.batch = qt.getDimSize(0);
  s.length = qt.getDimSize(1);
  s.heads = nh;
  s.kvHeads = nkv;
  s.headDim = hd;
  if (qt.getDimSize(2) != nh * hd || kt.getDimSize(0) != s.batch || kt.getDimSize(1) != s.length ||
      kt.getDimSize(2) != nkv * hd)
    return op->emitError("q must be [B, L, num_heads * head_dim] and k, v [B, L, num_kv_heads "
                         "* head_dim]");
  if (lt.getDimSize(0) != s.batch || lt.getDimSize(1) != nh || lt.getDimSize(2) != s.length)
    return op->emitError("lse must be [B, num_heads, L]");
  Type e = qt.getElementType();
  if (kt.getElementType() != e || lt.getElementType() != e)
    return op->emitError("expects one element type for q, k, v and lse");
  s.isDouble = e.isF64();
  if (s.batch <= 0 || s.length <= 0 || s.batch > 65535 || nh > 65535)
    return op->emitError("batch and num_heads must be in [1, 65535], and the length positive");
  return success();
}

/// One kernel's tiling: RG x CG threads, A tile 4 RG rows, B tile 4 CG rows, E head-dim
/// columns per chunk (a multiple of 4 CG).
struct TileChoice {
  int64_t rg = 0, cg = 0, e = 0, bytes = 0;
  int64_t threads() const { return rg * cg; }
  int64_t aRows() const { return 4 * rg; }
};

/// Shared-memory elements of a tiling, from its A rows, B rows, chunk row stride and P row
/// stride.
using SharedElements =
    std::function<int64_t(int64_t a, int64_t b, int64_t ld, int64_t ldp, int64_t cg)>;

/// The first tiling whose shared memory fits: the largest A tile first, then the widest chunk
/// (the whole head, then 64 and 32 columns).
std::optional<TileChoice> chooseTile(const Shape &s, const SharedElements &elements) {
  const int64_t cg = 8;
  for (int64_t rg : {16, 8, 4}) {
    int64_t whole = (s.headDim + 4 * cg - 1) / (4 * cg) * (4 * cg);
    for (int64_t e : {whole, int64_t(64), int64_t(32)}) {
      if (e > whole)
        continue;
      int64_t bytes = elements(4 * rg, 4 * cg, e + 4, 4 * rg + 4, cg) * s.elementBytes();
      if (bytes <= kSharedLimit)
        return TileChoice{rg, cg, e, bytes};
    }
  }
  return std::nullopt;
}

/// Device code shared by both ops, after the shape constants and `T`.
constexpr const char *kHelpers = R"cuda(
namespace attn {

__device__ __forceinline__ float expT(float x) { return expf(x); }
__device__ __forceinline__ double expT(double x) { return exp(x); }
__device__ __forceinline__ float logT(float x) { return logf(x); }
__device__ __forceinline__ double logT(double x) { return log(x); }

/// Four consecutive elements from (or to) 16-byte aligned shared memory.
__device__ __forceinline__ void load4(const float *p, float (&v)[4]) {
  const float4 t = *reinterpret_cast<const float4 *>(p);
  v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void load4(const double *p, double (&v)[4]) {
  const double2 t0 = reinterpret_cast<const double2 *>(p)[0];
  const double2 t1 = reinterpret_cast<const double2 *>(p)[1];
  v[0] = t0.x, v[1] = t0.y, v[2] = t1.x, v[3] = t1.y;
}
__device__ __forceinline__ void store4(float *p, float a, float b, float c, float d) {
  *reinterpret_cast<float4 *>(p) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store4(double *p, double a, double b, double c, double d) {
  reinterpret_cast<double2 *>(p)[0] = make_double2(a, b);
  reinterpret_cast<double2 *>(p)[1] = make_double2(c, d);
}

/// A tiling (see the file comment of lib/codegen/cuda/emit/Attention.cpp).
template <int RG_, int CG_, int E_> struct Tile {
  static constexpr int RG = RG_, CG = CG_, E = E_;
  static constexpr int kThreads = RG * CG;
  static constexpr int A = 4 * RG, B = 4 * CG; // rows of the own and the streamed tile
  static constexpr int Ld = E + 4;             // row stride of a chunk tile
  static constexpr int LdP = A + 4;            // row stride of the probability tile
  static constexpr int NC = (kHd + E - 1) / E; // head-dim chunks
  static constexpr int U = E / (4 * CG);       // 4-column groups per thread and chunk
  /// Columns of chunk c that hold data, rounded up to 4 (the rest of the chunk is zero).
  static __device__ __forceinline__ int width(int c) {
    return c + 1 < NC ? E : (kHd - c * E + 3) / 4 * 4;
  }
};

/// dst[r * Ld + c] = src[r * stride + c0 + c] for r < valid and c0 + c < kHd, else 0 (r < Rows,
/// c < E). Consecutive threads read consecutive columns.
template <class C, int Rows>
__device__ __forceinline__ void loadTile(T *dst, const T *__restrict__ src, long long stride,
                                         int valid, int c0) {
  for (int idx = threadIdx.x; idx < Rows * C::E; idx += C::kThreads) {
    const int r = idx / C::E, c = idx % C::E;
    T x = T(0);
    if (r < valid && c0 + c < kHd)
      x = src[r * stride + c0 + c];
    dst[r * C::Ld + c] = x;
  }
}

/// s[i][j] += sum_{e < w} a[(rg + RG i) * Ld + e] * b[(cg + CG j) * Ld + e].
template <class C>
__device__ __forceinline__ void scoreTile(T (&s)[4][4], const T *a, const T *b, int rg, int cg,
                                          int w) {
#pragma unroll 2
  for (int e = 0; e < w; e += 4) {
    T x[4][4], y[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      load4(a + (rg + C::RG * i) * C::Ld + e, x[i]);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      load4(b + (cg + C::CG * j) * C::Ld + e, y[j]);
#pragma unroll
    for (int t = 0; t < 4; ++t)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          s[i][j] += x[i][t] * y[j][t];
  }
}

/// acc[u][i][w] += sum_{b < B} p[b * LdP + 4 rg + i] * x[b * Ld + 4 cg + 4 CG u + w]: the
/// probability tile (A row rg + RG i stored at column 4 rg + i) times a streamed chunk.
template <class C>
__device__ __forceinline__ void accumulateTile(T (&acc)[C::U][4][4], const T *p, const T *x,
                                               int rg, int cg) {
#pragma unroll 4
  for (int b = 0; b < C::B; ++b) {
    T pv[4];
    load4(p + b * C::LdP + 4 * rg, pv);
#pragma unroll
    for (int u = 0; u < C::U; ++u) {
      T xv[4];
      load4(x + b * C::Ld + 4 * cg + 4 * C::CG * u, xv);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int w = 0; w < 4; ++w)
          acc[u][i][w] += pv[i] * xv[w];
    }
  }
}

/// Stores the thread's 4 x 4 tile v (A row rg + RG i, B row cg + CG j) at p[(cg + CG j) * LdP +
/// 4 rg + i].
template <class C>
__device__ __forceinline__ void storeTile(T *p, const T (&v)[4][4], int rg, int cg) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    store4(p + (cg + C::CG * j) * C::LdP + 4 * rg, v[0][j], v[1][j], v[2][j], v[3][j]);
}

/// Writes rows rg + RG i < rows of acc * factor to out (row stride `stride`), columns < kHd.
template <class C>
__device__ __forceinline__ void storeRows(T *out, long long stride, int rows,
                                          const T (&acc)[C::NC][C::U][4][4], const T (&factor)[4],
                                          int rg, int cg) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = rg + C::RG * i;
    if (r >= rows)
      continue;
#pragma unroll
    for (int c = 0; c < C::NC; ++c)
#pragma unroll
      for (int u = 0; u < C::U; ++u)
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          const int e = c * C::E + 4 * cg + 4 * C::CG * u + w;
          if (e < kHd)
            out[r * stride + e] = acc[c][u][i][w] * factor[i];
        }
  }
}

/// Zeroes rows [0, rows) x [0, kHd) of out (an inactive head).
template <class C>
__device__ __forceinline__ void zeroRows(T *out, long long stride, int rows) {
  for (int idx = threadIdx.x; idx < rows * kHd; idx += C::kThreads)
    out[(idx / kHd) * stride + idx % kHd] = T(0);
}

} // namespace attn
)cuda";

constexpr const char *kForwardBody = R"cuda(
  typedef FwdTile C;
  using namespace attn;
  const int tid = threadIdx.x, rg = tid / C::CG, cg = tid % C::CG;
  // The last query tiles have the most key tiles: they are scheduled first.
  const int h = blockIdx.y, bat = blockIdx.z, i0 = (gridDim.x - 1 - blockIdx.x) * C::A;
  const int rows = min(C::A, kLen - i0);
  T *out = a + ((long long)bat * kLen + i0) * kQStride + (long long)h * kHd;
  T *stat = lse + ((long long)bat * kHeads + h) * kLen + i0;
  if (h % kGroup >= qActive) { // an inactive head: outputs and lse 0 (uniform per block)
    zeroRows<C>(out, kQStride, rows);
    for (int r = tid; r < rows; r += C::kThreads)
      stat[r] = T(0);
    return;
  }
  const int kvh = h / kGroup;
  T *qs = nestor::dynamicShared<T>();
  T *ks = qs + C::A * C::Ld, *vs = ks + C::B * C::Ld, *ps = vs + C::B * C::Ld;
  T *red = ps + C::B * C::LdP; // [A row][cg]: per-thread row maxima, then row sums
  const T *qTile = q + ((long long)bat * kLen + i0) * kQStride + (long long)h * kHd;
  const T *kHead = k + (long long)bat * kLen * kKvStride + (long long)kvh * kHd;
  const T *vHead = v + (long long)bat * kLen * kKvStride + (long long)kvh * kHd;
  if (C::NC == 1)
    loadTile<C, C::A>(qs, qTile, kQStride, rows, 0);

  T o[C::NC][C::U][4][4], m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = negInf();
    l[i] = T(0);
#pragma unroll
    for (int c = 0; c < C::NC; ++c)
#pragma unroll
      for (int u = 0; u < C::U; ++u)
#pragma unroll
        for (int w = 0; w < 4; ++w)
          o[c][u][i][w] = T(0);
  }
  // Key tiles up to the one holding the tile's last row.
  const int tiles = (i0 + rows - 1) / C::B + 1;
  for (int kt = 0; kt < tiles; ++kt) {
    const int j0 = kt * C::B, keys = min(C::B, kLen - j0);
    const T *kTile = kHead + (long long)j0 * kKvStride, *vTile = vHead + (long long)j0 * kKvStride;
    T s[4][4] = {};
    if (C::NC == 1) {
      loadTile<C, C::B>(ks, kTile, kKvStride, keys, 0);
      loadTile<C, C::B>(vs, vTile, kKvStride, keys, 0);
      __syncthreads();
      scoreTile<C>(s, qs, ks, rg, cg, C::width(0));
    } else {
#pragma unroll
      for (int c = 0; c < C::NC; ++c) {
        loadTile<C, C::A>(qs, qTile, kQStride, rows, c * C::E);
        loadTile<C, C::B>(ks, kTile, kKvStride, keys, c * C::E);
        __syncthreads();
        scoreTile<C>(s, qs, ks, rg, cg, C::width(c));
        __syncthreads();
      }
    }
    // Scaled scores, -inf past the causal limit; the thread's part of each row maximum.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = i0 + rg + C::RG * i;
      T mx = negInf();
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int key = j0 + cg + C::CG * j;
        s[i][j] = key <= row ? s[i][j] * kScale : negInf();
        mx = s[i][j] > mx ? s[i][j] : mx;
      }
      red[(rg + C::RG * i) * C::CG + cg] = mx;
    }
    __syncthreads();
    // Online softmax: rescale the row's sum and output by exp(old max - new max). Key 0 is in
    // tile 0 and every row sees it, so the maximum is finite from the first tile on.
    T p[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      T mx = negInf();
      for (int t = 0; t < C::CG; ++t) {
        const T x = red[(rg + C::RG * i) * C::CG + t];
        mx = x > mx ? x : mx;
      }
      const T newMax = mx > m[i] ? mx : m[i];
      const T alpha = m[i] == negInf() ? T(0) : expT(m[i] - newMax);
      T sum = T(0);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        p[i][j] = s[i][j] == negInf() ? T(0) : expT(s[i][j] - newMax);
        sum += p[i][j];
      }
      l[i] = l[i] * alpha + sum;
      m[i] = newMax;
#pragma unroll
      for (int c = 0; c < C::NC; ++c)
#pragma unroll
        for (int u = 0; u < C::U; ++u)
#pragma unroll
          for (int w = 0; w < 4; ++w)
            o[c][u][i][w] *= alpha;
    }
    storeTile<C>(ps, p, rg, cg);
    if (C::NC == 1) {
      __syncthreads();
      accumulateTile<C>(o[0], ps, vs, rg, cg);
      __syncthreads();
    } else {
#pragma unroll
      for (int c = 0; c < C::NC; ++c) {
        loadTile<C, C::B>(vs, vTile, kKvStride, keys, c * C::E);
        __syncthreads();
        accumulateTile<C>(o[c], ps, vs, rg, cg);
        __syncthreads();
      }
    }
  }
  // Row sums: the threads' parts, added in cg order.
#pragma unroll
  for (int i = 0; i < 4; ++i)
    red[(rg + C::RG * i) * C::CG + cg] = l[i];
  __syncthreads();
  T inv[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = rg + C::RG * i;
    T total = T(0);
    for (int t = 0; t < C::CG; ++t)
      total += red[r * C::CG + t];
    inv[i] = T(1) / total;
    if (cg == 0 && r < rows)
      stat[r] = m[i] + logT(total);
  }
  storeRows<C>(out, kQStride, rows, o, inv, rg, cg);
}
)cuda";

constexpr const char *kRowDotBody = R"cuda(
  T *rowTerm = static_cast<T *>(scratch);
  for (long long idx : nestor::gridStride((long long)kBatch * kLen * kHeads)) {
    const long long r = idx / kHeads;
    const int h = idx % kHeads;
    if (h % kGroup >= qActive)
      continue;
    const T *ar = out + r * kQStride + (long long)h * kHd, *dr = da + r * kQStride + (long long)h * kHd;
    T acc = T(0);
    for (int e = 0; e < kHd; ++e)
      acc += dr[e] * ar[e];
    rowTerm[((r / kLen) * kHeads + h) * kLen + r % kLen] = acc;
  }
}
)cuda";

constexpr const char *kDkDvBody = R"cuda(
  typedef DkvTile C;
  using namespace attn;
  const int tid = threadIdx.x, rg = tid / C::CG, cg = tid % C::CG;
  const int kvh = blockIdx.y, bat = blockIdx.z, j0 = blockIdx.x * C::A;
  const int keys = min(C::A, kLen - j0);
  const T *rowTerm = static_cast<const T *>(scratch);
  T *ks = nestor::dynamicShared<T>();
  T *vs = ks + C::A * C::Ld, *qs = vs + C::A * C::Ld, *dos = qs + C::B * C::Ld;
  T *ps = dos + C::B * C::Ld, *dss = ps + C::B * C::LdP;
  const T *kTile = k + ((long long)bat * kLen + j0) * kKvStride + (long long)kvh * kHd;
  const T *vTile = v + ((long long)bat * kLen + j0) * kKvStride + (long long)kvh * kHd;
  if (C::NC == 1) {
    loadTile<C, C::A>(ks, kTile, kKvStride, keys, 0);
    loadTile<C, C::A>(vs, vTile, kKvStride, keys, 0);
  }
  T accK[C::NC][C::U][4][4], accV[C::NC][C::U][4][4];
#pragma unroll
  for (int c = 0; c < C::NC; ++c)
#pragma unroll
    for (int u = 0; u < C::U; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int w = 0; w < 4; ++w)
          accK[c][u][i][w] = accV[c][u][i][w] = T(0);
  const int active = qActive < 0 ? 0 : (qActive > kGroup ? kGroup : (int)qActive);
  const int qt0 = j0 / C::B, qTiles = (kLen + C::B - 1) / C::B;
  for (int hh = 0; hh < active; ++hh) {
    const int h = kvh * kGroup + hh;
    const T *qHead = q + (long long)bat * kLen * kQStride + (long long)h * kHd;
    const T *doHead = da + (long long)bat * kLen * kQStride + (long long)h * kHd;
    const T *lseHead = lse + ((long long)bat * kHeads + h) * kLen;
    const T *dHead = rowTerm + ((long long)bat * kHeads + h) * kLen;
    // The query tiles at or after the key tile: the only ones that see its keys.
    for (int qt = qt0; qt < qTiles; ++qt) {
      const int i0 = qt * C::B, rows = min(C::B, kLen - i0);
      const T *qTile = qHead + (long long)i0 * kQStride, *doTile = doHead + (long long)i0 * kQStride;
      T s[4][4] = {}, dp[4][4] = {};
      if (C::NC == 1) {
        loadTile<C, C::B>(qs, qTile, kQStride, rows, 0);
        loadTile<C, C::B>(dos, doTile, kQStride, rows, 0);
        __syncthreads();
        scoreTile<C>(s, ks, qs, rg, cg, C::width(0));
        scoreTile<C>(dp, vs, dos, rg, cg, C::width(0));
      } else {
#pragma unroll
        for (int c = 0; c < C::NC; ++c) {
          loadTile<C, C::A>(ks, kTile, kKvStride, keys, c * C::E);
          loadTile<C, C::A>(vs, vTile, kKvStride, keys, c * C::E);
          loadTile<C, C::B>(qs, qTile, kQStride, rows, c * C::E);
          loadTile<C, C::B>(dos, doTile, kQStride, rows, c * C::E);
          __syncthreads();
          scoreTile<C>(s, ks, qs, rg, cg, C::width(c));
          scoreTile<C>(dp, vs, dos, rg, cg, C::width(c));
          __syncthreads();
        }
      }
      // P^T and dS^T = P^T (dP^T - D) on the (key, query) pairs with query >= key < L.
      T rowLse[4], rowD[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int b = cg + C::CG * j;
        rowLse[j] = b < rows ? lseHead[i0 + b] : T(0);
        rowD[j] = b < rows ? dHead[i0 + b] : T(0);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int key = j0 + rg + C::RG * i, row = i0 + cg + C::CG * j;
          const T pr = row >= key && row < kLen ? expT(s[i][j] * kScale - rowLse[j]) : T(0);
          s[i][j] = pr;
          dp[i][j] = pr * (dp[i][j] - rowD[j]);
        }
      storeTile<C>(ps, s, rg, cg);
      storeTile<C>(dss, dp, rg, cg);
      // dV += P^T dA, dK += dS^T q.
      if (C::NC == 1) {
        __syncthreads();
        accumulateTile<C>(accV[0], ps, dos, rg, cg);
        accumulateTile<C>(accK[0], dss, qs, rg, cg);
        __syncthreads();
      } else {
#pragma unroll
        for (int c = 0; c < C::NC; ++c) {
          loadTile<C, C::B>(qs, qTile, kQStride, rows, c * C::E);
          loadTile<C, C::B>(dos, doTile, kQStride, rows, c * C::E);
          __syncthreads();
          accumulateTile<C>(accV[c], ps, dos, rg, cg);
          accumulateTile<C>(accK[c], dss, qs, rg, cg);
          __syncthreads();
        }
      }
    }
  }
  const T scale[4] = {kScale, kScale, kScale, kScale}, one[4] = {T(1), T(1), T(1), T(1)};
  storeRows<C>(dk + ((long long)bat * kLen + j0) * kKvStride + (long long)kvh * kHd, kKvStride,
               keys, accK, scale, rg, cg);
  storeRows<C>(dv + ((long long)bat * kLen + j0) * kKvStride + (long long)kvh * kHd, kKvStride,
               keys, accV, one, rg, cg);
}
)cuda";

constexpr const char *kDqBody = R"cuda(
  typedef DqTile C;
  using namespace attn;
  const int tid = threadIdx.x, rg = tid / C::CG, cg = tid % C::CG;
  // The last query tiles have the most key tiles: they are scheduled first.
  const int h = blockIdx.y, bat = blockIdx.z, i0 = (gridDim.x - 1 - blockIdx.x) * C::A;
  const int rows = min(C::A, kLen - i0);
  T *out = dq + ((long long)bat * kLen + i0) * kQStride + (long long)h * kHd;
  if (h % kGroup >= qActive) { // an inactive head: dq 0 (uniform per block)
    zeroRows<C>(out, kQStride, rows);
    return;
  }
  const int kvh = h / kGroup;
  const T *rowTerm = static_cast<const T *>(scratch);
  T *qs = nestor::dynamicShared<T>();
  T *dos = qs + C::A * C::Ld, *ks = dos + C::A * C::Ld, *vs = ks + C::B * C::Ld;
  T *ps = vs + C::B * C::Ld;
  const long long at = ((long long)bat * kLen + i0) * kQStride + (long long)h * kHd;
  const T *qTile = q + at, *doTile = da + at;
  const T *kHead = k + (long long)bat * kLen * kKvStride + (long long)kvh * kHd;
  const T *vHead = v + (long long)bat * kLen * kKvStride + (long long)kvh * kHd;
  const long long statAt = ((long long)bat * kHeads + h) * kLen + i0;
  T rowLse[4], rowD[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = rg + C::RG * i;
    rowLse[i] = r < rows ? lse[statAt + r] : T(0);
    rowD[i] = r < rows ? rowTerm[statAt + r] : T(0);
  }
  if (C::NC == 1) {
    loadTile<C, C::A>(qs, qTile, kQStride, rows, 0);
    loadTile<C, C::A>(dos, doTile, kQStride, rows, 0);
  }
  T acc[C::NC][C::U][4][4];
#pragma unroll
  for (int c = 0; c < C::NC; ++c)
#pragma unroll
    for (int u = 0; u < C::U; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int w = 0; w < 4; ++w)
          acc[c][u][i][w] = T(0);
  const int tiles = (i0 + rows - 1) / C::B + 1;
  for (int kt = 0; kt < tiles; ++kt) {
    const int j0 = kt * C::B, keys = min(C::B, kLen - j0);
    const T *kTile = kHead + (long long)j0 * kKvStride, *vTile = vHead + (long long)j0 * kKvStride;
    T s[4][4] = {}, dp[4][4] = {};
    if (C::NC == 1) {
      loadTile<C, C::B>(ks, kTile, kKvStride, keys, 0);
      loadTile<C, C::B>(vs, vTile, kKvStride, keys, 0);
      __syncthreads();
      scoreTile<C>(s, qs, ks, rg, cg, C::width(0));
      scoreTile<C>(dp, dos, vs, rg, cg, C::width(0));
    } else {
#pragma unroll
      for (int c = 0; c < C::NC; ++c) {
        loadTile<C, C::A>(qs, qTile, kQStride, rows, c * C::E);
        loadTile<C, C::A>(dos, doTile, kQStride, rows, c * C::E);
        loadTile<C, C::B>(ks, kTile, kKvStride, keys, c * C::E);
        loadTile<C, C::B>(vs, vTile, kKvStride, keys, c * C::E);
        __syncthreads();
        scoreTile<C>(s, qs, ks, rg, cg, C::width(c));
        scoreTile<C>(dp, dos, vs, rg, cg, C::width(c));
        __syncthreads();
      }
    }
    // dS = P (dP - D) on the keys each row sees, 0 past the causal limit.
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int row = i0 + rg + C::RG * i, key = j0 + cg + C::CG * j;
        const T pr = key <= row ? expT(s[i][j] * kScale - rowLse[i]) : T(0);
        dp[i][j] = pr * (dp[i][j] - rowD[i]);
      }
    storeTile<C>(ps, dp, rg, cg);
    // dQ += dS k.
    if (C::NC == 1) {
      __syncthreads();
      accumulateTile<C>(acc[0], ps, ks, rg, cg);
      __syncthreads();
    } else {
#pragma unroll
      for (int c = 0; c < C::NC; ++c) {
        loadTile<C, C::B>(ks, kTile, kKvStride, keys, c * C::E);
        __syncthreads();
        accumulateTile<C>(acc[c], ps, ks, rg, cg);
        __syncthreads();
      }
    }
  }
  const T scale[4] = {kScale, kScale, kScale, kScale};
  storeRows<C>(out, kQStride, rows, acc, scale, rg, cg);
}
)cuda";

/// `T`, the shape constants, -infinity and the helpers.
void writeCommon(llvm::raw_ostream &os, const Shape &s) {
  double scale =
      s.isDouble ? 1.0 / std::sqrt(double(s.headDim)) : double(1.0f / std::sqrt(float(s.headDim)));
  os << "typedef " << (s.isDouble ? "double" : "float") << " T;\n";
  os << "constexpr int kBatch = " << s.batch << ", kLen = " << s.length << ", kHeads = " << s.heads
     << ", kKvHeads = " << s.kvHeads << ", kHd = " << s.headDim
     << ", kGroup = " << s.heads / s.kvHeads << ";\n";
  os << "constexpr long long kQStride = " << s.heads * s.headDim
     << ", kKvStride = " << s.kvHeads * s.headDim << ";\n";
  os << "constexpr T kScale = " << doubleLiteral(scale) << "; // 1 / sqrt(head_dim) in T\n";
  os << "__device__ __forceinline__ T negInf() { return "
     << (s.isDouble ? "__longlong_as_double((long long)0xfff0000000000000ull)"
                    : "nestor::negativeInfinity()")
     << "; }\n";
  os << kHelpers;
}

void writeTile(llvm::raw_ostream &os, llvm::StringRef name, const TileChoice &t) {
  os << "typedef attn::Tile<" << t.rg << ", " << t.cg << ", " << t.e << "> " << name << ";\n";
}

LogicalResult noTile(Operation *op, const Shape &s) {
  return op->emitError("head_dim ") << s.headDim << " needs more than " << kSharedLimit
                                    << " bytes of shared memory per block in every tiling";
}

Dim3 tileGrid(int64_t tiles, int64_t heads, int64_t batch) {
  Dim3 d;
  d.x = tiles, d.y = heads, d.z = batch;
  return d;
}

/// a = softmax(q k^T / sqrt(hd), causal) v per head, and lse; see kForwardBody.
struct AttentionEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<AttentionEmitter, kernel::AttentionOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto att = cast<kernel::AttentionOp>(op);
    Shape s;
    if (failed(readShape(op, att.getQ(), att.getK(), att.getV(), att.getLse(), att.getNumHeads(),
                         att.getNumKvHeads(), att.getHeadDim(), s)))
      return failure();
    bool dense = att.getPrefixDense() && att.getHeads();
    auto tile = chooseTile(s, [](int64_t a, int64_t b, int64_t ld, int64_t ldp, int64_t cg) {
      return a * ld + 2 * b * ld + b * ldp + a * cg;
    });
    if (!tile)
      return noTile(op, s);
    unsigned headsIndex = att.getODSOperandIndexAndLength(3).first;

    Launch l;
    l.entry = "attention_forward";
    l.grid = tileGrid((s.length + tile->aRows() - 1) / tile->aRows(), s.heads, s.batch);
    l.block.x = tile->threads();
    l.sharedBytes = tile->bytes;
    l.args = {{Kind::Operand, 0, 1, "q"},
              {Kind::Operand, 1, 1, "k"},
              {Kind::Operand, 2, 1, "v"},
              {Kind::Result, 0, 1, "a"},
              {Kind::Result, 1, 1, "lse"}};
    if (dense)
      l.args.push_back({Kind::Extent, headsIndex, s.kvHeads, "qActive"});

    llvm::raw_string_ostream os(out.source);
    os << prelude(op);
    writeCommon(os, s);
    writeTile(os, "FwdTile", *tile);
    os << "\n" << entrySignature(op, l) << " {\n";
    if (!dense)
      os << "  const long long qActive = kGroup; // every head active\n";
    os << (kForwardBody + 1); // the body starts after its leading newline
    out.kind = "attention";
    out.launches.push_back(std::move(l));
    return success();
  }
};

/// dq, dk, dv from the saved lse: D = rowsum(dA a), then dK/dV per key tile, then dQ per query
/// tile; see kRowDotBody, kDkDvBody and kDqBody.
struct AttentionGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<AttentionGradEmitter,
                                                        kernel::AttentionGradOp> {
  LogicalResult emitCuda(Operation *op, KernelSource &out) const {
    auto g = cast<kernel::AttentionGradOp>(op);
    Shape s;
    if (failed(readShape(op, g.getQ(), g.getK(), g.getV(), g.getLse(), g.getNumHeads(),
                         g.getNumKvHeads(), g.getHeadDim(), s)))
      return failure();
    if (g.getOut().getType() != g.getQ().getType() ||
        g.getResultGrad().getType() != g.getQ().getType())
      return op->emitError("expects out and result_grad of q's type");
    bool dense = g.getPrefixDense() && g.getHeads();
    unsigned headsIndex = g.getODSOperandIndexAndLength(6).first;
    auto dkv = chooseTile(s, [](int64_t a, int64_t b, int64_t ld, int64_t ldp, int64_t) {
      return 2 * a * ld + 2 * b * ld + 2 * b * ldp;
    });
    auto dq = chooseTile(s, [](int64_t a, int64_t b, int64_t ld, int64_t ldp, int64_t) {
      return 2 * a * ld + 2 * b * ld + b * ldp;
    });
    if (!dkv || !dq)
      return noTile(op, s);
    // Operands: q 0, k 1, v 2, out 3, lse 4, result_grad 5, heads 6.
    KernelArg extent{Kind::Extent, headsIndex, s.kvHeads, "qActive"};

    Launch rowDot;
    rowDot.entry = "attention_grad_rowdot";
    int64_t items = s.batch * s.length * s.heads;
    rowDot.block.x = 256;
    rowDot.grid.x = std::min<int64_t>((items + 255) / 256, 65535);
    rowDot.args = {{Kind::Operand, 3, 1, "out"},
                   {Kind::Operand, 5, 1, "da"},
                   {Kind::Scratch, 0, 1, "scratch"}};

    Launch kv;
    kv.entry = "attention_grad_dkdv";
    kv.grid = tileGrid((s.length + dkv->aRows() - 1) / dkv->aRows(), s.kvHeads, s.batch);
    kv.block.x = dkv->threads();
    kv.sharedBytes = dkv->bytes;
    kv.args = {{Kind::Operand, 0, 1, "q"},  {Kind::Operand, 1, 1, "k"},
               {Kind::Operand, 2, 1, "v"},  {Kind::Operand, 4, 1, "lse"},
               {Kind::Operand, 5, 1, "da"}, {Kind::Scratch, 0, 1, "scratch"},
               {Kind::Result, 1, 1, "dk"},  {Kind::Result, 2, 1, "dv"}};

    Launch lq;
    lq.entry = "attention_grad_dq";
    lq.grid = tileGrid((s.length + dq->aRows() - 1) / dq->aRows(), s.heads, s.batch);
    lq.block.x = dq->threads();
    lq.sharedBytes = dq->bytes;
    lq.args = {{Kind::Operand, 0, 1, "q"},  {Kind::Operand, 1, 1, "k"},
               {Kind::Operand, 2, 1, "v"},  {Kind::Operand, 4, 1, "lse"},
               {Kind::Operand, 5, 1, "da"}, {Kind::Scratch, 0, 1, "scratch"},
               {Kind::Result, 0, 1, "dq"}};
    if (dense)
      for (Launch *launch : {&rowDot, &kv, &lq})
        launch->args.push_back(extent);

    llvm::raw_string_ostream os(out.source);
    os << prelude(op);
    writeCommon(os, s);
    writeTile(os, "DkvTile", *dkv);
    writeTile(os, "DqTile", *dq);
    const char *everyHead = "  const long long qActive = kGroup; // every head active\n";
    for (auto [launch, body] : {std::pair<Launch *, const char *>{&rowDot, kRowDotBody},
                                {&kv, kDkDvBody},
                                {&lq, kDqBody}}) {
      os << "\n" << entrySignature(op, *launch) << " {\n";
      if (!dense)
        os << everyHead;
      os << (body + 1);
    }
    out.kind = "attention_grad";
    out.launches = {rowDot, kv, lq};
    // D, one value per (sequence, head, row): [B, heads, L] like lse.
    out.scratchBytes = {s.batch * s.heads * s.length * s.elementBytes()};
    return success();
  }
};

} // namespace

void nestor::cuda::registerAttentionEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::AttentionOp::attachInterface<AttentionEmitter>(*ctx);
    kernel::AttentionGradOp::attachInterface<AttentionGradEmitter>(*ctx);
  });
}
