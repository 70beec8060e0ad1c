//===- Mamba.cpp - CUDA emitters of the mamba kernels -------------------------===//
//
// The Mamba2 mixer between its two projections (lib/codegen/cpu/Kernels.h, "Mamba2 mixer
// pieces"; the CPU functions in lib/codegen/cpu/Mamba.cpp and SSD.cpp define the results):
//
// - kernel.mamba_mask: mzx[h*P + p] = heads.m[h] * channels.m[p]; a grid-stride loop.
// - kernel.mamba_conv: the depthwise causal conv + SiLU. One thread per channel walks a tile of
//   rows with the last K inputs in registers (coalesced over channels). Prefix-dense extents come
//   from the expanded multiplier itself (as runtime/Executor.cpp derives them), read by each
//   block, so the op has no extent argument.
// - kernel.mamba_scan: the selective scan, one block (<= 256 threads) per (sequence, head),
//   walking time sequentially (the exact recurrence, which METHOD.md §9's chunked form computes
//   too) with the P x N state in registers: a warp's lanes split the state index n, its lane
//   groups and the block's warps split the channel p. Time steps are staged through shared
//   memory a tile at a time (at most `chunk` steps), two barriers per tile; y_t[p] is a
//   transposing shuffle reduction over the lane group. The state is in the element type.
//   A faster version would be the chunked SSD on tensor cores (C.B and state GEMMs per chunk,
//   a short scan over chunk states, blocks over (sequence, head, chunk)).
// - kernel.mamba_gate_norm: one block per (row, norm group), two block reductions.
// - kernel.mamba_inner_grad: launches sharing scratch buffers, in the order the CPU executor
//   composes the backward: the gated-norm backward (a block per row block x group, parameter
//   partials per row block) and its ordered reduction; per wave of sequences the scan backward
//   (a block per (sequence, head): a forward pass recomputing S_t for dC and the per-step
//   f_t = dy_t . S_t C_t, then a reverse pass over dS) and the head-ordered sum of the group's
//   private dB|dC; the parameter reduction; the conv backward (partials per row block, dpre in
//   place), the gather of dProj's x|B|C columns, their reduction; the mask cotangents. The
//   decay cotangent a_t <dS_t, S_{t-1}> is the reverse cumulative sum over u >= t of
//   f_u - <dS_u, delta_u x_u (x) B_u>, so no state is stored; the backward's recomputed S and
//   dS and that sum are float64 (which keeps the sum's error from growing with the length).
//   Every reduction over rows is partials then an ordered sum: deterministic, no atomics.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/emit/Emitters.h"

#include "dialects/kernel/KernelOps.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdlib>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;
using Kind = KernelArg::Kind;

namespace {

//===----------------------------------------------------------------------===//
// Shapes
//===----------------------------------------------------------------------===//

/// The sizes of one mixer (MambaShape's fixed part).
struct Dims {
  int64_t B = 0, L = 0, H = 0, P = 0, G = 0, N = 0, K = 0;
  Type elementType;
  int64_t perGroup() const { return H / G; }
  int64_t hp() const { return H * P; }
  int64_t gn() const { return G * N; }
  int64_t convChannels() const { return hp() + 2 * gn(); }
  int64_t projWidth() const { return 2 * hp() + 2 * gn() + H; }
  int64_t rows() const { return B * L; }
  int64_t elementBytes() const { return elementType.isF64() ? 8 : 4; }
  std::string type() const { return cudaType(elementType); }
};

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

Type elementOf(Value v) { return cast<ShapedType>(v.getType()).getElementType(); }

/// Reads the mixer attributes; checks that every float operand and result has one element type.
template <typename OpT> FailureOr<Dims> readDims(OpT op) {
  Dims d;
  d.H = op.getNumHeads();
  d.P = op.getHeadDim();
  d.G = op.getNGroups();
  d.N = op.getStateSize();
  if (d.H % d.G != 0) {
    op.emitOpError() << "num_heads " << d.H << " is not a multiple of n_groups " << d.G;
    return failure();
  }
  Operation *o = op.getOperation();
  for (Value v : llvm::concat<Value>(o->getOperands(), o->getResults())) {
    Type t = elementOf(v);
    if (!d.elementType)
      d.elementType = t;
    if (t != d.elementType || !(t.isF32() || t.isF64())) {
      op.emitOpError() << "the CUDA emitter needs every operand and result in one element type, "
                          "f32 or f64";
      return failure();
    }
  }
  return d;
}

/// Batch and length from an activation `tensor<B x L x ...>`.
LogicalResult readActivation(Operation *op, Value v, Dims &d) {
  auto t = cast<RankedTensorType>(v.getType());
  if (t.getRank() < 3) {
    op->emitOpError() << "expects activations of rank 3 (batch, length, channels), got " << t;
    return failure();
  }
  d.B = t.getDimSize(0);
  d.L = t.getDimSize(1);
  return success();
}

LogicalResult expectElements(Operation *op, Value v, int64_t n, StringRef what) {
  if (numElements(v) == n)
    return success();
  op->emitOpError() << what << " has " << numElements(v) << " elements, expected " << n;
  return failure();
}

/// Rows per partial of a row reduction: at most 256 partials, at least 8 rows each.
int64_t rowsPerPartial(int64_t rows) { return std::max<int64_t>(8, ceilDiv(rows, 256)); }

/// Blocks of 256 threads for a grid-stride loop over n items.
int64_t strideBlocks(int64_t n) { return std::clamp<int64_t>(ceilDiv(n, 256), 1, 2048); }

//===----------------------------------------------------------------------===//
// Source text shared by the translation units
//===----------------------------------------------------------------------===//

std::string shapeConstants(const Dims &d) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "typedef " << d.type() << " T;\n"
     << "constexpr long long kB = " << d.B << ", kL = " << d.L << ", kRows = " << d.rows() << ";\n"
     << "constexpr long long kH = " << d.H << ", kP = " << d.P << ", kG = " << d.G
     << ", kN = " << d.N << ", kK = " << d.K << ";\n"
     << "constexpr long long kPerGroup = " << d.perGroup() << ", kHP = " << d.hp()
     << ", kGN = " << d.gn() << ";\n"
     << "// conv channels x|B|C, and the proj row [z | x | B | C | dt]\n"
     << "constexpr long long kC = " << d.convChannels() << ", kW = " << d.projWidth()
     << ", kDtCol = " << 2 * d.hp() + 2 * d.gn() << ";\n";
  return s;
}

// Element-type overloads (the device header's helpers are float-only) and the formulas the CPU
// kernels use (Mamba.cpp): sigmoid 1 / (1 + e^-x), softplus with the cut-off at 20.
constexpr const char *kMath = R"(
__device__ __forceinline__ float mexp(float x) { return expf(x); }
__device__ __forceinline__ double mexp(double x) { return exp(x); }
__device__ __forceinline__ float mlog1p(float x) { return log1pf(x); }
__device__ __forceinline__ double mlog1p(double x) { return log1p(x); }
__device__ __forceinline__ float msqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double msqrt(double x) { return sqrt(x); }
__device__ __forceinline__ T sigm(T x) { return T(1) / (T(1) + mexp(-x)); }
__device__ __forceinline__ T siluT(T x) { return x * sigm(x); }
__device__ __forceinline__ T softplusT(T x) { return x > T(20) ? x : mlog1p(mexp(x)); }
__device__ __forceinline__ T maskAt(const T *m, long long i) { return m ? m[i] : T(1); }
// Prefix-dense: head h is active when h % (H/G) < hActive, channel p when p < pActive.
__device__ __forceinline__ bool headOn(long long h, long long hActive) {
  return h % kPerGroup < hActive;
}
__device__ __forceinline__ bool channelOn(long long c, long long hActive, long long pActive) {
  return headOn(c / kP, hActive) && c % kP < pActive;
}
// mzx of channel c (h*P + p) from the two masks (either may be null).
__device__ __forceinline__ T mzxOf(long long c, const T *hm, const T *cm) {
  return maskAt(hm, c / kP) * maskAt(cm, c % kP);
}
)";

//===----------------------------------------------------------------------===//
// The scan's thread layout
//===----------------------------------------------------------------------===//

/// Threads over the P x N state of one head: kLanes lanes (a power of two, <= 32) split n
/// (kNS values each, interleaved), the warp's 32 / kLanes lane groups and the block's warps
/// split p (kR rows each, strided by the number of groups kPG).
struct ScanLayout {
  int64_t lanes = 1, ns = 1, ppw = 32, warps = 1, pg = 32, rows = 1, tile = 1, sharedBytes = 0;
  int64_t threads() const { return warps * 32; }
};

FailureOr<ScanLayout> scanLayout(Operation *op, const Dims &d, int64_t chunk, bool backward) {
  ScanLayout s;
  while (s.lanes < 32 && s.lanes < d.N)
    s.lanes *= 2;
  s.ns = ceilDiv(d.N, s.lanes);
  s.ppw = 32 / s.lanes;
  // At most 8 warps: 256 threads leave each up to 255 registers for its share of the state
  // (float64 in the backward).
  s.warps = std::min<int64_t>(8, ceilDiv(d.P, s.ppw));
  s.pg = s.warps * s.ppw;
  s.rows = ceilDiv(d.P, s.pg);
  if (s.rows * s.ns > 64) {
    op->emitOpError() << "head_dim " << d.P << " x state_size " << d.N
                      << " is too large a state for the CUDA scan (" << s.rows * s.ns
                      << " values per thread of 256; at most 64)";
    return failure();
  }
  // Shared memory per staged time step; a tile of steps within 40 KiB (no opt-in needed).
  int64_t e = d.elementBytes();
  int64_t perStep = backward ? 8 * (1 + s.warps) + e * (3 * d.P + 2 * d.N + 3 + s.warps * d.N)
                             : e * (2 * d.P + 2 * d.N + 2);
  constexpr int64_t kBudget = 40 * 1024;
  if (perStep > kBudget) {
    op->emitOpError() << "one time step of the CUDA scan needs " << perStep
                      << " bytes of shared memory; at most " << kBudget;
    return failure();
  }
  s.tile = std::clamp<int64_t>(kBudget / perStep, 1, 64);
  // The op's chunk bounds the tile: the time steps staged together.
  s.tile = std::min({s.tile, std::max<int64_t>(1, d.L), std::max<int64_t>(1, chunk)});
  s.sharedBytes = s.tile * perStep;
  return s;
}

std::string scanConstants(const ScanLayout &s) {
  std::string t;
  llvm::raw_string_ostream os(t);
  int64_t rp = 1;
  while (rp < s.rows)
    rp *= 2;
  os << "constexpr int kLanes = " << s.lanes << ", kNS = " << s.ns << ", kPPW = " << s.ppw
     << ", kWarps = " << s.warps << ", kPG = " << s.pg << ", kR = " << s.rows << ", kRP = " << rp
     << ";\n"
     << "constexpr long long kTile = " << s.tile << ";\n";
  return t;
}

constexpr const char *kScanReductions = R"(
// Rows per lane after RowsSum, and lanes holding the same rows.
constexpr int kRowsLeft = kRP > kLanes ? kRP / kLanes : 1;
constexpr int kDup = kLanes > kRP ? kLanes / kRP : 1;
// Sums each of v[0..kRP) (one per row p of the thread) over its lane group, transposing while
// it halves: a shuffle per row pair instead of one per row and level. At the end v[0 ..
// kRowsLeft) hold the group sums of rows [row, row + kRowsLeft); kDup lanes hold the same rows.
template <int O, int C> struct RowsSum {
  template <typename V> __device__ __forceinline__ static void run(V *v, int ln, int &row) {
    if constexpr (O > 0) {
      if constexpr (C > 1) {
        constexpr int half = C / 2;
        const bool upper = (ln & O) != 0;
#pragma unroll
        for (int j = 0; j < half; ++j) {
          const V send = upper ? v[j] : v[j + half], keep = upper ? v[j + half] : v[j];
          v[j] = keep + __shfl_xor_sync(nestor::kFullWarpMask, send, O);
        }
        if (upper)
          row += half;
        RowsSum<O / 2, half>::run(v, ln, row);
      } else {
        v[0] += __shfl_xor_sync(nestor::kFullWarpMask, v[0], O);
        RowsSum<O / 2, 1>::run(v, ln, row);
      }
    }
  }
};
// The sum over the lane groups of a warp (the same n, different p).
template <typename V> __device__ __forceinline__ V warpGroupsSum(V v) {
#pragma unroll
  for (int o = kLanes; o < 32; o <<= 1)
    v += __shfl_xor_sync(nestor::kFullWarpMask, v, o);
  return v;
}
)";

//===----------------------------------------------------------------------===//
// Device code of each op
//===----------------------------------------------------------------------===//

constexpr const char *kMaskBody = R"(
__device__ void maskExpand(const T *hm, const T *cm, T *mzx, long long hActive,
                           long long pActive) {
  for (long long i : nestor::gridStride(kHP))
    mzx[i] = channelOn(i, hActive, pActive) ? maskAt(hm, i / kP) * maskAt(cm, i % kP) : T(0);
}
)";

constexpr const char *kConvForwardBody = R"(
// One thread per conv channel over kConvRows consecutive rows: xbc = silu(b + m * sum_k w_k
// u_{t-K+1+k}) * m, zero left padding per sequence, m = mzx on x channels and 1 on B and C.
__device__ void convForward(const T *proj, const T *w, const T *bias, const T *mzx, T *xbc,
                            bool dense) {
  __shared__ long long extent[2];
  if (threadIdx.x == 0) {
    // As the executor derives them: channels from mzx's first head, heads from mzx[h * P].
    long long pA = kP, hA = kPerGroup;
    if (dense && mzx) {
      pA = 0;
      for (long long p = 0; p < kP; ++p)
        if (mzx[p] != T(0))
          pA = p + 1;
      hA = 0;
      for (long long h = 0; h < kPerGroup; ++h)
        if (mzx[h * kP] != T(0))
          hA = h + 1;
    }
    extent[0] = hA;
    extent[1] = pA;
  }
  __syncthreads();
  const long long hActive = extent[0], pActive = extent[1];
  const long long c = (long long)blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= kC)
    return;
  const long long r0 = (long long)blockIdx.x * kConvRows, r1 = min(kRows, r0 + kConvRows);
  const bool isX = c < kHP;
  if (isX && !channelOn(c, hActive, pActive)) {
    for (long long r = r0; r < r1; ++r)
      xbc[r * kC + c] = T(0);
    return;
  }
  const T m = isX && mzx ? mzx[c] : T(1), b = bias[c];
  const T *u = proj + kHP + c;
  T wk[kK], win[kK];
#pragma unroll
  for (int k = 0; k < kK; ++k) {
    wk[k] = w[c * kK + k];
    // win[k] = u at row r - (K-1) + k, before row r = r0 is loaded.
    const long long back = kK - 1 - k, t0 = r0 % kL;
    win[k] = k < kK - 1 && back <= t0 ? u[(r0 - back) * kW] : T(0);
  }
  for (long long r = r0; r < r1; ++r) {
    if (r % kL == 0 && r > r0) {
#pragma unroll
      for (int k = 0; k < kK; ++k)
        win[k] = T(0);
    }
    win[kK - 1] = u[r * kW];
    T acc = 0;
#pragma unroll
    for (int k = 0; k < kK; ++k)
      acc += wk[k] * win[k];
    xbc[r * kC + c] = siluT(b + m * acc) * m;
#pragma unroll
    for (int k = 0; k + 1 < kK; ++k)
      win[k] = win[k + 1];
  }
}
)";

constexpr const char *kScanForwardBody = R"(
// One block per (sequence, head); the state in registers, time steps staged a tile at a time.
__device__ void scanForward(const T *proj, const T *xbc, const T *dtBias, const T *aLog,
                            const T *dSkip, const T *hm, T *y, long long hActive) {
  T *sx = nestor::dynamicShared<T>();  // [kTile][kP]
  T *sb = sx + kTile * kP;             // [kTile][kN]
  T *sc = sb + kTile * kN;             // [kTile][kN]
  T *sdelta = sc + kTile * kN;         // [kTile]
  T *sdecay = sdelta + kTile;          // [kTile]
  T *sy = sdecay + kTile;              // [kTile][kP]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, ln = lane % kLanes;
  const int pg = warp * kPPW + lane / kLanes;
  const long long h = blockIdx.x % kH, g = h / kPerGroup, row0 = (blockIdx.x / kH) * kL;
  if (!headOn(h, hActive)) {
    for (long long i : nestor::blockStride(kL * kP))
      y[(row0 + i / kP) * kHP + h * kP + i % kP] = T(0);
    return;
  }
  const T mh = maskAt(hm, h), A = -mexp(aLog[h]), D = dSkip[h], bias = dtBias[h];
  T st[kR][kNS];
#pragma unroll
  for (int i = 0; i < kR; ++i)
#pragma unroll
    for (int j = 0; j < kNS; ++j)
      st[i][j] = T(0);
  for (long long t0 = 0; t0 < kL; t0 += kTile) {
    const long long q = min(kTile, kL - t0);
    for (long long i : nestor::blockStride(q * kP))
      sx[i] = xbc[(row0 + t0 + i / kP) * kC + h * kP + i % kP];
    for (long long i : nestor::blockStride(q * kN)) {
      const T *row = xbc + (row0 + t0 + i / kN) * kC + kHP + g * kN + i % kN;
      sb[i] = row[0];
      sc[i] = row[kGN];
    }
    for (long long i : nestor::blockStride(q)) {
      const T d = softplusT(proj[(row0 + t0 + i) * kW + kDtCol + h] * mh + bias);
      sdelta[i] = d;
      sdecay[i] = mexp(d * A);
    }
    __syncthreads();
    for (long long tt = 0; tt < q; ++tt) {
      const T dl = sdelta[tt], decay = sdecay[tt], *bt = sb + tt * kN, *ct = sc + tt * kN;
      T acc[kRP];
#pragma unroll
      for (int i = 0; i < kRP; ++i) {
        acc[i] = T(0);
        const int p = pg + i * kPG;
        if (i >= kR)
          continue;
        const T dx = dl * (p < kP ? sx[tt * kP + p] : T(0));
#pragma unroll
        for (int j = 0; j < kNS; ++j) {
          const int n = ln + j * kLanes;
          if (n < kN) {
            st[i][j] = decay * st[i][j] + dx * bt[n];
            acc[i] += st[i][j] * ct[n];
          }
        }
      }
      int row = 0;
      RowsSum<kLanes / 2, kRP>::run(acc, ln, row);
#pragma unroll
      for (int j = 0; j < kRowsLeft; ++j) {
        const int p = pg + (row + j) * kPG;
        if (ln % kDup == 0 && row + j < kR && p < kP)
          sy[tt * kP + p] = acc[j] + D * sx[tt * kP + p];
      }
    }
    __syncthreads();
    for (long long i : nestor::blockStride(q * kP))
      y[(row0 + t0 + i / kP) * kHP + h * kP + i % kP] = sy[i];
  }
}
)";

constexpr const char *kGateNormBody = R"(
// One block per (row, group): out = sigma * w * g / sqrt(mean_group g^2 + eps * phi) with
// g = y * silu(z * mzx); inactive channels are 0 and add nothing to the sum of squares.
__device__ void gateNorm(const T *y, const T *proj, const T *nw, const T *mzx, const T *hm,
                         const T *cm, T *out, long long hActive, long long pActive) {
  __shared__ T scratch[32];
  const long long r = blockIdx.x, c0 = (long long)blockIdx.y * kGroupSize;
  const T phi = (hm ? hm[kH] : T(1)) * (cm ? cm[kP] : T(1));
  const T sigma = (hm ? hm[kH + 1] : T(1)) * (cm ? cm[kP + 1] : T(1));
  const T *yr = y + r * kHP, *z = proj + r * kW;
  T *o = out + r * kHP;
  T ss = 0;
  for (long long j : nestor::blockStride(kGroupSize)) {
    const long long c = c0 + j;
    if (channelOn(c, hActive, pActive)) {
      const T v = yr[c] * siluT(z[c] * maskAt(mzx, c));
      ss += v * v;
    }
  }
  ss = nestor::blockSum(ss, scratch);
  const T scale = sigma / msqrt(ss / T(kGroupSize) + kEps * phi);
  for (long long j : nestor::blockStride(kGroupSize)) {
    const long long c = c0 + j;
    o[c] = channelOn(c, hActive, pActive) ? nw[c] * (yr[c] * siluT(z[c] * maskAt(mzx, c))) * scale
                                          : T(0);
  }
}
)";

// The fused backward. Scratch: 0 gated-norm partials [kParts][kPW], 1 their sums [kPW],
// 2 dY [rows][HP], 3 dXbc (then dpre) [rows][C], 4 per-head dB|dC [wave][H][L][2N],
// 5 per-step dy . S C [wave][H][L] (double), 6 scan partials [B][H][4],
// 7 conv partials [kCParts][K + 2][C], 8 dMzx | dHeadM [HP + H].
constexpr const char *kInnerGradBody = R"(
constexpr long long kPW = 2 * kHP + 2 * kG; // [dNormW | dMzx | (dphi, dsigma) per group]

// 1. Gated norm backward: a block per (row block, group), each thread owning kPer channels.
__device__ void gateNormBackward(const T *y, const T *proj, const T *nw, const T *hm,
                                 const T *cm, const T *dOut, T *dY, T *dProj, T *parts,
                                 long long hActive, long long pActive) {
  __shared__ T scratch[32];
  const long long rb = blockIdx.x, g = blockIdx.y, c0 = g * kGroupSize;
  const T phi = (hm ? hm[kH] : T(1)) * (cm ? cm[kP] : T(1));
  const T sigma = (hm ? hm[kH + 1] : T(1)) * (cm ? cm[kP + 1] : T(1));
  const T epsPhi = kEps * phi;
  T accW[kPer], accM[kPer], v[kPer], zm[kPer], sg[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k)
    accW[k] = accM[k] = T(0);
  T dsigma = 0, dphi = 0;
  const long long r1 = min(kRows, (rb + 1) * kRowsPerPart);
  for (long long r = rb * kRowsPerPart; r < r1; ++r) {
    const T *yr = y + r * kHP, *z = proj + r * kW, *go = dOut + r * kHP;
    T *dyr = dY + r * kHP, *dz = dProj + r * kW;
    T ss = 0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const long long j = threadIdx.x + (long long)k * blockDim.x, c = c0 + j;
      v[k] = zm[k] = sg[k] = T(0);
      if (j < kGroupSize && channelOn(c, hActive, pActive)) {
        zm[k] = z[c] * mzxOf(c, hm, cm);
        sg[k] = sigm(zm[k]);
        v[k] = yr[c] * (zm[k] * sg[k]);
        ss += v[k] * v[k];
      }
    }
    ss = nestor::blockSum(ss, scratch);
    const T inv = T(1) / msqrt(ss / T(kGroupSize) + epsPhi), inv3 = inv * inv * inv;
    T gx = 0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const long long j = threadIdx.x + (long long)k * blockDim.x, c = c0 + j;
      if (j < kGroupSize && channelOn(c, hActive, pActive)) {
        gx += go[c] * sigma * nw[c] * v[k];
        accW[k] += go[c] * sigma * v[k] * inv;
        dsigma += go[c] * nw[c] * v[k] * inv;
      }
    }
    gx = nestor::blockSum(gx, scratch);
    const T coef = inv3 / T(kGroupSize) * gx;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const long long j = threadIdx.x + (long long)k * blockDim.x, c = c0 + j;
      if (j >= kGroupSize)
        continue;
      if (channelOn(c, hActive, pActive)) {
        const T m = mzxOf(c, hm, cm);
        const T dg = go[c] * sigma * nw[c] * inv - v[k] * coef;
        dyr[c] = dg * zm[k] * sg[k];
        const T dzm = dg * yr[c] * sg[k] * (T(1) + zm[k] * (T(1) - sg[k]));
        dz[c] = dzm * m;
        accM[k] += dzm * z[c];
      } else {
        dyr[c] = T(0);
        dz[c] = T(0);
      }
    }
    dphi += T(-0.5) * kEps * inv3 * gx;
  }
  dsigma = nestor::blockSum(dsigma, scratch);
  T *part = parts + rb * kPW;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const long long j = threadIdx.x + (long long)k * blockDim.x;
    if (j < kGroupSize) {
      part[c0 + j] = accW[k];
      part[kHP + c0 + j] = accM[k];
    }
  }
  if (threadIdx.x == 0) {
    part[2 * kHP + 2 * g] = dphi;
    part[2 * kHP + 2 * g + 1] = dsigma;
  }
}

// 2. The gated norm's partials summed over row blocks in order: dNormW, and the rest to `sums`.
__device__ void gateNormReduce(const T *parts, T *dNormW, T *sums) {
  for (long long j : nestor::gridStride(kPW)) {
    T acc = 0;
    for (long long rb = 0; rb < kParts; ++rb)
      acc += parts[rb * kPW + j];
    if (j < kHP)
      dNormW[j] = acc;
    else
      sums[j] = acc;
  }
}

// 3. The scan backward of sequences [kSeq0, kSeq0 + kSeqs): one block per (sequence, head).
template <long long kSeq0, long long kSeqs>
__device__ void scanBackward(const T *proj, const T *xbc, const T *dtBias, const T *aLog,
                             const T *dSkip, const T *hm, const T *dY, T *dXbc, T *dProj,
                             T *sparts, T *dbc, double *fbuf, long long hActive,
                             long long pActive) {
  double *sf = nestor::dynamicShared<double>();            // [kTile] dy . S C per step
  double *swarp = sf + kTile;                              // [kTile][kWarps]
  T *sx = reinterpret_cast<T *>(swarp + kTile * kWarps);   // [kTile][kP]
  T *sdy = sx + kTile * kP;                                // [kTile][kP]
  T *sb = sdy + kTile * kP;                                // [kTile][kN]
  T *sc = sb + kTile * kN;                                 // [kTile][kN]
  T *sdelta = sc + kTile * kN, *sdecay = sdelta + kTile;   // [kTile]
  T *sdt = sdecay + kTile;                                 // [kTile]
  T *sn = sdt + kTile;                                     // [kTile][kWarps][kN]
  T *sdx = sn + kTile * kWarps * kN;                       // [kTile][kP]
  __shared__ T scratch[32];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, ln = lane % kLanes;
  const int pg = warp * kPPW + lane / kLanes;
  const long long task = blockIdx.x, h = task % kH, g = h / kPerGroup;
  const long long b = kSeq0 + task / kH, row0 = b * kL;
  T *part = sparts + (b * kH + h) * 4;
  if (!headOn(h, hActive)) {
    for (long long i : nestor::blockStride(kL * kP))
      dXbc[(row0 + i / kP) * kC + h * kP + i % kP] = T(0);
    for (long long t : nestor::blockStride(kL))
      dProj[(row0 + t) * kW + kDtCol + h] = T(0);
    if (tid < 4)
      part[tid] = T(0);
    return;
  }
  const T mh = maskAt(hm, h), A = -mexp(aLog[h]), D = dSkip[h], bias = dtBias[h];
  T *myDbc = dbc + task * kL * 2 * kN;
  double *myF = fbuf + task * kL;
  auto stage = [&](long long t0, long long q, bool withF) {
    for (long long i : nestor::blockStride(q * kP)) {
      const long long r = row0 + t0 + i / kP, p = i % kP;
      sx[i] = xbc[r * kC + h * kP + p];
      sdy[i] = dY[r * kHP + h * kP + p];
    }
    for (long long i : nestor::blockStride(q * kN)) {
      const T *row = xbc + (row0 + t0 + i / kN) * kC + kHP + g * kN + i % kN;
      sb[i] = row[0];
      sc[i] = row[kGN];
    }
    for (long long i : nestor::blockStride(q)) {
      const T dt = proj[(row0 + t0 + i) * kW + kDtCol + h], d = softplusT(dt * mh + bias);
      sdt[i] = dt;
      sdelta[i] = d;
      sdecay[i] = mexp(d * A);
      if (withF)
        sf[i] = myF[t0 + i];
    }
  };
  // The recomputed state S_t and then dS_t are float64: the reverse cumulative sum R below
  // would otherwise gather the state's rounding over the rest of the sequence.
  double st[kR][kNS];
#pragma unroll
  for (int i = 0; i < kR; ++i)
#pragma unroll
    for (int j = 0; j < kNS; ++j)
      st[i][j] = 0.0;

  // Forward: S_t, then dC_t = S_t^T dy_t (this head's share) and f_t = dy_t . S_t C_t.
  for (long long t0 = 0; t0 < kL; t0 += kTile) {
    const long long q = min(kTile, kL - t0);
    stage(t0, q, false);
    __syncthreads();
    for (long long tt = 0; tt < q; ++tt) {
      const double dl = sdelta[tt], decay = sdecay[tt];
      const T *bt = sb + tt * kN, *ct = sc + tt * kN;
      double f = 0, dc[kNS];
#pragma unroll
      for (int j = 0; j < kNS; ++j)
        dc[j] = 0.0;
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        const int p = pg + i * kPG;
        const bool on = p < pActive;
        const double xp = on ? sx[tt * kP + p] : T(0), dyp = on ? sdy[tt * kP + p] : T(0);
        const double dx = dl * xp;
#pragma unroll
        for (int j = 0; j < kNS; ++j) {
          const int n = ln + j * kLanes;
          if (n < kN) {
            st[i][j] = decay * st[i][j] + dx * double(bt[n]);
            f += dyp * (st[i][j] * double(ct[n]));
            dc[j] += st[i][j] * dyp;
          }
        }
      }
      f = nestor::warpSum(f);
      if (lane == 0)
        swarp[tt * kWarps + warp] = f;
#pragma unroll
      for (int j = 0; j < kNS; ++j) {
        const double s = warpGroupsSum(dc[j]);
        const int n = ln + j * kLanes;
        if (lane < kLanes && n < kN)
          sn[(tt * kWarps + warp) * kN + n] = T(s);
      }
    }
    __syncthreads();
    for (long long i : nestor::blockStride(q)) {
      double f = 0;
      for (int w = 0; w < kWarps; ++w)
        f += swarp[i * kWarps + w];
      myF[t0 + i] = f;
    }
    for (long long i : nestor::blockStride(q * kN)) {
      const long long tt = i / kN, n = i % kN;
      T s = 0;
      for (int w = 0; w < kWarps; ++w)
        s += sn[(tt * kWarps + w) * kN + n];
      myDbc[(t0 + tt) * 2 * kN + kN + n] = s;
    }
    // The next staging writes none of swarp / sn / myF's sources; its barrier orders the rest.
  }
  __syncthreads(); // the reverse pass reads myF, written by other threads


  // Reverse: dS_t = dy_t (x) C_t + a_{t+1} dS_{t+1}.
#pragma unroll
  for (int i = 0; i < kR; ++i)
#pragma unroll
    for (int j = 0; j < kNS; ++j)
      st[i][j] = 0.0;
  double next = 0;
  T sumDt = 0, sumHm = 0, dDl = 0;
  double R = 0, dA = 0; // R = sum_{u >= t} (f_u - delta_u e_u) = a_t <dS_t, S_{t-1}>
  for (long long t0 = (kL - 1) / kTile * kTile; t0 >= 0; t0 -= kTile) {
    const long long q = min(kTile, kL - t0);
    stage(t0, q, true);
    __syncthreads();
    for (long long tt = q - 1; tt >= 0; --tt) {
      const double dl = sdelta[tt];
      const T *bt = sb + tt * kN, *ct = sc + tt * kN;
      double e = 0, db[kNS], v[kRP];
#pragma unroll
      for (int j = 0; j < kNS; ++j)
        db[j] = 0.0;
#pragma unroll
      for (int i = 0; i < kRP; ++i) {
        v[i] = 0.0;
        const int p = pg + i * kPG;
        if (i >= kR)
          continue;
        const bool on = p < pActive;
        const double xp = on ? sx[tt * kP + p] : T(0), dyp = on ? sdy[tt * kP + p] : T(0);
#pragma unroll
        for (int j = 0; j < kNS; ++j) {
          const int n = ln + j * kLanes;
          if (n < kN) {
            st[i][j] = next * st[i][j] + dyp * double(ct[n]);
            v[i] += st[i][j] * double(bt[n]);
            db[j] += st[i][j] * xp;
          }
        }
      }
      int row = 0;
      RowsSum<kLanes / 2, kRP>::run(v, ln, row); // (dS_t B_t)[p]
#pragma unroll
      for (int j = 0; j < kRowsLeft; ++j) {
        const int p = pg + (row + j) * kPG;
        if (ln % kDup == 0 && row + j < kR && p < kP) {
          const bool on = p < pActive;
          const T xT = sx[tt * kP + p], dyT = sdy[tt * kP + p];
          sdx[tt * kP + p] = on ? T(dl * v[j] + double(D) * double(dyT)) : T(0);
          if (on) {
            e += double(xT) * v[j];
            dDl += dyT * xT;
          }
        }
      }
      e = nestor::warpSum(e);
      if (lane == 0)
        swarp[tt * kWarps + warp] = e;
#pragma unroll
      for (int j = 0; j < kNS; ++j) {
        const double s = warpGroupsSum(db[j]);
        const int n = ln + j * kLanes;
        if (lane < kLanes && n < kN)
          sn[(tt * kWarps + warp) * kN + n] = T(s);
      }
      next = sdecay[tt];
    }
    __syncthreads();
    for (long long i : nestor::blockStride(q * kP))
      dXbc[(row0 + t0 + i / kP) * kC + h * kP + i % kP] = sdx[i];
    for (long long i : nestor::blockStride(q * kN)) {
      const long long tt = i / kN, n = i % kN;
      T s = 0;
      for (int w = 0; w < kWarps; ++w)
        s += sn[(tt * kWarps + w) * kN + n];
      myDbc[(t0 + tt) * 2 * kN + n] = sdelta[tt] * s;
    }
    if (tid == 0) {
      for (long long tt = q - 1; tt >= 0; --tt) {
        double e = 0;
        for (int w = 0; w < kWarps; ++w)
          e += swarp[tt * kWarps + w];
        const T dl = sdelta[tt], dt = sdt[tt];
        R += sf[tt] - double(dl) * e;
        dA += double(dl) * R;
        // delta = softplus(dt mh + bias): d delta / d dt = sigmoid(dt mh + bias) mh.
        const T dDelta = T(e + double(A) * R), ddt = dDelta * sigm(dt * mh + bias);
        dProj[(row0 + t0 + tt) * kW + kDtCol + h] = ddt * mh;
        sumDt += ddt;
        sumHm += ddt * dt;
      }
    }
    __syncthreads(); // the next staging overwrites what thread 0 just read
  }
  dDl = nestor::blockSum(dDl, scratch);
  if (tid == 0) {
    part[0] = sumDt;
    part[1] = sumHm;
    part[2] = T(dA) * A; // A = -exp(A_log): dA / dA_log = A
    part[3] = dDl;
  }
}

// 4. dB|dC of the wave's sequences: the group's active heads added in head order.
template <long long kSeq0, long long kSeqs>
__device__ void bcSum(const T *dbc, T *dXbc, long long hActive) {
  constexpr long long kPerSeq = kL * kG * 2 * kN;
  for (long long i : nestor::gridStride(kSeqs * kPerSeq)) {
    const long long bl = i / kPerSeq, rem = i % kPerSeq, t = rem / (kG * 2 * kN);
    const long long g = rem % (kG * 2 * kN) / (2 * kN), n2 = rem % (2 * kN);
    T s = 0;
    for (long long h = g * kPerGroup; h < (g + 1) * kPerGroup; ++h)
      if (headOn(h, hActive))
        s += dbc[((bl * kH + h) * kL + t) * 2 * kN + n2];
    const long long col = n2 < kN ? kHP + g * kN + n2 : kHP + kGN + g * kN + (n2 - kN);
    dXbc[((kSeq0 + bl) * kL + t) * kC + col] = s;
  }
}

// 5. The scan's per-(sequence, head) partials summed over sequences in order.
__device__ void scanReduce(const T *sparts, T *dDtBias, T *dALog, T *dD, T *vec) {
  for (long long h : nestor::gridStride(kH)) {
    T s[4] = {T(0), T(0), T(0), T(0)};
    for (long long b = 0; b < kB; ++b)
      for (int i = 0; i < 4; ++i)
        s[i] += sparts[(b * kH + h) * 4 + i];
    dDtBias[h] = s[0];
    vec[kHP + h] = s[1]; // the head mask's cotangent through dt
    dALog[h] = s[2];
    dD[h] = s[3];
  }
}

// 6. Conv backward: a thread per channel over a block of rows: dpre (in place of dXbc) and the
// partials of dConvW, dConvB and dMzx.
__device__ void convBackward(const T *proj, const T *w, const T *bias, const T *hm, const T *cm,
                             T *dXbc, T *cparts, long long hActive, long long pActive) {
  const long long c = (long long)blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= kC)
    return;
  const long long rb = blockIdx.x, r0 = rb * kRowsPerPart, r1 = min(kRows, r0 + kRowsPerPart);
  T *part = cparts + rb * (kK + 2) * kC + c;
  const bool isX = c < kHP;
  if (isX && !channelOn(c, hActive, pActive)) {
    for (long long r = r0; r < r1; ++r)
      dXbc[r * kC + c] = T(0);
    for (int k = 0; k < kK + 2; ++k)
      part[k * kC] = T(0);
    return;
  }
  const T m = isX ? mzxOf(c, hm, cm) : T(1), b = bias[c];
  const T *u = proj + kHP + c;
  T wk[kK], win[kK], accW[kK];
#pragma unroll
  for (int k = 0; k < kK; ++k) {
    wk[k] = w[c * kK + k];
    accW[k] = T(0);
    const long long back = kK - 1 - k, t0 = r0 % kL;
    win[k] = k < kK - 1 && back <= t0 ? u[(r0 - back) * kW] : T(0);
  }
  T accB = 0, accM = 0;
  for (long long r = r0; r < r1; ++r) {
    if (r % kL == 0 && r > r0) {
#pragma unroll
      for (int k = 0; k < kK; ++k)
        win[k] = T(0);
    }
    win[kK - 1] = u[r * kW];
    T convU = 0;
#pragma unroll
    for (int k = 0; k < kK; ++k)
      convU += wk[k] * win[k];
    // xbc = silu(pre) m, pre = b + m convU.
    const T gr = dXbc[r * kC + c], pre = b + m * convU, s = sigm(pre);
    const T d = gr * m * s * (T(1) + pre * (T(1) - s));
    accB += d;
    accM += gr * pre * s + d * convU;
#pragma unroll
    for (int k = 0; k < kK; ++k)
      accW[k] += d * m * win[k];
    dXbc[r * kC + c] = d;
#pragma unroll
    for (int k = 0; k + 1 < kK; ++k)
      win[k] = win[k + 1];
  }
#pragma unroll
  for (int k = 0; k < kK; ++k)
    part[k * kC] = accW[k];
  part[kK * kC] = accB;
  part[(kK + 1) * kC] = accM;
}

// 7. dProj's x|B|C columns: dpre gathered from the K rows that read each input.
__device__ void convInputGrad(const T *w, const T *hm, const T *cm, const T *dpre, T *dProj) {
  for (long long i : nestor::gridStride(kRows * kC)) {
    const long long r = i / kC, c = i % kC, t = r % kL;
    const T m = c < kHP ? mzxOf(c, hm, cm) : T(1);
    T acc = 0;
    // Row r + K-1-k reads this input through tap k (in row order, as the CPU adds them).
    for (int k = kK - 1; k >= 0; --k) {
      const long long ahead = kK - 1 - k;
      if (t + ahead < kL)
        acc += dpre[(r + ahead) * kC + c] * w[c * kK + k] * m;
    }
    dProj[r * kW + kHP + c] = acc;
  }
}

// 8. The conv partials summed over row blocks in order; dMzx = the gated norm's + the conv's.
__device__ void convReduce(const T *cparts, const T *sums, T *dConvW, T *dConvB, T *vec) {
  for (long long c : nestor::gridStride(kC)) {
    T acc[kK + 2];
#pragma unroll
    for (int k = 0; k < kK + 2; ++k)
      acc[k] = T(0);
    for (long long rb = 0; rb < kCParts; ++rb)
#pragma unroll
      for (int k = 0; k < kK + 2; ++k)
        acc[k] += cparts[(rb * (kK + 2) + k) * kC + c];
#pragma unroll
    for (int k = 0; k < kK; ++k)
      dConvW[c * kK + k] = acc[k];
    dConvB[c] = acc[kK];
    if (c < kHP)
      vec[c] = sums[kHP + c] + acc[kK + 1];
  }
}

// 9. The mask cotangents from dMzx, dHeadM and the gated norm's (dphi, dsigma).
__device__ void maskBackward(const T *hm, const T *cm, const T *sums, const T *vec, T *dHead,
                             T *dChannel, long long hActive, long long pActive) {
  T dPhi = 0, dSigma = 0;
  for (long long g = 0; g < kG; ++g) {
    dPhi += sums[2 * kHP + 2 * g];
    dSigma += sums[2 * kHP + 2 * g + 1];
  }
  if (dHead) {
    for (long long h : nestor::blockStride(kH)) {
      T acc = 0;
      if (headOn(h, hActive))
        for (long long p = 0; p < pActive; ++p)
          acc += vec[h * kP + p] * maskAt(cm, p);
      dHead[h] = acc + vec[kHP + h];
    }
    if (threadIdx.x == 0) {
      dHead[kH] = dPhi * maskAt(cm, kP);
      dHead[kH + 1] = dSigma * maskAt(cm, kP + 1);
    }
  }
  if (dChannel) {
    for (long long p : nestor::blockStride(kP)) {
      T acc = 0;
      if (p < pActive)
        for (long long h = 0; h < kH; ++h)
          if (headOn(h, hActive))
            acc += vec[h * kP + p] * maskAt(hm, h);
      dChannel[p] = acc;
    }
    if (threadIdx.x == 0) {
      dChannel[kP] = dPhi * maskAt(hm, kH);
      dChannel[kP + 1] = dSigma * maskAt(hm, kH + 1);
    }
  }
}
)";

//===----------------------------------------------------------------------===//
// Emitters
//===----------------------------------------------------------------------===//

/// The flat operand number of ODS operand `ods` (or -1 when that optional operand is absent).
template <typename OpT> int operandNumber(OpT op, unsigned ods) {
  auto [start, length] = op.getODSOperandIndexAndLength(ods);
  return length ? static_cast<int>(start) : -1;
}
template <typename OpT> int resultNumber(OpT op, unsigned ods) {
  auto [start, length] = op.getODSResultIndexAndLength(ods);
  return length ? static_cast<int>(start) : -1;
}

/// Extent arguments of a launch: the heads mask's (per group) and the channels mask's, when the
/// op is prefix-dense and the mask is given; otherwise the full extents are constants.
struct Extents {
  int headsOperand = -1, channelsOperand = -1;
  int64_t groups = 1;
  void append(Launch &l) const {
    if (headsOperand >= 0)
      l.args.push_back({Kind::Extent, static_cast<unsigned>(headsOperand), groups, "hActive"});
    if (channelsOperand >= 0)
      l.args.push_back({Kind::Extent, static_cast<unsigned>(channelsOperand), 1, "pActive"});
  }
  std::string hActive() const { return headsOperand >= 0 ? "hActive" : "kPerGroup"; }
  std::string pActive() const { return channelsOperand >= 0 ? "pActive" : "kP"; }
};

/// Writes `launch`'s entry: its signature, bounded to the launch's block size (so that the
/// register allocation always fits it), and a call of `call`.
void writeEntry(llvm::raw_ostream &os, Operation *op, const Launch &launch,
                const std::string &call) {
  std::string signature = entrySignature(op, launch);
  const std::string global = "__global__ void ";
  size_t at = signature.find(global);
  if (at != std::string::npos)
    signature.insert(at + global.size(),
                     "__launch_bounds__(" +
                         std::to_string(launch.block.x * launch.block.y * launch.block.z) + ") ");
  os << "\n" << signature << " {\n  " << call << ";\n}\n";
}

struct MambaMaskEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MambaMaskEmitter, kernel::MambaMaskOp> {
  LogicalResult emitCuda(Operation *o, KernelSource &out) const {
    auto op = cast<kernel::MambaMaskOp>(o);
    FailureOr<Dims> d = readDims(op);
    if (failed(d))
      return failure();
    if (failed(expectElements(o, op.getResult(), d->hp(), "the result")) ||
        (op.getHeads() && failed(expectElements(o, op.getHeads(), d->H + 2, "the heads mask"))) ||
        (op.getChannels() &&
         failed(expectElements(o, op.getChannels(), d->P + 2, "the channels mask"))))
      return failure();
    int heads = operandNumber(op, 0), channels = operandNumber(op, 1);
    bool dense = op.getPrefixDense();
    Extents ext;
    ext.groups = d->G;
    if (dense) {
      ext.headsOperand = heads;
      ext.channelsOperand = channels;
    }
    Launch l;
    l.entry = "mamba_mask_expand";
    l.grid.x = strideBlocks(d->hp());
    l.block.x = blockFor(d->hp());
    if (heads >= 0)
      l.args.push_back({Kind::Operand, unsigned(heads), 1, "heads"});
    if (channels >= 0)
      l.args.push_back({Kind::Operand, unsigned(channels), 1, "channels"});
    l.args.push_back({Kind::Result, 0, 1, "mzx"});
    ext.append(l);

    llvm::raw_string_ostream os(out.source);
    os << prelude(o) << shapeConstants(*d) << kMath << kMaskBody;
    writeEntry(os, o, l,
               std::string("maskExpand(") + (heads >= 0 ? "heads" : "nullptr") + ", " +
                   (channels >= 0 ? "channels" : "nullptr") + ", mzx, " + ext.hActive() + ", " +
                   ext.pActive() + ")");
    out.kind = "mamba_mask";
    out.launches.push_back(std::move(l));
    return success();
  }
};

struct MambaConvEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MambaConvEmitter, kernel::MambaConvOp> {
  LogicalResult emitCuda(Operation *o, KernelSource &out) const {
    auto op = cast<kernel::MambaConvOp>(o);
    FailureOr<Dims> d = readDims(op);
    if (failed(d) || failed(readActivation(o, op.getProj(), *d)))
      return failure();
    auto wType = cast<RankedTensorType>(op.getConvWeight().getType());
    if (wType.getRank() != 2 || wType.getDimSize(0) != d->convChannels()) {
      op.emitOpError() << "expects conv_weight [" << d->convChannels() << ", K], got " << wType;
      return failure();
    }
    d->K = wType.getDimSize(1);
    if (failed(expectElements(o, op.getProj(), d->rows() * d->projWidth(), "proj")) ||
        failed(expectElements(o, op.getConvBias(), d->convChannels(), "conv_bias")) ||
        failed(expectElements(o, op.getResult(), d->rows() * d->convChannels(), "the result")) ||
        (op.getMzx() && failed(expectElements(o, op.getMzx(), d->hp(), "mzx"))))
      return failure();
    bool masked = static_cast<bool>(op.getMzx());
    constexpr int64_t kConvRows = 16;
    Launch l;
    l.entry = "mamba_conv_forward";
    l.block.x = blockFor(d->convChannels(), 128);
    l.grid.x = ceilDiv(d->rows(), kConvRows);
    l.grid.y = ceilDiv(d->convChannels(), l.block.x);
    l.args = {
        {Kind::Operand, 0, 1, "proj"}, {Kind::Operand, 1, 1, "w"}, {Kind::Operand, 2, 1, "b"}};
    if (masked)
      l.args.push_back({Kind::Operand, 3, 1, "mzx"});
    l.args.push_back({Kind::Result, 0, 1, "xbc"});

    llvm::raw_string_ostream os(out.source);
    os << prelude(o) << shapeConstants(*d) << "constexpr long long kConvRows = " << kConvRows
       << ";\n"
       << kMath << kConvForwardBody;
    writeEntry(os, o, l,
               std::string("convForward(proj, w, b, ") + (masked ? "mzx" : "nullptr") + ", xbc, " +
                   (op.getPrefixDense() ? "true" : "false") + ")");
    out.kind = "mamba_conv";
    out.launches.push_back(std::move(l));
    return success();
  }
};

struct MambaScanEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MambaScanEmitter, kernel::MambaScanOp> {
  LogicalResult emitCuda(Operation *o, KernelSource &out) const {
    auto op = cast<kernel::MambaScanOp>(o);
    FailureOr<Dims> d = readDims(op);
    if (failed(d) || failed(readActivation(o, op.getProj(), *d)))
      return failure();
    if (failed(expectElements(o, op.getProj(), d->rows() * d->projWidth(), "proj")) ||
        failed(expectElements(o, op.getXbc(), d->rows() * d->convChannels(), "xbc")) ||
        failed(expectElements(o, op.getDtBias(), d->H, "dt_bias")) ||
        failed(expectElements(o, op.getResult(), d->rows() * d->hp(), "the result")) ||
        (op.getHeads() && failed(expectElements(o, op.getHeads(), d->H + 2, "the heads mask"))))
      return failure();
    FailureOr<ScanLayout> s = scanLayout(o, *d, op.getChunk(), /*backward=*/false);
    if (failed(s))
      return failure();
    bool masked = static_cast<bool>(op.getHeads());
    Extents ext;
    ext.groups = d->G;
    if (masked && op.getPrefixDense())
      ext.headsOperand = 5;
    Launch l;
    l.entry = "mamba_scan_forward";
    l.grid.x = d->B * d->H;
    l.block.x = s->threads();
    l.sharedBytes = s->sharedBytes;
    l.args = {{Kind::Operand, 0, 1, "proj"},
              {Kind::Operand, 1, 1, "xbc"},
              {Kind::Operand, 2, 1, "dtBias"},
              {Kind::Operand, 3, 1, "aLog"},
              {Kind::Operand, 4, 1, "dSkip"}};
    if (masked)
      l.args.push_back({Kind::Operand, 5, 1, "heads"});
    l.args.push_back({Kind::Result, 0, 1, "y"});
    ext.append(l);

    llvm::raw_string_ostream os(out.source);
    os << prelude(o) << shapeConstants(*d) << scanConstants(*s) << kMath << kScanReductions
       << kScanForwardBody;
    writeEntry(os, o, l,
               std::string("scanForward(proj, xbc, dtBias, aLog, dSkip, ") +
                   (masked ? "heads" : "nullptr") + ", y, " + ext.hActive() + ")");
    out.kind = "mamba_scan";
    out.launches.push_back(std::move(l));
    return success();
  }
};

struct MambaGateNormEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MambaGateNormEmitter,
                                                        kernel::MambaGateNormOp> {
  LogicalResult emitCuda(Operation *o, KernelSource &out) const {
    auto op = cast<kernel::MambaGateNormOp>(o);
    FailureOr<Dims> d = readDims(op);
    if (failed(d) || failed(readActivation(o, op.getProj(), *d)))
      return failure();
    if (failed(expectElements(o, op.getY(), d->rows() * d->hp(), "y")) ||
        failed(expectElements(o, op.getProj(), d->rows() * d->projWidth(), "proj")) ||
        failed(expectElements(o, op.getNormWeight(), d->hp(), "norm_weight")) ||
        failed(expectElements(o, op.getResult(), d->rows() * d->hp(), "the result")) ||
        (op.getMzx() && failed(expectElements(o, op.getMzx(), d->hp(), "mzx"))) ||
        (op.getHeads() && failed(expectElements(o, op.getHeads(), d->H + 2, "the heads mask"))) ||
        (op.getChannels() &&
         failed(expectElements(o, op.getChannels(), d->P + 2, "the channels mask"))))
      return failure();
    int mzx = operandNumber(op, 3), heads = operandNumber(op, 4), channels = operandNumber(op, 5);
    Extents ext;
    ext.groups = d->G;
    if (op.getPrefixDense()) {
      ext.headsOperand = heads;
      ext.channelsOperand = channels;
    }
    int64_t groupSize = d->hp() / d->G;
    Launch l;
    l.entry = "mamba_gate_norm_forward";
    l.grid.x = d->rows();
    l.grid.y = d->G;
    l.block.x = blockFor(groupSize);
    l.args = {
        {Kind::Operand, 0, 1, "y"}, {Kind::Operand, 1, 1, "proj"}, {Kind::Operand, 2, 1, "nw"}};
    if (mzx >= 0)
      l.args.push_back({Kind::Operand, unsigned(mzx), 1, "mzx"});
    if (heads >= 0)
      l.args.push_back({Kind::Operand, unsigned(heads), 1, "heads"});
    if (channels >= 0)
      l.args.push_back({Kind::Operand, unsigned(channels), 1, "channels"});
    l.args.push_back({Kind::Result, 0, 1, "out"});
    ext.append(l);

    llvm::raw_string_ostream os(out.source);
    os << prelude(o) << shapeConstants(*d) << "constexpr long long kGroupSize = " << groupSize
       << ";\n"
       << "constexpr T kEps = T(" << doubleLiteral(op.getEpsilon().convertToDouble()) << ");\n"
       << kMath << kGateNormBody;
    writeEntry(os, o, l,
               std::string("gateNorm(y, proj, nw, ") + (mzx >= 0 ? "mzx" : "nullptr") + ", " +
                   (heads >= 0 ? "heads" : "nullptr") + ", " +
                   (channels >= 0 ? "channels" : "nullptr") + ", out, " + ext.hActive() + ", " +
                   ext.pActive() + ")");
    out.kind = "mamba_gate_norm";
    out.launches.push_back(std::move(l));
    return success();
  }
};

/// Bytes of per-head dB|dC (and per-step dot) scratch one wave of sequences of the scan
/// backward may use. NESTOR_CUDA_MAMBA_WAVE_BYTES overrides it (tests use it to run several
/// waves at small sizes).
int64_t waveBudget() {
  if (const char *env = std::getenv("NESTOR_CUDA_MAMBA_WAVE_BYTES"))
    if (long long v = std::atoll(env); v > 0)
      return v;
  return int64_t(512) << 20;
}

struct MambaInnerGradEmitter
    : public kernel::CudaEmitOpInterface::ExternalModel<MambaInnerGradEmitter,
                                                        kernel::MambaInnerGradOp> {
  LogicalResult emitCuda(Operation *o, KernelSource &out) const {
    auto op = cast<kernel::MambaInnerGradOp>(o);
    FailureOr<Dims> d = readDims(op);
    if (failed(d) || failed(readActivation(o, op.getProj(), *d)))
      return failure();
    auto wType = cast<RankedTensorType>(op.getConvWeight().getType());
    if (wType.getRank() != 2 || wType.getDimSize(0) != d->convChannels()) {
      op.emitOpError() << "expects conv_weight [" << d->convChannels() << ", K], got " << wType;
      return failure();
    }
    d->K = wType.getDimSize(1);
    int64_t rows = d->rows(), HP = d->hp(), C = d->convChannels(), H = d->H;
    if (failed(expectElements(o, op.getProj(), rows * d->projWidth(), "proj")) ||
        failed(expectElements(o, op.getXbc(), rows * C, "xbc")) ||
        failed(expectElements(o, op.getY(), rows * HP, "y")) ||
        failed(expectElements(o, op.getConvBias(), C, "conv_bias")) ||
        failed(expectElements(o, op.getDtBias(), H, "dt_bias")) ||
        failed(expectElements(o, op.getALog(), H, "a_log")) ||
        failed(expectElements(o, op.getDSkip(), H, "d_skip")) ||
        failed(expectElements(o, op.getNormWeight(), HP, "norm_weight")) ||
        failed(expectElements(o, op.getResultGrad(), rows * HP, "result_grad")) ||
        failed(expectElements(o, op.getProjGrad(), rows * d->projWidth(), "proj_grad")) ||
        failed(expectElements(o, op.getConvWeightGrad(), C * d->K, "conv_weight_grad")) ||
        (op.getHeads() && failed(expectElements(o, op.getHeads(), H + 2, "the heads mask"))) ||
        (op.getChannels() &&
         failed(expectElements(o, op.getChannels(), d->P + 2, "the channels mask"))))
      return failure();
    int heads = operandNumber(op, 10), channels = operandNumber(op, 11);
    int dHeads = resultNumber(op, 7), dChannels = resultNumber(op, 8);
    if ((dHeads >= 0 && heads < 0) || (dChannels >= 0 && channels < 0)) {
      op.emitOpError() << "a mask cotangent result needs its mask operand";
      return failure();
    }
    if ((dHeads >= 0 && failed(expectElements(o, op.getHeadsGrad(), H + 2, "heads_grad"))) ||
        (dChannels >= 0 &&
         failed(expectElements(o, op.getChannelsGrad(), d->P + 2, "channels_grad"))))
      return failure();
    FailureOr<ScanLayout> s = scanLayout(o, *d, op.getChunk(), /*backward=*/true);
    if (failed(s))
      return failure();
    Extents ext;
    ext.groups = d->G;
    if (op.getPrefixDense()) {
      ext.headsOperand = heads;
      ext.channelsOperand = channels;
    }
    bool masked = heads >= 0 || channels >= 0;

    int64_t e = d->elementBytes(), groupSize = HP / d->G;
    int64_t gnThreads = blockFor(groupSize), per = ceilDiv(groupSize, gnThreads);
    int64_t rowsPer = rowsPerPartial(rows), parts = ceilDiv(rows, rowsPer);
    int64_t pw = 2 * HP + 2 * d->G;
    int64_t perSeq = H * d->L * (2 * d->N * e + 8);
    int64_t waveSeqs = std::clamp<int64_t>(waveBudget() / std::max<int64_t>(1, perSeq), 1, d->B);
    int64_t convThreads = blockFor(C, 128);
    enum { kGnParts, kSums, kDY, kDXbc, kDbc, kF, kSParts, kCParts, kVec };
    out.scratchBytes = {parts * pw * e,
                        pw * e,
                        rows * HP * e,
                        rows * C * e,
                        waveSeqs * H * d->L * 2 * d->N * e,
                        waveSeqs * H * d->L * 8,
                        d->B * H * 4 * e,
                        parts * (d->K + 2) * C * e,
                        (HP + H) * e};

    // Parameter names of the operands, results and scratch buffers.
    std::vector<KernelArg> operandArgs = {
        {Kind::Operand, 0, 1, "proj"},  {Kind::Operand, 1, 1, "xbc"},
        {Kind::Operand, 2, 1, "y"},     {Kind::Operand, 3, 1, "convW"},
        {Kind::Operand, 4, 1, "convB"}, {Kind::Operand, 5, 1, "dtBias"},
        {Kind::Operand, 6, 1, "aLog"},  {Kind::Operand, 7, 1, "dSkip"},
        {Kind::Operand, 8, 1, "normW"}, {Kind::Operand, 9, 1, "dOut"}};
    auto operand = [&](unsigned i) { return operandArgs[i]; };
    auto result = [](unsigned i, const char *name) { return KernelArg{Kind::Result, i, 1, name}; };
    auto scratch = [](unsigned i, const char *name) {
      return KernelArg{Kind::Scratch, i, 1, name};
    };
    auto addMasks = [&](Launch &l) {
      if (heads >= 0)
        l.args.push_back({Kind::Operand, unsigned(heads), 1, "heads"});
      if (channels >= 0)
        l.args.push_back({Kind::Operand, unsigned(channels), 1, "channels"});
    };
    std::string hm = heads >= 0 ? "heads" : "nullptr", cm = channels >= 0 ? "channels" : "nullptr";
    std::string extArgs = ext.hActive() + ", " + ext.pActive();

    llvm::raw_string_ostream os(out.source);
    os << prelude(o) << shapeConstants(*d) << scanConstants(*s)
       << "constexpr long long kGroupSize = " << groupSize << ", kPer = " << per
       << ", kRowsPerPart = " << rowsPer << ", kParts = " << parts << ", kCParts = " << parts
       << ";\n"
       << "constexpr T kEps = T(" << doubleLiteral(op.getEpsilon().convertToDouble()) << ");\n"
       << kMath << kScanReductions << kInnerGradBody;

    {
      Launch l;
      l.entry = "mamba_inner_gate_norm_backward";
      l.grid.x = parts;
      l.grid.y = d->G;
      l.block.x = gnThreads;
      l.args = {operand(2), operand(0), operand(8), operand(9)};
      addMasks(l);
      l.args.push_back(result(0, "dProj"));
      l.args.push_back(scratch(kDY, "sDY"));
      l.args.push_back(scratch(kGnParts, "sParts"));
      ext.append(l);
      writeEntry(os, o, l,
                 "gateNormBackward(y, proj, normW, " + hm + ", " + cm +
                     ", dOut, (T *)sDY, dProj, (T *)sParts, " + extArgs + ")");
      out.launches.push_back(std::move(l));
    }
    {
      Launch l;
      l.entry = "mamba_inner_gate_norm_reduce";
      l.grid.x = strideBlocks(pw);
      l.block.x = 256;
      l.args = {scratch(kGnParts, "sParts"), result(6, "dNormW"), scratch(kSums, "sSums")};
      writeEntry(os, o, l, "gateNormReduce((const T *)sParts, dNormW, (T *)sSums)");
      out.launches.push_back(std::move(l));
    }
    for (int64_t b0 = 0, w = 0; b0 < d->B; b0 += waveSeqs, ++w) {
      int64_t nb = std::min(waveSeqs, d->B - b0);
      std::string tmpl = "<" + std::to_string(b0) + ", " + std::to_string(nb) + ">";
      Launch l;
      l.entry = "mamba_inner_scan_backward_" + std::to_string(w);
      l.grid.x = nb * H;
      l.block.x = s->threads();
      l.sharedBytes = s->sharedBytes;
      l.args = {operand(0), operand(1), operand(5), operand(6), operand(7)};
      if (heads >= 0)
        l.args.push_back({Kind::Operand, unsigned(heads), 1, "heads"});
      l.args.push_back(result(0, "dProj"));
      l.args.push_back(scratch(kDY, "sDY"));
      l.args.push_back(scratch(kDXbc, "sDXbc"));
      l.args.push_back(scratch(kSParts, "sSParts"));
      l.args.push_back(scratch(kDbc, "sDbc"));
      l.args.push_back(scratch(kF, "sF"));
      ext.append(l);
      writeEntry(os, o, l,
                 "scanBackward" + tmpl + "(proj, xbc, dtBias, aLog, dSkip, " + hm +
                     ", (const T *)sDY, (T *)sDXbc, dProj, (T *)sSParts, (T *)sDbc, "
                     "(double *)sF, " +
                     extArgs + ")");
      out.launches.push_back(std::move(l));

      Launch sum;
      sum.entry = "mamba_inner_bc_sum_" + std::to_string(w);
      sum.grid.x = strideBlocks(nb * d->L * d->G * 2 * d->N);
      sum.block.x = 256;
      sum.args = {scratch(kDbc, "sDbc"), scratch(kDXbc, "sDXbc")};
      if (ext.headsOperand >= 0)
        sum.args.push_back({Kind::Extent, unsigned(heads), d->G, "hActive"});
      writeEntry(os, o, sum,
                 "bcSum" + tmpl + "((const T *)sDbc, (T *)sDXbc, " + ext.hActive() + ")");
      out.launches.push_back(std::move(sum));
    }
    {
      Launch l;
      l.entry = "mamba_inner_scan_reduce";
      l.grid.x = 1;
      l.block.x = blockFor(H);
      l.args = {scratch(kSParts, "sSParts"), result(3, "dDtBias"), result(4, "dALog"),
                result(5, "dD"), scratch(kVec, "sVec")};
      writeEntry(os, o, l, "scanReduce((const T *)sSParts, dDtBias, dALog, dD, (T *)sVec)");
      out.launches.push_back(std::move(l));
    }
    {
      Launch l;
      l.entry = "mamba_inner_conv_backward";
      l.grid.x = parts;
      l.grid.y = ceilDiv(C, convThreads);
      l.block.x = convThreads;
      l.args = {operand(0), operand(3), operand(4)};
      addMasks(l);
      l.args.push_back(scratch(kDXbc, "sDXbc"));
      l.args.push_back(scratch(kCParts, "sCParts"));
      ext.append(l);
      writeEntry(os, o, l,
                 "convBackward(proj, convW, convB, " + hm + ", " + cm +
                     ", (T *)sDXbc, (T *)sCParts, " + extArgs + ")");
      out.launches.push_back(std::move(l));
    }
    {
      Launch l;
      l.entry = "mamba_inner_conv_input_grad";
      l.grid.x = strideBlocks(rows * C);
      l.block.x = 256;
      l.args = {operand(3)};
      addMasks(l);
      l.args.push_back(scratch(kDXbc, "sDXbc"));
      l.args.push_back(result(0, "dProj"));
      writeEntry(os, o, l, "convInputGrad(convW, " + hm + ", " + cm + ", (const T *)sDXbc, dProj)");
      out.launches.push_back(std::move(l));
    }
    {
      Launch l;
      l.entry = "mamba_inner_conv_reduce";
      l.grid.x = strideBlocks(C);
      l.block.x = 256;
      l.args = {scratch(kCParts, "sCParts"), scratch(kSums, "sSums"), result(1, "dConvW"),
                result(2, "dConvB"), scratch(kVec, "sVec")};
      writeEntry(os, o, l,
                 "convReduce((const T *)sCParts, (const T *)sSums, dConvW, dConvB, (T *)sVec)");
      out.launches.push_back(std::move(l));
    }
    if (masked && (dHeads >= 0 || dChannels >= 0)) {
      Launch l;
      l.entry = "mamba_inner_mask_backward";
      l.grid.x = 1;
      l.block.x = blockFor(std::max(H, d->P));
      addMasks(l);
      l.args.push_back(scratch(kSums, "sSums"));
      l.args.push_back(scratch(kVec, "sVec"));
      if (dHeads >= 0)
        l.args.push_back(result(unsigned(dHeads), "dHeads"));
      if (dChannels >= 0)
        l.args.push_back(result(unsigned(dChannels), "dChannels"));
      ext.append(l);
      writeEntry(os, o, l,
                 "maskBackward(" + hm + ", " + cm + ", (const T *)sSums, (const T *)sVec, " +
                     (dHeads >= 0 ? "dHeads" : "nullptr") + ", " +
                     (dChannels >= 0 ? "dChannels" : "nullptr") + ", " + extArgs + ")");
      out.launches.push_back(std::move(l));
    }
    out.kind = "mamba_inner_grad";
    return success();
  }
};

} // namespace

void nestor::cuda::registerMambaEmitters(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, kernel::KernelDialect *) {
    kernel::MambaMaskOp::attachInterface<MambaMaskEmitter>(*ctx);
    kernel::MambaConvOp::attachInterface<MambaConvEmitter>(*ctx);
    kernel::MambaScanOp::attachInterface<MambaScanEmitter>(*ctx);
    kernel::MambaGateNormOp::attachInterface<MambaGateNormEmitter>(*ctx);
    kernel::MambaInnerGradOp::attachInterface<MambaInnerGradEmitter>(*ctx);
  });
}
