//===- CpuMambaTest.cpp - The Mamba2 mixer kernels against plain loops -----===//
//
// The CPU kernels of the mixer middle (conv -> scan -> gated group norm, Kernels.h) against a
// float64 reference written here as the plain loops of Evaluator::mamba2 (sequential
// recurrence, no chunking, no skipping), at awkward sizes: lengths 1, 7, 13, 37 around chunks
// of 8 and 16, groups of 1, 2 and 6 heads, P = 5, N = 3, conv kernels of 4 and 1.
//  - Forward: each piece in float64 equals the reference to rounding; float32 is close.
//  - Backward: each piece's cotangents equal central differences of sum(output * weights) of
//    the reference, and so do the whole chain's (mask multipliers, phi and sigma included,
//    through mambaMaskExpand / mambaMaskBackward). Outputs documented as overwritten are
//    pre-filled with NaN, accumulating ones with random values that are subtracted after.
//  - Prefix-dense: with hard masks, reduced hActive / pActive give the full-width results.
//  - The results are bit-identical with one and with two OpenMP threads.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

using namespace nestor::cpu;

namespace {

using Vec = std::vector<double>;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Config {
  int64_t batch, length, heads, groups, headDim, stateSize, convKernel, chunk;
  bool withHead = true, withChannel = true; // masks given (false: nullptr)
};

void PrintTo(const Config &c, std::ostream *os) {
  *os << "B" << c.batch << " L" << c.length << " H" << c.heads << " G" << c.groups << " P"
      << c.headDim << " N" << c.stateSize << " K" << c.convKernel << " chunk" << c.chunk
      << (c.withHead ? " head-mask" : "") << (c.withChannel ? " channel-mask" : "");
}

MambaShape shapeOf(const Config &c, int64_t hActive = -1, int64_t pActive = -1) {
  MambaShape s;
  s.batch = c.batch, s.length = c.length, s.heads = c.heads, s.headDim = c.headDim;
  s.groups = c.groups, s.stateSize = c.stateSize, s.convKernel = c.convKernel;
  s.hActive = hActive < 0 ? c.heads / c.groups : hActive;
  s.pActive = pActive < 0 ? c.headDim : pActive;
  return s;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

/// sum(a * b), accumulated in long double: the finite differences divide the loss's rounding
/// by the step, and a float64 sum over thousands of terms would leave ~3e-8 of noise.
double dot(const Vec &a, const Vec &b) {
  long double acc = 0;
  for (size_t i = 0; i < a.size(); ++i)
    acc += static_cast<long double>(a[i]) * b[i];
  return static_cast<double>(acc);
}

/// Every input of the mixer middle, and random cotangent weights of the three pieces' outputs.
struct Problem {
  Config cfg;
  MambaShape s;
  Vec proj, convW, convB, dtBias, aLog, dSkip, normW;
  Vec head, channel; // n multipliers, phi, sigma (all ones where the config has no mask)
  double eps = 0.1;  // large enough that the phi cotangent is not lost in rounding
  Vec wXbc, wY, wOut;

  Problem(const Config &c, uint64_t seed) : cfg(c), s(shapeOf(c)) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    auto fill = [&](Vec &v, int64_t n, double mean, double sd) {
      v.resize(n);
      for (double &e : v)
        e = mean + sd * normal(rng);
    };
    int64_t H = s.heads, P = s.headDim, C = s.convChannels();
    fill(proj, s.rows() * s.projWidth(), 0.0, 1.0);
    fill(convW, C * s.convKernel, 0.0, 0.5);
    fill(convB, C, 0.0, 0.3);
    fill(dtBias, H, -1.0, 0.5);
    fill(aLog, H, 0.0, 0.5);
    fill(dSkip, H, 0.0, 1.0);
    fill(normW, s.hp(), 1.0, 0.2);
    fill(wXbc, s.rows() * C, 0.0, 1.0);
    fill(wY, s.rows() * s.hp(), 0.0, 1.0);
    fill(wOut, s.rows() * s.hp(), 0.0, 1.0);
    // Soft masks with zeros, fractions and a value above 1 in different places.
    const double hv[] = {0.7, 0.3, 1.0, 0.0, 1.3, 0.5}, cv[] = {0.7, 0.0, 0.3, 1.0, 0.9};
    head.assign(H + 2, 1.0);
    channel.assign(P + 2, 1.0);
    if (c.withHead) {
      for (int64_t h = 0; h < H; ++h)
        head[h] = hv[h % 6];
      head[H] = 0.6, head[H + 1] = 0.8;
    }
    if (c.withChannel) {
      for (int64_t p = 0; p < P; ++p)
        channel[p] = cv[p % 5];
      channel[P] = 0.7, channel[P + 1] = 0.9;
    }
  }

  /// Hard prefix masks: the first hActive heads of every group and the first pActive channels
  /// are `keep`, the rest 0.
  void makeHard(int64_t hActive, int64_t pActive, double keep) {
    int64_t H = s.heads, P = s.headDim, perGroup = H / s.groups;
    for (int64_t h = 0; h < H; ++h)
      head[h] = h % perGroup < hActive ? keep : 0.0;
    for (int64_t p = 0; p < P; ++p)
      channel[p] = p < pActive ? keep : 0.0;
    head[H] = 0.6, head[H + 1] = 0.8, channel[P] = 0.7, channel[P + 1] = 0.9;
  }
};

//===----------------------------------------------------------------------===//
// The reference: Evaluator::mamba2's loops, one function per kernel piece.
//===----------------------------------------------------------------------===//

struct Expanded {
  Vec mzx, mh;
  double phi, sigma;
};

Expanded expand(const MambaShape &s, const Vec &head, const Vec &channel) {
  int64_t H = s.heads, P = s.headDim;
  Expanded e{Vec(H * P), Vec(head.begin(), head.begin() + H), head[H] * channel[P],
             head[H + 1] * channel[P + 1]};
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < P; ++p)
      e.mzx[h * P + p] = head[h] * channel[p];
  return e;
}

Vec refConv(const MambaShape &s, const Vec &proj, const Vec &convW, const Vec &convB,
            const Vec &mzx) {
  int64_t L = s.length, K = s.convKernel, C = s.convChannels(), W = s.projWidth(), HP = s.hp();
  Vec xbc(s.rows() * C);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double acc = convB[c];
        for (int64_t k = 0; k < K; ++k) {
          int64_t src = t - (K - 1) + k;
          if (src < 0)
            continue;
          double in = proj[(b * L + src) * W + HP + c];
          acc += convW[c * K + k] * (c < HP ? in * mzx[c] : in);
        }
        double v = silu(acc);
        xbc[(b * L + t) * C + c] = c < HP ? v * mzx[c] : v;
      }
  return xbc;
}

Vec refScan(const MambaShape &s, const Vec &proj, const Vec &xbc, const Vec &dtBias,
            const Vec &aLog, const Vec &dSkip, const Vec &mh) {
  int64_t L = s.length, H = s.heads, P = s.headDim, N = s.stateSize, HP = s.hp(), GN = s.gn();
  int64_t C = s.convChannels(), W = s.projWidth(), perGroup = H / s.groups;
  Vec y(s.rows() * HP);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t g = h / perGroup;
      double A = -std::exp(aLog[h]);
      Vec S(P * N, 0.0);
      for (int64_t t = 0; t < L; ++t) {
        int64_t r = b * L + t;
        const double *row = &xbc[r * C];
        const double *xs = row + h * P, *Bt = row + HP + g * N, *Ct = row + HP + GN + g * N;
        double delta = softplus(proj[r * W + HP + C + h] * mh[h] + dtBias[h]);
        double decay = std::exp(delta * A);
        for (int64_t p = 0; p < P; ++p) {
          double acc = dSkip[h] * xs[p];
          for (int64_t n = 0; n < N; ++n) {
            double &st = S[p * N + n];
            st = decay * st + delta * xs[p] * Bt[n];
            acc += st * Ct[n];
          }
          y[r * HP + h * P + p] = acc;
        }
      }
    }
  return y;
}

Vec refGateNorm(const MambaShape &s, const Vec &y, const Vec &proj, const Vec &mzx,
                const Vec &normW, double eps, double phi, double sigma) {
  int64_t HP = s.hp(), W = s.projWidth(), groupSize = HP / s.groups;
  Vec out(s.rows() * HP), gated(HP);
  for (int64_t r = 0; r < s.rows(); ++r)
    for (int64_t g = 0; g < s.groups; ++g) {
      double ss = 0;
      for (int64_t c = g * groupSize; c < (g + 1) * groupSize; ++c) {
        gated[c] = y[r * HP + c] * silu(proj[r * W + c] * mzx[c]);
        ss += gated[c] * gated[c];
      }
      double inv = 1.0 / std::sqrt(ss / groupSize + eps * phi);
      for (int64_t c = g * groupSize; c < (g + 1) * groupSize; ++c)
        out[r * HP + c] = sigma * normW[c] * gated[c] * inv;
    }
  return out;
}

/// The whole middle: sum(out * wOut) of the reference.
double refLoss(const Problem &p) {
  Expanded e = expand(p.s, p.head, p.channel);
  Vec xbc = refConv(p.s, p.proj, p.convW, p.convB, e.mzx);
  Vec y = refScan(p.s, p.proj, xbc, p.dtBias, p.aLog, p.dSkip, e.mh);
  return dot(refGateNorm(p.s, y, p.proj, e.mzx, p.normW, p.eps, e.phi, e.sigma), p.wOut);
}

//===----------------------------------------------------------------------===//
// The kernels chained as the executor chains them.
//===----------------------------------------------------------------------===//

template <typename T> std::vector<T> cast(const Vec &v) {
  return std::vector<T>(v.begin(), v.end());
}
template <typename T> Vec widen(const std::vector<T> &v) { return Vec(v.begin(), v.end()); }

struct Result {
  Vec xbc, y, out;
  Vec dProj, dConvW, dConvB, dDtBias, dALog, dD, dNormW, dHead, dChannel;
};

/// Forward and backward (dOut = wOut) through every piece in precision T. Overwritten outputs
/// start as NaN, accumulated ones as 0; the masks the config leaves out are passed as nullptr.
template <typename T> Result runKernels(const Problem &p, const MambaShape &s, int64_t chunk) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  int64_t H = s.heads, P = s.headDim, HP = s.hp(), rows = s.rows(), C = s.convChannels();
  auto proj = cast<T>(p.proj), convW = cast<T>(p.convW), convB = cast<T>(p.convB);
  auto dtBias = cast<T>(p.dtBias), aLog = cast<T>(p.aLog), dSkip = cast<T>(p.dSkip);
  auto normW = cast<T>(p.normW), head = cast<T>(p.head), channel = cast<T>(p.channel);
  auto wOut = cast<T>(p.wOut);
  const T *hm = p.cfg.withHead ? head.data() : nullptr;
  const T *cm = p.cfg.withChannel ? channel.data() : nullptr;
  bool masked = hm || cm;
  std::vector<T> mzx(HP, nan);
  if (masked)
    mambaMaskExpand(s, hm, cm, mzx.data());
  const T *mz = masked ? mzx.data() : nullptr;
  T phi = (hm ? hm[H] : T(1)) * (cm ? cm[P] : T(1));
  T sigma = (hm ? hm[H + 1] : T(1)) * (cm ? cm[P + 1] : T(1));

  std::vector<T> xbc(rows * C, nan), y(rows * HP, nan), out(rows * HP, nan);
  mambaConvForward(s, proj.data(), convW.data(), convB.data(), mz, xbc.data());
  mambaScanForward(s, proj.data(), xbc.data(), dtBias.data(), aLog.data(), dSkip.data(), hm, chunk,
                   y.data());
  mambaGateNormForward(s, y.data(), proj.data(), mz, normW.data(), p.eps, phi, sigma, out.data());

  std::vector<T> dY(rows * HP, nan), dProj(proj.size(), T(0)), dNormW(HP, nan);
  std::vector<T> dMzx(HP, T(0)), dHeadM(H, T(0)), dXbc(rows * C, T(0));
  std::vector<T> dDtBias(H, nan), dALog(H, nan), dD(H, nan), dConvW(convW.size(), nan);
  std::vector<T> dConvB(C, nan), dHead(H + 2, nan), dChannel(P + 2, nan);
  T dPhi = nan, dSigma = nan;
  mambaGateNormBackward(s, y.data(), proj.data(), mz, normW.data(), p.eps, phi, sigma, wOut.data(),
                        dY.data(), dProj.data(), dNormW.data(), masked ? dMzx.data() : nullptr,
                        &dPhi, &dSigma);
  mambaScanBackward(s, proj.data(), xbc.data(), dtBias.data(), aLog.data(), dSkip.data(), hm, chunk,
                    dY.data(), dXbc.data(), dProj.data(), dDtBias.data(), dALog.data(), dD.data(),
                    hm ? dHeadM.data() : nullptr);
  mambaConvBackward(s, proj.data(), convW.data(), convB.data(), mz, dXbc.data(), dProj.data(),
                    dConvW.data(), dConvB.data(), masked ? dMzx.data() : nullptr);
  if (masked) {
    mambaMaskBackward(s, hm, cm, dMzx.data(), dPhi, dSigma, hm ? dHead.data() : nullptr,
                      cm ? dChannel.data() : nullptr);
    // The dt mask's cotangent is the caller's to add.
    if (hm)
      for (int64_t h = 0; h < H; ++h)
        dHead[h] += dHeadM[h];
  }
  return {widen(xbc),     widen(y),     widen(out), widen(dProj),  widen(dConvW), widen(dConvB),
          widen(dDtBias), widen(dALog), widen(dD),  widen(dNormW), widen(dHead),  widen(dChannel)};
}

//===----------------------------------------------------------------------===//
// Comparisons
//===----------------------------------------------------------------------===//

/// |got - want| <= tol * max(1, max |want|) elementwise (NaN fails).
void expectClose(const std::string &what, const Vec &got, const Vec &want, double tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1;
  for (double w : want)
    scale = std::max(scale, std::abs(w));
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::abs(got[i] - want[i]);
    if (!(err <= worst)) // NaN-aware: a NaN becomes the worst
      worst = err, at = i;
  }
  EXPECT_LE(worst, tol * scale) << what << "[" << at << "]: " << got[at] << " vs " << want[at];
}

/// Central differences (step 1e-6) of loss() in every element of x against `analytic`:
/// |analytic - fd| <= tol * (1 + |fd|).
void expectGradient(const std::string &what, Vec &x, const std::function<double()> &loss,
                    const Vec &analytic, double tol = 1e-7) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  const double step = 1e-6;
  double worst = 0, fdAt = 0;
  size_t at = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double keep = x[i];
    x[i] = keep + step;
    double up = loss();
    x[i] = keep - step;
    double down = loss();
    x[i] = keep;
    double fd = (up - down) / (2 * step);
    double err = std::abs(analytic[i] - fd) / (1 + std::abs(fd));
    if (!(err <= worst))
      worst = err, at = i, fdAt = fd;
  }
  EXPECT_LE(worst, tol) << what << "[" << at << "]: analytic " << analytic[at]
                        << " vs finite difference " << fdAt;
}

Vec randomVec(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  Vec v(n);
  for (double &e : v)
    e = normal(rng);
  return v;
}

Vec minus(const Vec &a, const Vec &b) {
  Vec d(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    d[i] = a[i] - b[i];
  return d;
}

//===----------------------------------------------------------------------===//
// Per-configuration tests
//===----------------------------------------------------------------------===//

class MambaKernels : public ::testing::TestWithParam<Config> {
protected:
  Problem problem{GetParam(),
                  static_cast<uint64_t>(1234 + GetParam().length * 7 + GetParam().groups)};
};

TEST_P(MambaKernels, ForwardPiecesMatchReference) {
  Problem &p = problem;
  const MambaShape &s = p.s;
  int64_t rows = s.rows(), HP = s.hp(), C = s.convChannels();
  Expanded e = expand(s, p.head, p.channel);

  Vec mzx(HP, kNaN);
  mambaMaskExpand(s, p.cfg.withHead ? p.head.data() : nullptr,
                  p.cfg.withChannel ? p.channel.data() : nullptr, mzx.data());
  expectClose("mzx", mzx, e.mzx, 0.0);

  Vec xbcRef = refConv(s, p.proj, p.convW, p.convB, e.mzx), xbc(rows * C, kNaN);
  mambaConvForward(s, p.proj.data(), p.convW.data(), p.convB.data(), e.mzx.data(), xbc.data());
  expectClose("xbc", xbc, xbcRef, 1e-12);

  Vec yRef = refScan(s, p.proj, xbcRef, p.dtBias, p.aLog, p.dSkip, e.mh), y(rows * HP, kNaN);
  mambaScanForward(s, p.proj.data(), xbcRef.data(), p.dtBias.data(), p.aLog.data(), p.dSkip.data(),
                   e.mh.data(), p.cfg.chunk, y.data());
  expectClose("y", y, yRef, 1e-12);

  Vec outRef = refGateNorm(s, yRef, p.proj, e.mzx, p.normW, p.eps, e.phi, e.sigma);
  Vec out(rows * HP, kNaN);
  mambaGateNormForward(s, yRef.data(), p.proj.data(), e.mzx.data(), p.normW.data(), p.eps, e.phi,
                       e.sigma, out.data());
  expectClose("out", out, outRef, 1e-12);

  // The chained kernels, with nullptr for the masks the config leaves out.
  Result r = runKernels<double>(p, s, p.cfg.chunk);
  expectClose("chained xbc", r.xbc, xbcRef, 1e-12);
  expectClose("chained y", r.y, yRef, 1e-12);
  expectClose("chained out", r.out, outRef, 1e-12);
}

TEST_P(MambaKernels, FloatCloseToDouble) {
  const Problem &p = problem;
  Result d = runKernels<double>(p, p.s, p.cfg.chunk), f = runKernels<float>(p, p.s, p.cfg.chunk);
  expectClose("xbc", f.xbc, d.xbc, 1e-4);
  expectClose("y", f.y, d.y, 1e-4);
  expectClose("out", f.out, d.out, 1e-4);
  expectClose("dProj", f.dProj, d.dProj, 1e-4);
  expectClose("dConvW", f.dConvW, d.dConvW, 1e-4);
  expectClose("dConvB", f.dConvB, d.dConvB, 1e-4);
  expectClose("dDtBias", f.dDtBias, d.dDtBias, 1e-4);
  expectClose("dALog", f.dALog, d.dALog, 1e-4);
  expectClose("dD", f.dD, d.dD, 1e-4);
  expectClose("dNormW", f.dNormW, d.dNormW, 1e-4);
  if (p.cfg.withHead)
    expectClose("dHead", f.dHead, d.dHead, 1e-4);
  if (p.cfg.withChannel)
    expectClose("dChannel", f.dChannel, d.dChannel, 1e-4);
}

TEST_P(MambaKernels, ConvBackwardMatchesFiniteDifferences) {
  Problem &p = problem;
  const MambaShape &s = p.s;
  Vec mzx = expand(s, p.head, p.channel).mzx;
  auto loss = [&] { return dot(refConv(s, p.proj, p.convW, p.convB, mzx), p.wXbc); };
  Vec dProj0 = randomVec(p.proj.size(), 1), dMzx0 = randomVec(mzx.size(), 2);
  Vec dProj = dProj0, dMzx = dMzx0, dConvW(p.convW.size(), kNaN), dConvB(p.convB.size(), kNaN);
  mambaConvBackward(s, p.proj.data(), p.convW.data(), p.convB.data(), mzx.data(), p.wXbc.data(),
                    dProj.data(), dConvW.data(), dConvB.data(), dMzx.data());
  expectGradient("proj", p.proj, loss, minus(dProj, dProj0));
  expectGradient("convW", p.convW, loss, dConvW);
  expectGradient("convB", p.convB, loss, dConvB);
  expectGradient("mzx", mzx, loss, minus(dMzx, dMzx0));
}

TEST_P(MambaKernels, ScanBackwardMatchesFiniteDifferences) {
  Problem &p = problem;
  const MambaShape &s = p.s;
  Expanded e = expand(s, p.head, p.channel);
  Vec xbc = refConv(s, p.proj, p.convW, p.convB, e.mzx), mh = e.mh;
  auto loss = [&] { return dot(refScan(s, p.proj, xbc, p.dtBias, p.aLog, p.dSkip, mh), p.wY); };
  Vec dXbc0 = randomVec(xbc.size(), 3), dProj0 = randomVec(p.proj.size(), 4);
  Vec dHeadM0 = randomVec(mh.size(), 5);
  Vec dXbc = dXbc0, dProj = dProj0, dHeadM = dHeadM0;
  int64_t H = s.heads;
  Vec dDtBias(H, kNaN), dALog(H, kNaN), dD(H, kNaN);
  mambaScanBackward(s, p.proj.data(), xbc.data(), p.dtBias.data(), p.aLog.data(), p.dSkip.data(),
                    mh.data(), p.cfg.chunk, p.wY.data(), dXbc.data(), dProj.data(), dDtBias.data(),
                    dALog.data(), dD.data(), dHeadM.data());
  expectGradient("proj", p.proj, loss, minus(dProj, dProj0));
  expectGradient("xbc", xbc, loss, minus(dXbc, dXbc0));
  expectGradient("dtBias", p.dtBias, loss, dDtBias);
  expectGradient("aLog", p.aLog, loss, dALog);
  expectGradient("D", p.dSkip, loss, dD);
  expectGradient("head multipliers (dt)", mh, loss, minus(dHeadM, dHeadM0));
}

TEST_P(MambaKernels, GateNormBackwardMatchesFiniteDifferences) {
  Problem &p = problem;
  const MambaShape &s = p.s;
  Expanded e = expand(s, p.head, p.channel);
  Vec y = refScan(s, p.proj, refConv(s, p.proj, p.convW, p.convB, e.mzx), p.dtBias, p.aLog, p.dSkip,
                  e.mh);
  Vec mzx = e.mzx, phiSigma = {e.phi, e.sigma};
  auto loss = [&] {
    return dot(refGateNorm(s, y, p.proj, mzx, p.normW, p.eps, phiSigma[0], phiSigma[1]), p.wOut);
  };
  Vec dProj0 = randomVec(p.proj.size(), 6), dMzx0 = randomVec(mzx.size(), 7);
  Vec dProj = dProj0, dMzx = dMzx0, dY(y.size(), kNaN), dNormW(p.normW.size(), kNaN);
  Vec dPhiSigma(2, kNaN);
  mambaGateNormBackward(s, y.data(), p.proj.data(), mzx.data(), p.normW.data(), p.eps, e.phi,
                        e.sigma, p.wOut.data(), dY.data(), dProj.data(), dNormW.data(), dMzx.data(),
                        &dPhiSigma[0], &dPhiSigma[1]);
  expectGradient("y", y, loss, dY);
  expectGradient("proj", p.proj, loss, minus(dProj, dProj0));
  expectGradient("normW", p.normW, loss, dNormW);
  expectGradient("mzx", mzx, loss, minus(dMzx, dMzx0));
  expectGradient("phi, sigma", phiSigma, loss, dPhiSigma);
}

TEST_P(MambaKernels, ChainMatchesFiniteDifferences) {
  Problem &p = problem;
  Result r = runKernels<double>(p, p.s, p.cfg.chunk);
  auto loss = [&] { return refLoss(p); };
  expectGradient("proj", p.proj, loss, r.dProj);
  expectGradient("convW", p.convW, loss, r.dConvW);
  expectGradient("convB", p.convB, loss, r.dConvB);
  expectGradient("dtBias", p.dtBias, loss, r.dDtBias);
  expectGradient("aLog", p.aLog, loss, r.dALog);
  expectGradient("D", p.dSkip, loss, r.dD);
  expectGradient("normW", p.normW, loss, r.dNormW);
  if (p.cfg.withHead)
    expectGradient("head mask", p.head, loss, r.dHead);
  if (p.cfg.withChannel)
    expectGradient("channel mask", p.channel, loss, r.dChannel);
}

// B, L, H, G, P, N, K, chunk[, head mask, channel mask].
INSTANTIATE_TEST_SUITE_P(Sizes, MambaKernels,
                         ::testing::Values(Config{2, 1, 6, 3, 5, 3, 4, 8},
                                           Config{2, 7, 6, 3, 5, 3, 4, 8},
                                           Config{2, 13, 6, 3, 5, 3, 4, 8, true, false},
                                           Config{2, 37, 6, 3, 5, 3, 4, 16},
                                           Config{2, 13, 6, 1, 5, 3, 4, 8, false, true},
                                           Config{2, 37, 6, 6, 5, 3, 4, 16},
                                           Config{1, 37, 6, 3, 5, 3, 4, 8, false, false},
                                           Config{2, 9, 6, 3, 5, 3, 1, 4}));

//===----------------------------------------------------------------------===//
// Prefix-dense execution
//===----------------------------------------------------------------------===//

struct PrefixCase {
  Config cfg;
  int64_t hActive, pActive;
};

void PrintTo(const PrefixCase &pc, std::ostream *os) {
  PrintTo(pc.cfg, os);
  *os << " hActive" << pc.hActive << " pActive" << pc.pActive;
}

class MambaPrefixDense : public ::testing::TestWithParam<PrefixCase> {};

TEST_P(MambaPrefixDense, EqualsFullWidthUnderHardMasks) {
  const PrefixCase &pc = GetParam();
  Problem p(pc.cfg, 99 + pc.hActive * 10 + pc.pActive);
  p.makeHard(pc.hActive, pc.pActive, 0.9);
  const MambaShape &s = p.s;
  MambaShape reduced = shapeOf(pc.cfg, pc.hActive, pc.pActive);
  Result full = runKernels<double>(p, s, pc.cfg.chunk);
  Result pre = runKernels<double>(p, reduced, pc.cfg.chunk);
  expectClose("xbc", pre.xbc, full.xbc, 1e-12);
  expectClose("y", pre.y, full.y, 1e-12);
  expectClose("out", pre.out, full.out, 1e-12);
  expectClose("dProj", pre.dProj, full.dProj, 1e-12);
  expectClose("dConvW", pre.dConvW, full.dConvW, 1e-12);
  expectClose("dConvB", pre.dConvB, full.dConvB, 1e-12);
  expectClose("dDtBias", pre.dDtBias, full.dDtBias, 1e-12);
  expectClose("dALog", pre.dALog, full.dALog, 1e-12);
  expectClose("dD", pre.dD, full.dD, 1e-12);
  expectClose("dNormW", pre.dNormW, full.dNormW, 1e-12);
  // Mask cotangents: equal on the active entries and phi / sigma, exactly 0 elsewhere.
  int64_t H = s.heads, P = s.headDim, perGroup = H / s.groups;
  for (int64_t h = 0; h < H + 2; ++h) {
    if (h < H && h % perGroup >= pc.hActive)
      EXPECT_EQ(pre.dHead[h], 0.0) << "inactive head " << h;
    else
      EXPECT_NEAR(pre.dHead[h], full.dHead[h], 1e-12 * (1 + std::abs(full.dHead[h])))
          << "head entry " << h;
  }
  for (int64_t q = 0; q < P + 2; ++q) {
    if (q < P && q >= pc.pActive)
      EXPECT_EQ(pre.dChannel[q], 0.0) << "inactive channel " << q;
    else
      EXPECT_NEAR(pre.dChannel[q], full.dChannel[q], 1e-12 * (1 + std::abs(full.dChannel[q])))
          << "channel entry " << q;
  }
  // And the full-width run is right to begin with.
  Problem q = p;
  auto loss = [&] { return refLoss(q); };
  expectGradient("head mask", q.head, loss, full.dHead);
  expectGradient("channel mask", q.channel, loss, full.dChannel);
}

INSTANTIATE_TEST_SUITE_P(Extents, MambaPrefixDense,
                         ::testing::Values(PrefixCase{{2, 13, 6, 3, 5, 3, 4, 8}, 1, 3},
                                           PrefixCase{{2, 37, 6, 3, 5, 3, 4, 16}, 2, 2},
                                           PrefixCase{{2, 7, 6, 3, 5, 3, 4, 8}, 1, 5},
                                           PrefixCase{{2, 13, 6, 1, 5, 3, 4, 8}, 4, 3},
                                           PrefixCase{{2, 37, 6, 6, 5, 3, 4, 8}, 1, 2},
                                           PrefixCase{{1, 37, 6, 2, 5, 3, 4, 8}, 1, 1}));

//===----------------------------------------------------------------------===//
// Thread-count independence
//===----------------------------------------------------------------------===//

/// Every output of a run, in order.
Vec flatten(const Result &r) {
  Vec all;
  for (const Vec *v : {&r.xbc, &r.y, &r.out, &r.dProj, &r.dConvW, &r.dConvB, &r.dDtBias, &r.dALog,
                       &r.dD, &r.dNormW, &r.dHead, &r.dChannel})
    all.insert(all.end(), v->begin(), v->end());
  return all;
}

template <typename T> void expectThreadIndependent(int64_t hActive, int64_t pActive) {
  // Large enough for several row blocks, conv-channel stripes and (sequence, head) tasks.
  Config cfg{3, 70, 8, 2, 16, 8, 4, 16};
  Problem p(cfg, 4242);
  if (hActive < 4 || pActive < 16)
    p.makeHard(hActive, pActive, 0.9);
  MambaShape s = shapeOf(cfg, hActive, pActive);
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  Vec one = flatten(runKernels<T>(p, s, cfg.chunk));
  omp_set_num_threads(2);
  Vec two = flatten(runKernels<T>(p, s, cfg.chunk));
  omp_set_num_threads(3);
  Vec three = flatten(runKernels<T>(p, s, cfg.chunk));
  omp_set_num_threads(saved);
  ASSERT_EQ(one.size(), two.size());
  size_t differ2 = 0, differ3 = 0;
  for (size_t i = 0; i < one.size(); ++i) {
    differ2 += !(one[i] == two[i]); // NaN counts as a difference
    differ3 += !(one[i] == three[i]);
  }
  EXPECT_EQ(differ2, 0u) << "elements that differ between 1 and 2 threads";
  EXPECT_EQ(differ3, 0u) << "elements that differ between 1 and 3 threads";
}

TEST(MambaThreads, FloatBitIdentical) { expectThreadIndependent<float>(4, 16); }
TEST(MambaThreads, DoubleBitIdentical) { expectThreadIndependent<double>(4, 16); }
TEST(MambaThreads, PrefixDenseFloatBitIdentical) { expectThreadIndependent<float>(3, 11); }

TEST(CpuMambaTest, ProjSelectKeepsTheActiveHeadsChannelsAndAllOfBAndC) {
  // 6 heads in 2 groups of 3, 2 kept per group; 3 of 5 channels kept; hard masks (+ phi, sigma).
  Config c{1, 1, 6, 2, 5, 3, 4, 8};
  MambaShape s = shapeOf(c, 2, 3);
  Vec head(c.heads + 2, 0.0), channel(c.headDim + 2, 0.0);
  for (int64_t h = 0; h < c.heads; ++h)
    head[h] = h % 3 < 2 ? 1.0 : 0.0;
  for (int64_t p = 0; p < 3; ++p)
    channel[p] = 1.0;
  int64_t hp = c.heads * c.headDim, gn = c.groups * c.stateSize;
  Vec select(s.projWidth(), kNaN);
  mambaProjSelect(s, head.data(), channel.data(), select.data());
  for (int64_t i = 0; i < s.projWidth(); ++i) {
    double want;
    if (i < 2 * hp) {
      int64_t h = (i % hp) / c.headDim, p = i % c.headDim;
      want = h % 3 < 2 && p < 3 ? 1.0 : 0.0;
    } else if (i < 2 * hp + 2 * gn) {
      want = 1.0;
    } else {
      want = (i - 2 * hp - 2 * gn) % 3 < 2 ? 1.0 : 0.0;
    }
    EXPECT_EQ(select[i], want) << "in_proj row " << i;
  }
}

} // namespace
