//===- Mamba.cpp - Mamba2 mixer CPU kernels: conv, scan, gated norm --------===//
//
// The middle of a Mamba2 mixer, between its two projections, in the pieces of Kernels.h. The
// formulas are those of the float64 reference evaluator (Evaluator::mamba2 and mamba2Grad in
// runtime/reference/Reference.cpp); the scan runs through the chunked SSD kernels of SSD.h.
//
// Prefix-dense execution skips inactive heads (h % (H/G) >= hActive) and channels
// (p >= pActive) outright: their x channels are exactly zero under the hard masks that allow it,
// so every product they enter is zero too. B and C are shared by a group's heads and always run.
//
// Thread-count independence: forward work is split over rows or (sequence, head) pairs, which
// are independent. Backward reductions are never split by thread: the conv backward is
// parallel over channel stripes (the conv is depthwise, so a stripe owns its weights, bias and
// dProj columns and walks the rows in order); the gated norm sums fixed blocks of rows and adds
// the block partials in block order; the scan keeps per-(sequence, head) partials and sums them
// in sequence order, and the heads of a group (which share B and C) write their dB|dC into
// private buffers that are added in head order.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"
#include "lib/codegen/cpu/SSD.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace nestor::cpu {
namespace {

constexpr int64_t kRowBlock = 64; // rows per partial of the gated norm's column reductions
constexpr int64_t kStripe = 64;   // conv channels per conv-backward task
// Elements of private dB|dC buffers the scan backward may hold at once (it processes waves of
// sequences that fit); at least one sequence's worth is always used.
constexpr int64_t kWaveElements = int64_t(1) << 22;

template <typename T> T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <typename T> T silu(T x) { return x * sigmoid(x); }
// The reference's cut-off: above 20, log(1 + e^x) is x to within e^-20, and e^x cannot overflow.
template <typename T> T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <typename T> T maskAt(const T *mask, int64_t i) { return mask ? mask[i] : T(1); }

using Range = std::pair<int64_t, int64_t>; // [begin, end)

/// The prefix-dense extents of a shape.
struct Active {
  int64_t perGroup, hActive, pActive, headDim;
  explicit Active(const MambaShape &s)
      : perGroup(s.heads / s.groups), hActive(s.hActive), pActive(s.pActive), headDim(s.headDim) {}
  bool head(int64_t h) const { return h % perGroup < hActive; }
  bool full() const { return hActive == perGroup && pActive == headDim; }
};

/// The active conv channels as maximal contiguous runs: the first pActive x channels of every
/// active head, then all of B and C. At full width this is the single run [0, HP + 2GN).
std::vector<Range> convRuns(const MambaShape &s) {
  std::vector<Range> runs;
  auto add = [&](int64_t begin, int64_t end) {
    if (begin == end)
      return;
    if (!runs.empty() && runs.back().second == begin)
      runs.back().second = end;
    else
      runs.emplace_back(begin, end);
  };
  Active act(s);
  for (int64_t h = 0; h < s.heads; ++h)
    if (act.head(h))
      add(h * s.headDim, h * s.headDim + s.pActive);
  add(s.hp(), s.convChannels());
  return runs;
}

/// The multiplier of every conv channel, applied to the conv input and to its output: mzx on
/// the x channels, 1 on B and C.
template <typename T> std::vector<T> convMultipliers(const MambaShape &s, const T *mzx) {
  std::vector<T> mult(s.convChannels(), T(1));
  if (mzx)
    std::copy(mzx, mzx + s.hp(), mult.begin());
  return mult;
}

/// convW [channels, K] transposed to [K, channels], so that the loops over channels are
/// contiguous in every operand.
template <typename T> std::vector<T> transposeConv(const MambaShape &s, const T *convW) {
  int64_t C = s.convChannels(), K = s.convKernel;
  std::vector<T> wT(K * C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k)
      wT[k * C + c] = convW[c * K + k];
  return wT;
}

/// The SSD operands of head h of sequence b over its first `on` channels (channels past
/// pActive are zero in x, so their state rows and outputs are zero), with `delta` [L] filled
/// from proj's dt column: delta = softplus(dt * headMask.m[h] + dtBias[h]).
template <typename T>
SSDHead<T> scanHead(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias,
                    const T *aLog, const T *dSkip, const T *headMask, int64_t b, int64_t h,
                    int64_t on, T *delta, T *y) {
  int64_t L = s.length, HP = s.hp(), GN = s.gn(), C = s.convChannels(), W = s.projWidth();
  int64_t N = s.stateSize, row0 = b * L, g = h / (s.heads / s.groups), dtCol = HP + C;
  T mh = headMask ? headMask[h] : T(1);
  for (int64_t t = 0; t < L; ++t)
    delta[t] = softplus(proj[(row0 + t) * W + dtCol + h] * mh + dtBias[h]);
  SSDHead<T> hd;
  hd.length = L, hd.headDim = on, hd.stateSize = N;
  hd.x = xbc + row0 * C + h * s.headDim, hd.xStride = C;
  hd.b = xbc + row0 * C + HP + g * N, hd.bStride = C;
  hd.c = xbc + row0 * C + HP + GN + g * N, hd.cStride = C;
  hd.delta = delta, hd.deltaStride = 1;
  hd.a = -std::exp(aLog[h]), hd.d = dSkip[h];
  hd.y = y + row0 * HP + h * s.headDim, hd.yStride = HP;
  return hd;
}

/// The chunk length actually used: a chunk longer than the sequence computes the same as one
/// of the sequence's length, with less scratch.
int64_t clampChunk(int64_t chunk, int64_t length) {
  return std::max<int64_t>(1, std::min(chunk, length));
}

} // namespace

//===----------------------------------------------------------------------===//
// Masks
//===----------------------------------------------------------------------===//

template <typename T>
void mambaMaskExpand(const MambaShape &s, const T *headMask, const T *channelMask, T *mzx) {
  Active act(s);
  int64_t P = s.headDim;
  for (int64_t h = 0; h < s.heads; ++h) {
    T *row = mzx + h * P;
    int64_t on = act.head(h) ? s.pActive : 0;
    for (int64_t p = 0; p < on; ++p)
      row[p] = maskAt(headMask, h) * maskAt(channelMask, p);
    std::fill(row + on, row + P, T(0));
  }
}

template <typename T>
void mambaProjSelect(const MambaShape &s, const T *headMask, const T *channelMask, T *select) {
  int64_t hp = s.hp(), gn = s.gn();
  mambaMaskExpand<T>(s, headMask, channelMask, select);
  std::copy(select, select + hp, select + hp);
  std::fill(select + 2 * hp, select + 2 * hp + 2 * gn, T(1));
  Active act(s);
  for (int64_t h = 0; h < s.heads; ++h)
    select[2 * hp + 2 * gn + h] = act.head(h) ? maskAt(headMask, h) : T(0);
}

template <typename T>
void mambaMaskBackward(const MambaShape &s, const T *headMask, const T *channelMask, const T *dMzx,
                       T dPhi, T dSigma, T *dHead, T *dChannel) {
  Active act(s);
  int64_t H = s.heads, P = s.headDim;
  // mzx = head[h] * channel[p]; phi and sigma are the products of the two masks' entries.
  if (dHead) {
    for (int64_t h = 0; h < H; ++h) {
      T acc = 0;
      if (act.head(h))
        for (int64_t p = 0; p < s.pActive; ++p)
          acc += dMzx[h * P + p] * maskAt(channelMask, p);
      dHead[h] = acc;
    }
    dHead[H] = dPhi * maskAt(channelMask, P);
    dHead[H + 1] = dSigma * maskAt(channelMask, P + 1);
  }
  if (dChannel) {
    std::fill(dChannel, dChannel + P, T(0));
    for (int64_t h = 0; h < H; ++h)
      if (act.head(h))
        for (int64_t p = 0; p < s.pActive; ++p)
          dChannel[p] += dMzx[h * P + p] * maskAt(headMask, h);
    dChannel[P] = dPhi * maskAt(headMask, H);
    dChannel[P + 1] = dSigma * maskAt(headMask, H + 1);
  }
}

//===----------------------------------------------------------------------===//
// Causal depthwise convolution
//===----------------------------------------------------------------------===//

template <typename T>
void mambaConvForward(const MambaShape &s, const T *proj, const T *convW, const T *convB,
                      const T *mzx, T *xbc) {
  int64_t L = s.length, K = s.convKernel, C = s.convChannels(), W = s.projWidth(), HP = s.hp();
  std::vector<Range> runs = convRuns(s);
  std::vector<T> mult = convMultipliers(s, mzx), wT = transposeConv(s, convW);
  bool full = Active(s).full();
#pragma omp parallel for schedule(static) if (s.rows() > 1)
  for (int64_t r = 0; r < s.rows(); ++r) {
    int64_t t = r % L;
    T *o = xbc + r * C;
    if (!full)
      std::fill(o, o + HP, T(0)); // inactive x channels
    for (auto [c0, c1] : runs) {
      // o = sum_k w_k u_{t-K+1+k} over the unmasked input u; the input mask is applied to the
      // sum (it is per channel), so the same sum serves the mask cotangent in the backward.
      std::fill(o + c0, o + c1, T(0));
      for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
        const T *u = proj + (r - (K - 1) + k) * W + HP, *w = wT.data() + k * C;
        for (int64_t c = c0; c < c1; ++c)
          o[c] += w[c] * u[c];
      }
      for (int64_t c = c0; c < c1; ++c)
        o[c] = silu(convB[c] + mult[c] * o[c]) * mult[c];
    }
  }
}

template <typename T>
void mambaConvStep(const MambaShape &s, const T *proj, const T *convW, const T *convB, const T *mzx,
                   T *state, T *xbc) {
  int64_t L = s.length, K = s.convKernel, C = s.convChannels(), W = s.projWidth(), HP = s.hp();
  std::vector<Range> runs = convRuns(s);
  std::vector<T> mult = convMultipliers(s, mzx), wT = transposeConv(s, convW);
  bool full = Active(s).full();
#pragma omp parallel for schedule(static) if (s.batch > 1)
  for (int64_t b = 0; b < s.batch; ++b) {
    // The window: the K-1 inputs before the new rows, then the new rows' inputs.
    std::vector<T> u((K - 1 + L) * C);
    T *st = state + b * (K - 1) * C;
    std::copy(st, st + (K - 1) * C, u.begin());
    for (int64_t t = 0; t < L; ++t) {
      const T *row = proj + (b * L + t) * W + HP;
      std::copy(row, row + C, u.begin() + (K - 1 + t) * C);
    }
    for (int64_t t = 0; t < L; ++t) {
      T *o = xbc + (b * L + t) * C;
      if (!full)
        std::fill(o, o + HP, T(0)); // inactive x channels
      for (auto [c0, c1] : runs) {
        std::fill(o + c0, o + c1, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const T *ur = u.data() + (t + k) * C, *w = wT.data() + k * C;
          for (int64_t c = c0; c < c1; ++c)
            o[c] += w[c] * ur[c];
        }
        for (int64_t c = c0; c < c1; ++c)
          o[c] = silu(convB[c] + mult[c] * o[c]) * mult[c];
      }
    }
    std::copy(u.begin() + L * C, u.end(), st);
  }
}

template <typename T>
void mambaConvBackward(const MambaShape &s, const T *proj, const T *convW, const T *convB,
                       const T *mzx, const T *dXbc, T *dProj, T *dConvW, T *dConvB, T *dMzx) {
  int64_t L = s.length, K = s.convKernel, C = s.convChannels(), W = s.projWidth(), HP = s.hp();
  std::vector<T> mult = convMultipliers(s, mzx), wT = transposeConv(s, convW);
  std::fill(dConvW, dConvW + C * K, T(0)); // inactive channels stay 0
  std::fill(dConvB, dConvB + C, T(0));
  std::vector<Range> stripes;
  for (auto [c0, c1] : convRuns(s))
    for (int64_t c = c0; c < c1; c += kStripe)
      stripes.emplace_back(c, std::min(c1, c + kStripe));

#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(stripes.size()); ++i) {
    int64_t c0 = stripes[i].first, n = stripes[i].second - c0;
    // Stripe-local: the unmasked conv sum and dpre of the current row, and the accumulators
    // of dConvB, dMzx and dConvW ([K, kStripe]).
    std::vector<T> local((4 + K) * kStripe, T(0));
    T *convU = local.data(), *dpre = convU + kStripe, *accB = dpre + kStripe;
    T *accM = accB + kStripe, *accW = accM + kStripe;
    const T *m = mult.data() + c0, *bias = convB + c0;
    for (int64_t r = 0; r < s.rows(); ++r) {
      int64_t t = r % L, k0 = std::max<int64_t>(0, K - 1 - t);
      std::fill(convU, convU + n, T(0));
      for (int64_t k = k0; k < K; ++k) {
        const T *u = proj + (r - (K - 1) + k) * W + HP + c0, *w = wT.data() + k * C + c0;
        for (int64_t j = 0; j < n; ++j)
          convU[j] += w[j] * u[j];
      }
      // xbc = silu(pre) m with pre = b + m convU: the output mask's cotangent is
      // dXbc silu(pre), the input mask's dpre convU.
      const T *g = dXbc + r * C + c0;
      for (int64_t j = 0; j < n; ++j) {
        T pre = bias[j] + m[j] * convU[j], sg = sigmoid(pre);
        T d = g[j] * m[j] * sg * (T(1) + pre * (T(1) - sg));
        dpre[j] = d;
        accB[j] += d;
        accM[j] += g[j] * pre * sg + d * convU[j];
      }
      for (int64_t k = k0; k < K; ++k) {
        int64_t src = r - (K - 1) + k;
        const T *u = proj + src * W + HP + c0, *w = wT.data() + k * C + c0;
        T *du = dProj + src * W + HP + c0, *aw = accW + k * kStripe;
        for (int64_t j = 0; j < n; ++j) {
          aw[j] += dpre[j] * m[j] * u[j];
          du[j] += dpre[j] * w[j] * m[j];
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      int64_t c = c0 + j;
      dConvB[c] = accB[j];
      for (int64_t k = 0; k < K; ++k)
        dConvW[c * K + k] = accW[k * kStripe + j];
      if (dMzx && c < HP)
        dMzx[c] += accM[j];
    }
  }
}

//===----------------------------------------------------------------------===//
// The SSM scan
//===----------------------------------------------------------------------===//

template <typename T>
void mambaScanForward(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias,
                      const T *aLog, const T *dSkip, const T *headMask, int64_t chunk, T *y) {
  int64_t L = s.length, H = s.heads, P = s.headDim, N = s.stateSize, HP = s.hp();
  Active act(s);
  chunk = clampChunk(chunk, L);
#pragma omp parallel
  {
    std::vector<T> scratch(ssdChunkedScratchSize(P, N, chunk)), delta(L);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < s.batch * H; ++task) {
      int64_t b = task / H, h = task % H;
      T *yh = y + b * L * HP + h * P;
      int64_t on = act.head(h) ? s.pActive : 0;
      if (on)
        ssdChunked(scanHead(s, proj, xbc, dtBias, aLog, dSkip, headMask, b, h, on, delta.data(), y),
                   chunk, scratch.data());
      for (int64_t t = 0; t < L; ++t)
        std::fill(yh + t * HP + on, yh + t * HP + P, T(0));
    }
  }
}

template <typename T>
void mambaScanStep(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias, const T *aLog,
                   const T *dSkip, const T *headMask, T *state, T *y) {
  int64_t L = s.length, H = s.heads, P = s.headDim, N = s.stateSize, HP = s.hp();
  Active act(s);
#pragma omp parallel for schedule(static) if (s.batch * H * L * P * N > (1 << 16))
  for (int64_t task = 0; task < s.batch * H; ++task) {
    int64_t b = task / H, h = task % H;
    T *yh = y + b * L * HP + h * P;
    int64_t on = act.head(h) ? s.pActive : 0;
    if (on) {
      std::vector<T> delta(L);
      SSDHead<T> hd =
          scanHead(s, proj, xbc, dtBias, aLog, dSkip, headMask, b, h, on, delta.data(), y);
      // The active channels' rows of the head's [P, N] state: a prefix of it.
      hd.state = state + (b * H + h) * P * N;
      ssdSequential(hd);
    }
    for (int64_t t = 0; t < L; ++t)
      std::fill(yh + t * HP + on, yh + t * HP + P, T(0));
  }
}

template <typename T>
void mambaScanBackward(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias,
                       const T *aLog, const T *dSkip, const T *headMask, int64_t chunk, const T *dY,
                       T *dXbc, T *dProj, T *dDtBias, T *dALog, T *dD, T *dHeadM) {
  int64_t B = s.batch, L = s.length, H = s.heads, P = s.headDim, N = s.stateSize, G = s.groups;
  int64_t HP = s.hp(), GN = s.gn(), C = s.convChannels(), W = s.projWidth(), dtCol = HP + C;
  Active act(s);
  chunk = clampChunk(chunk, L);
  // Per (sequence, head): the partial sums of dDtBias, dHeadM, dALog and dD.
  enum { kDtBias, kHeadM, kALog, kD, kPartials };
  std::vector<T> partial(B * H * kPartials, T(0));
  // The heads of a group share B and C: each head writes its dB|dC ([L, 2N]) privately and
  // the heads are added in order afterwards, a wave of sequences at a time.
  int64_t perHead = L * 2 * N, perSeq = H * perHead;
  int64_t wave =
      std::clamp<int64_t>(kWaveElements / std::max<int64_t>(1, perSeq), 1, std::max<int64_t>(1, B));
  std::vector<T> dbc(std::min(wave, B) * perSeq);

  for (int64_t b0 = 0; b0 < B; b0 += wave) {
    int64_t nb = std::min(wave, B - b0);
#pragma omp parallel
    {
      std::vector<T> delta(L), dDelta(L), bc(perHead);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < nb * H; ++task) {
        int64_t b = b0 + task / H, h = task % H, row0 = b * L, g = h / act.perGroup;
        if (!act.head(h))
          continue;
        T mh = maskAt(headMask, h), A = -std::exp(aLog[h]);
        // The group's B and C, packed [L, 2N] so that their cotangents can share the layout.
        for (int64_t t = 0; t < L; ++t) {
          const T *row = xbc + (row0 + t) * C + HP + g * N;
          delta[t] = softplus(proj[(row0 + t) * W + dtCol + h] * mh + dtBias[h]);
          dDelta[t] = 0;
          std::copy(row, row + N, bc.begin() + t * 2 * N);
          std::copy(row + GN, row + GN + N, bc.begin() + t * 2 * N + N);
        }
        T *mine = dbc.data() + task * perHead;
        std::fill(mine, mine + perHead, T(0));
        SSDHead<T> hd;
        hd.length = L, hd.headDim = s.pActive, hd.stateSize = N;
        hd.x = xbc + row0 * C + h * P, hd.xStride = C;
        hd.b = bc.data(), hd.bStride = 2 * N;
        hd.c = bc.data() + N, hd.cStride = 2 * N;
        hd.delta = delta.data(), hd.deltaStride = 1;
        hd.a = A, hd.d = dSkip[h];
        hd.yStride = HP; // the stride of dy
        SSDHeadGrad<T> gr;
        gr.dy = dY + row0 * HP + h * P;
        gr.dx = dXbc + row0 * C + h * P;
        gr.db = mine, gr.dc = mine + N;
        gr.dDelta = dDelta.data();
        ssdChunkedBackward(hd, chunk, gr);
        // delta = softplus(dt mh + bias): softplus' = sigmoid.
        T sumDt = 0, sumHm = 0;
        for (int64_t t = 0; t < L; ++t) {
          T dt = proj[(row0 + t) * W + dtCol + h];
          T ddt = dDelta[t] * sigmoid(dt * mh + dtBias[h]);
          sumDt += ddt;
          sumHm += ddt * dt;
          dProj[(row0 + t) * W + dtCol + h] += ddt * mh;
        }
        T *part = &partial[(b * H + h) * kPartials];
        part[kDtBias] = sumDt;
        part[kHeadM] = sumHm;
        part[kALog] = gr.dA * A; // A = -exp(aLog): dA/daLog = A
        part[kD] = gr.dD;
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < nb * G; ++task) {
      int64_t bl = task / G, g = task % G, row0 = (b0 + bl) * L;
      for (int64_t h = g * act.perGroup; h < (g + 1) * act.perGroup; ++h) {
        if (!act.head(h))
          continue;
        const T *src = dbc.data() + (bl * H + h) * perHead;
        for (int64_t t = 0; t < L; ++t) {
          T *db = dXbc + (row0 + t) * C + HP + g * N, *dc = db + GN;
          const T *sb = src + t * 2 * N, *sc = sb + N;
          for (int64_t n = 0; n < N; ++n) {
            db[n] += sb[n];
            dc[n] += sc[n];
          }
        }
      }
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    T sums[kPartials] = {};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < kPartials; ++i)
        sums[i] += partial[(b * H + h) * kPartials + i];
    dDtBias[h] = sums[kDtBias];
    dALog[h] = sums[kALog];
    dD[h] = sums[kD];
    if (dHeadM)
      dHeadM[h] += sums[kHeadM];
  }
}

//===----------------------------------------------------------------------===//
// The gate and the group RMSNorm
//===----------------------------------------------------------------------===//

template <typename T>
void mambaGateNormForward(const MambaShape &s, const T *y, const T *proj, const T *mzx,
                          const T *normW, double eps, T phi, T sigma, T *out) {
  int64_t P = s.headDim, G = s.groups, HP = s.hp(), W = s.projWidth();
  int64_t groupSize = HP / G, pA = s.pActive;
  Active act(s);
  T epsPhi = T(eps) * phi;
#pragma omp parallel if (s.rows() > 1)
  {
    std::vector<T> gated(HP);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < s.rows(); ++r) {
      const T *yr = y + r * HP, *z = proj + r * W;
      T *o = out + r * HP;
      for (int64_t g = 0; g < G; ++g) {
        // Inactive channels of the group are zero: they add nothing to the sum of squares,
        // but the mean is still over the whole group.
        T ss = 0;
        for (int64_t h = g * act.perGroup; h < (g + 1) * act.perGroup; ++h) {
          if (!act.head(h))
            continue;
          for (int64_t c = h * P; c < h * P + pA; ++c) {
            T v = gated[c] = yr[c] * silu(z[c] * maskAt(mzx, c));
            ss += v * v;
          }
        }
        T scale = sigma / std::sqrt(ss / T(groupSize) + epsPhi);
        for (int64_t h = g * act.perGroup; h < (g + 1) * act.perGroup; ++h) {
          int64_t on = act.head(h) ? pA : 0;
          for (int64_t c = h * P; c < h * P + on; ++c)
            o[c] = normW[c] * gated[c] * scale;
          std::fill(o + h * P + on, o + (h + 1) * P, T(0));
        }
      }
    }
  }
}

template <typename T>
void mambaGateNormBackward(const MambaShape &s, const T *y, const T *proj, const T *mzx,
                           const T *normW, double eps, T phi, T sigma, const T *dOut, T *dY,
                           T *dProj, T *dNormW, T *dMzx, T *dPhi, T *dSigma) {
  int64_t P = s.headDim, G = s.groups, HP = s.hp(), W = s.projWidth();
  int64_t groupSize = HP / G, pA = s.pActive, rows = s.rows();
  Active act(s);
  T epsPhi = T(eps) * phi;
  // Per block of rows: [dNormW (HP) | dMzx (HP) | dPhi | dSigma].
  int64_t blocks = (rows + kRowBlock - 1) / kRowBlock, width = 2 * HP + 2;
  std::vector<T> parts(blocks * width, T(0));
#pragma omp parallel
  {
    std::vector<T> gated(HP), dGated(HP);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      T *pW = &parts[blk * width], *pM = pW + HP;
      T dphi = 0, dsigma = 0;
      for (int64_t r = blk * kRowBlock; r < std::min(rows, (blk + 1) * kRowBlock); ++r) {
        const T *yr = y + r * HP, *z = proj + r * W, *g = dOut + r * HP;
        T *dyr = dY + r * HP, *dz = dProj + r * W;
        for (int64_t grp = 0; grp < G; ++grp) {
          int64_t h0 = grp * act.perGroup, h1 = h0 + act.perGroup;
          T ss = 0;
          for (int64_t h = h0; h < h1; ++h)
            if (act.head(h))
              for (int64_t c = h * P; c < h * P + pA; ++c) {
                T v = gated[c] = yr[c] * silu(z[c] * maskAt(mzx, c));
                ss += v * v;
              }
          T inv = T(1) / std::sqrt(ss / T(groupSize) + epsPhi), inv3 = inv * inv * inv;
          // out = sigma w v inv: gx = sum dOut sigma w v is the cotangent through inv.
          T gx = 0;
          for (int64_t h = h0; h < h1; ++h)
            if (act.head(h))
              for (int64_t c = h * P; c < h * P + pA; ++c) {
                T v = gated[c];
                gx += g[c] * sigma * normW[c] * v;
                pW[c] += g[c] * sigma * v * inv;
                dsigma += g[c] * normW[c] * v * inv;
              }
          T coef = inv3 / T(groupSize) * gx;
          for (int64_t h = h0; h < h1; ++h)
            if (act.head(h))
              for (int64_t c = h * P; c < h * P + pA; ++c)
                dGated[c] = g[c] * sigma * normW[c] * inv - gated[c] * coef;
          dphi += T(-0.5) * T(eps) * inv3 * gx;
        }
        // The gate v = y silu(zm), zm = z m.
        for (int64_t h = 0; h < s.heads; ++h) {
          int64_t on = act.head(h) ? pA : 0;
          for (int64_t c = h * P; c < h * P + on; ++c) {
            T m = maskAt(mzx, c), zm = z[c] * m, sg = sigmoid(zm);
            dyr[c] = dGated[c] * zm * sg;
            T dzm = dGated[c] * yr[c] * sg * (T(1) + zm * (T(1) - sg));
            dz[c] += dzm * m;
            pM[c] += dzm * z[c];
          }
          std::fill(dyr + h * P + on, dyr + (h + 1) * P, T(0));
        }
      }
      pW[2 * HP] = dphi;
      pW[2 * HP + 1] = dsigma;
    }
  }
  std::vector<T> total(width, T(0));
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t i = 0; i < width; ++i)
      total[i] += parts[blk * width + i];
  std::copy_n(total.data(), HP, dNormW);
  if (dMzx)
    for (int64_t c = 0; c < HP; ++c)
      dMzx[c] += total[HP + c];
  *dPhi = total[2 * HP];
  *dSigma = total[2 * HP + 1];
}

#define NESTOR_INSTANTIATE(T)                                                                      \
  template void mambaMaskExpand<T>(const MambaShape &, const T *, const T *, T *);                 \
  template void mambaProjSelect<T>(const MambaShape &, const T *, const T *, T *);                 \
  template void mambaMaskBackward<T>(const MambaShape &, const T *, const T *, const T *, T, T,    \
                                     T *, T *);                                                    \
  template void mambaConvForward<T>(const MambaShape &, const T *, const T *, const T *,           \
                                    const T *, T *);                                               \
  template void mambaConvBackward<T>(const MambaShape &, const T *, const T *, const T *,          \
                                     const T *, const T *, T *, T *, T *, T *);                    \
  template void mambaConvStep<T>(const MambaShape &, const T *, const T *, const T *, const T *,   \
                                 T *, T *);                                                        \
  template void mambaScanStep<T>(const MambaShape &, const T *, const T *, const T *, const T *,   \
                                 const T *, const T *, T *, T *);                                  \
  template void mambaScanForward<T>(const MambaShape &, const T *, const T *, const T *,           \
                                    const T *, const T *, const T *, int64_t, T *);                \
  template void mambaScanBackward<T>(const MambaShape &, const T *, const T *, const T *,          \
                                     const T *, const T *, const T *, int64_t, const T *, T *,     \
                                     T *, T *, T *, T *, T *);                                     \
  template void mambaGateNormForward<T>(const MambaShape &, const T *, const T *, const T *,       \
                                        const T *, double, T, T, T *);                             \
  template void mambaGateNormBackward<T>(const MambaShape &, const T *, const T *, const T *,      \
                                         const T *, double, T, T, const T *, T *, T *, T *, T *,   \
                                         T *, T *);

NESTOR_INSTANTIATE(float)
NESTOR_INSTANTIATE(double)
#undef NESTOR_INSTANTIATE

} // namespace nestor::cpu
