//===- CpuAttentionTest.cpp - The flash attention kernels against plain loops ===//
//
// The tiled kernels (lib/codegen/cpu/Attention.cpp) against a slow float64 reference that
// builds the whole score matrix per head, at lengths that leave partial tiles (1, 5, 63, 64,
// 65, 130 against the 64-row tiles) and head shapes that fill no vector (hd = 10, 14, 7) with
// GQA groups of 3, 1 and 3 query heads. Forward and analytic backward in float64 match the
// reference to rounding; the backward also matches central finite differences of a linear
// loss; float32 stays close to float64; wide heads (hd = 36) and scores spread over thousands
// (most probabilities underflow) match too; prefix-dense execution equals full execution on
// its active heads; the results do not depend on the OpenMP thread count, bit for bit; and the
// cached step (attentionStep) fed a sequence in pieces gives the whole sequence's outputs.
// Every kernel output starts as NaN, so an element left unwritten fails its comparison.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace nestor::cpu;

namespace {

using Vec = std::vector<double>;

const int64_t kLengths[] = {1, 5, 63, 64, 65, 130};

struct Heads {
  int64_t nh, nkv, hd;
};
const Heads kHeads[] = {{6, 2, 10}, {4, 4, 14}, {3, 1, 7}};

AttentionShape makeShape(int64_t batch, int64_t length, Heads h, int64_t qActive = -1) {
  AttentionShape s;
  s.batch = batch, s.length = length, s.heads = h.nh, s.kvHeads = h.nkv, s.headDim = h.hd;
  s.qActive = qActive < 0 ? h.nh / h.nkv : qActive;
  return s;
}

std::string describe(const AttentionShape &s) {
  return "B=" + std::to_string(s.batch) + " L=" + std::to_string(s.length) +
         " nh=" + std::to_string(s.heads) + " nkv=" + std::to_string(s.kvHeads) +
         " hd=" + std::to_string(s.headDim) + " qActive=" + std::to_string(s.qActive);
}

Vec randomVec(size_t n, std::mt19937_64 &rng, double sd = 1.0) {
  std::normal_distribution<double> normal(0.0, sd);
  Vec v(n);
  for (double &e : v)
    e = normal(rng);
  return v;
}

/// Random q, k, v and an output cotangent for one shape.
struct Problem {
  AttentionShape s;
  Vec q, k, v, da;
  Problem(const AttentionShape &shape, uint64_t seed) : s(shape) {
    std::mt19937_64 rng(seed);
    int64_t rows = s.batch * s.length;
    q = randomVec(rows * s.heads * s.headDim, rng);
    k = randomVec(rows * s.kvHeads * s.headDim, rng);
    v = randomVec(rows * s.kvHeads * s.headDim, rng);
    da = randomVec(rows * s.heads * s.headDim, rng);
  }
  int64_t lseSize() const { return s.batch * s.heads * s.length; }
};

bool activeHead(const AttentionShape &s, int64_t h) {
  return h % (s.heads / s.kvHeads) < s.qActive;
}

/// The reference: per (sequence, head) the full L x L probability matrix, straight from the
/// definitions (the formulas of runtime/reference/Reference.cpp with the head mask left out).
struct Reference {
  Vec a, lse, dq, dk, dv;

  Reference(const AttentionShape &s, const Vec &q, const Vec &k, const Vec &v, const Vec &da) {
    int64_t B = s.batch, L = s.length, nh = s.heads, nkv = s.kvHeads, hd = s.headDim;
    a.assign(q.size(), 0.0), dq.assign(q.size(), 0.0);
    dk.assign(k.size(), 0.0), dv.assign(v.size(), 0.0);
    lse.assign(B * nh * L, 0.0);
    double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    auto qAt = [&](int64_t b, int64_t i, int64_t h) { return (b * L + i) * nh * hd + h * hd; };
    auto kvAt = [&](int64_t b, int64_t j, int64_t g) { return (b * L + j) * nkv * hd + g * hd; };
    Vec P(L * L), dP(L * L);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < nh; ++h) {
        if (!activeHead(s, h))
          continue;
        int64_t g = h / (nh / nkv);
        for (int64_t i = 0; i < L; ++i) {
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j <= i; ++j) {
            double dot = 0.0;
            for (int64_t e = 0; e < hd; ++e)
              dot += q[qAt(b, i, h) + e] * k[kvAt(b, j, g) + e];
            P[i * L + j] = dot * scale;
            mx = std::max(mx, P[i * L + j]);
          }
          double sum = 0.0;
          for (int64_t j = 0; j <= i; ++j)
            sum += std::exp(P[i * L + j] - mx);
          lse[(b * nh + h) * L + i] = mx + std::log(sum);
          for (int64_t j = 0; j <= i; ++j) {
            P[i * L + j] = std::exp(P[i * L + j] - mx) / sum;
            for (int64_t e = 0; e < hd; ++e)
              a[qAt(b, i, h) + e] += P[i * L + j] * v[kvAt(b, j, g) + e];
          }
        }
        if (da.empty())
          continue;
        for (int64_t i = 0; i < L; ++i) {
          double rowDot = 0.0;
          for (int64_t j = 0; j <= i; ++j) {
            double d = 0.0;
            for (int64_t e = 0; e < hd; ++e) {
              d += da[qAt(b, i, h) + e] * v[kvAt(b, j, g) + e];
              dv[kvAt(b, j, g) + e] += P[i * L + j] * da[qAt(b, i, h) + e];
            }
            dP[i * L + j] = d;
            rowDot += P[i * L + j] * d;
          }
          for (int64_t j = 0; j <= i; ++j) {
            double ds = P[i * L + j] * (dP[i * L + j] - rowDot) * scale;
            for (int64_t e = 0; e < hd; ++e) {
              dq[qAt(b, i, h) + e] += ds * k[kvAt(b, j, g) + e];
              dk[kvAt(b, j, g) + e] += ds * q[qAt(b, i, h) + e];
            }
          }
        }
      }
  }
};

/// The kernels' results in precision T, widened to double. Outputs start as NaN so that an
/// element the kernel forgets to write fails every comparison.
template <typename T> struct Result {
  Vec a, lse, dq, dk, dv;

  Result(const AttentionShape &s, const Vec &q, const Vec &k, const Vec &v, const Vec &da,
         bool backward = true) {
    std::vector<T> qt(q.begin(), q.end()), kt(k.begin(), k.end()), vt(v.begin(), v.end());
    const T nan = std::numeric_limits<T>::quiet_NaN();
    std::vector<T> at(q.size(), nan), lt(s.batch * s.heads * s.length, nan);
    attentionForward<T>(s, qt.data(), kt.data(), vt.data(), at.data(), lt.data());
    a.assign(at.begin(), at.end()), lse.assign(lt.begin(), lt.end());
    if (!backward)
      return;
    std::vector<T> dat(da.begin(), da.end()), dqt(q.size(), nan), dkt(k.size(), nan),
        dvt(v.size(), nan);
    attentionBackward<T>(s, qt.data(), kt.data(), vt.data(), at.data(), lt.data(), dat.data(),
                         dqt.data(), dkt.data(), dvt.data());
    dq.assign(dqt.begin(), dqt.end()), dk.assign(dkt.begin(), dkt.end());
    dv.assign(dvt.begin(), dvt.end());
  }
};

/// Largest |x - ref| / max(1, |ref|) (NaN counts as infinitely far).
double maxRelError(const Vec &x, const Vec &ref) {
  EXPECT_EQ(x.size(), ref.size());
  double worst = 0.0;
  for (size_t i = 0; i < std::min(x.size(), ref.size()); ++i) {
    double err = std::abs(x[i] - ref[i]) / std::max(1.0, std::abs(ref[i]));
    if (!(err <= worst))
      worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
  }
  return worst;
}

/// Largest |x| (infinite when x holds a NaN, so that unwritten outputs never look like 0).
double maxAbs(const Vec &x) {
  double m = 0.0;
  for (double e : x)
    m = std::isnan(e) ? std::numeric_limits<double>::infinity() : std::max(m, std::abs(e));
  return m;
}

/// Calls fn(shape, seed) for every size of the test grid (batch 2).
template <typename Fn> void forEachShape(Fn fn) {
  uint64_t seed = 1;
  for (Heads h : kHeads)
    for (int64_t L : kLengths)
      fn(makeShape(2, L, h), seed++);
}

//===----------------------------------------------------------------------===//
// 1. Forward
//===----------------------------------------------------------------------===//

TEST(CpuAttention, ForwardMatchesReference) {
  forEachShape([](const AttentionShape &s, uint64_t seed) {
    SCOPED_TRACE(describe(s));
    Problem p(s, seed);
    Reference ref(s, p.q, p.k, p.v, {});
    Result<double> d(s, p.q, p.k, p.v, p.da, false);
    EXPECT_LE(maxRelError(d.a, ref.a), 1e-12);
    EXPECT_LE(maxRelError(d.lse, ref.lse), 1e-12);
    // float32 against float64: the inputs are the same (exactly representable after the
    // first cast), so only the kernel's own rounding differs.
    Vec qf(p.q.begin(), p.q.end()), kf(p.k), vf(p.v);
    for (Vec *x : {&qf, &kf, &vf})
      for (double &e : *x)
        e = static_cast<float>(e);
    Result<double> d32in(s, qf, kf, vf, p.da, false);
    Result<float> f(s, qf, kf, vf, p.da, false);
    EXPECT_LE(maxRelError(f.a, d32in.a), 1e-5);
    EXPECT_LE(maxRelError(f.lse, d32in.lse), 1e-5);
  });
}

/// A hand-checkable case: with equal keys every causal row averages the values seen so far,
/// and lse_i = q.k * scale + log(i + 1).
TEST(CpuAttention, EqualKeysAverageValues) {
  AttentionShape s = makeShape(1, 70, {2, 1, 4});
  Problem p(s, 99);
  for (int64_t j = 0; j < s.length; ++j)
    for (int64_t e = 0; e < 4; ++e)
      p.k[j * 4 + e] = 0.25 * (e + 1);
  Result<double> d(s, p.q, p.k, p.v, p.da, false);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < s.length; ++i) {
      double dot = 0.0;
      for (int64_t e = 0; e < 4; ++e)
        dot += p.q[i * 8 + h * 4 + e] * p.k[e];
      EXPECT_NEAR(d.lse[h * s.length + i], dot * 0.5 + std::log(i + 1.0), 1e-12);
      for (int64_t e = 0; e < 4; ++e) {
        double mean = 0.0;
        for (int64_t j = 0; j <= i; ++j)
          mean += p.v[j * 4 + e];
        EXPECT_NEAR(d.a[i * 8 + h * 4 + e], mean / (i + 1), 1e-12);
      }
    }
}

//===----------------------------------------------------------------------===//
// 2. and 3. Backward
//===----------------------------------------------------------------------===//

/// The forward output a through the double kernel.
Vec forwardA(const AttentionShape &s, const Vec &q, const Vec &k, const Vec &v) {
  return Result<double>(s, q, k, v, {}, false).a;
}

/// Up to `count` indices of an n-element tensor: all when few, otherwise the ends and a
/// random sample.
std::vector<size_t> sampleIndices(size_t n, size_t count, std::mt19937_64 &rng) {
  std::vector<size_t> idx;
  if (n <= count) {
    for (size_t i = 0; i < n; ++i)
      idx.push_back(i);
    return idx;
  }
  idx = {0, n - 1};
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  while (idx.size() < count)
    idx.push_back(pick(rng));
  return idx;
}

TEST(CpuAttention, BackwardMatchesFiniteDifferences) {
  forEachShape([](const AttentionShape &s, uint64_t seed) {
    SCOPED_TRACE(describe(s));
    Problem p(s, seed);
    const Vec &w = p.da; // loss = sum(a * W), so dLoss/da = W
    Result<double> d(s, p.q, p.k, p.v, w);
    std::mt19937_64 rng(seed + 1000);
    const double step = 1e-6;
    struct Target {
      const char *name;
      Vec Problem::*x;
      const Vec &grad;
    };
    for (const Target &t : {Target{"q", &Problem::q, d.dq}, Target{"k", &Problem::k, d.dk},
                            Target{"v", &Problem::v, d.dv}}) {
      Vec &x = p.*(t.x);
      for (size_t i : sampleIndices(x.size(), 16, rng)) {
        SCOPED_TRACE(std::string(t.name) + "[" + std::to_string(i) + "]");
        double saved = x[i];
        x[i] = saved + step;
        Vec up = forwardA(s, p.q, p.k, p.v);
        x[i] = saved - step;
        Vec down = forwardA(s, p.q, p.k, p.v);
        x[i] = saved;
        // loss(up) - loss(down) summed as sum((a_up - a_down) W): the same difference, without
        // cancelling two large sums (whose rounding, over 2 * step, would swamp the tolerance).
        double diff = 0.0;
        for (size_t j = 0; j < w.size(); ++j)
          diff += (up[j] - down[j]) * w[j];
        double fd = diff / (2 * step);
        EXPECT_NEAR(t.grad[i], fd, 1e-7 * std::max(1.0, std::abs(fd)));
      }
    }
  });
}

TEST(CpuAttention, BackwardMatchesReference) {
  forEachShape([](const AttentionShape &s, uint64_t seed) {
    SCOPED_TRACE(describe(s));
    Problem p(s, seed);
    Reference ref(s, p.q, p.k, p.v, p.da);
    Result<double> d(s, p.q, p.k, p.v, p.da);
    EXPECT_LE(maxRelError(d.dq, ref.dq), 1e-11);
    EXPECT_LE(maxRelError(d.dk, ref.dk), 1e-11);
    EXPECT_LE(maxRelError(d.dv, ref.dv), 1e-11);
    // float32 against float64 on the same (float-representable) inputs, relative to each
    // tensor's largest entry: gradients sum many terms of both signs, so single entries can be
    // small and cancelled.
    Vec q(p.q), k(p.k), v(p.v), da(p.da);
    for (Vec *x : {&q, &k, &v, &da})
      for (double &e : *x)
        e = static_cast<float>(e);
    Result<double> d64(s, q, k, v, da);
    Result<float> f(s, q, k, v, da);
    using Pair = std::pair<const Vec *, const Vec *>;
    for (auto [x, y] : {Pair{&f.dq, &d64.dq}, Pair{&f.dk, &d64.dk}, Pair{&f.dv, &d64.dv}}) {
      double worst = 0.0;
      for (size_t i = 0; i < y->size(); ++i) {
        double err = std::abs((*x)[i] - (*y)[i]);
        worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
      }
      EXPECT_LE(worst, 1e-5 * std::max(1.0, maxAbs(*y)));
    }
  });
}

/// A head dim of several register lines plus a part (hd = 36: four 8-float lines and half of
/// one, nine 4-double lines), the shape of real models' heads, through the same checks.
TEST(CpuAttention, WideHeadsMatchReference) {
  for (int64_t L : {37, 100}) {
    AttentionShape s = makeShape(2, L, {4, 2, 36});
    SCOPED_TRACE(describe(s));
    Problem p(s, 900 + L);
    Reference ref(s, p.q, p.k, p.v, p.da);
    Result<double> d(s, p.q, p.k, p.v, p.da);
    Result<float> f(s, p.q, p.k, p.v, p.da);
    for (auto [x, r] :
         {std::pair{&d.a, &ref.a}, std::pair{&d.lse, &ref.lse}, std::pair{&d.dq, &ref.dq},
          std::pair{&d.dk, &ref.dk}, std::pair{&d.dv, &ref.dv}})
      EXPECT_LE(maxRelError(*x, *r), 1e-11);
    for (auto [x, r] : {std::pair{&f.a, &ref.a}, std::pair{&f.dq, &ref.dq},
                        std::pair{&f.dk, &ref.dk}, std::pair{&f.dv, &ref.dv}})
      EXPECT_LE(maxRelError(*x, *r), 2e-5);
  }
}

/// Scores spread over thousands (q scaled up): most probabilities underflow, which takes the
/// kernels' exp through its clamped range (below -87 in float, -708 in double). float64 still
/// matches the reference; float32 matches it to its own score rounding (scores of size ~1e3
/// carry errors of 1e-4 and more, which move near-tied probabilities by as much).
TEST(CpuAttention, ExtremeScoresMatchReference) {
  for (Heads hs : kHeads) {
    AttentionShape s = makeShape(2, 130, hs);
    SCOPED_TRACE(describe(s));
    Problem p(s, 950 + hs.hd);
    for (double &e : p.q)
      e *= 300.0;
    Reference ref(s, p.q, p.k, p.v, p.da);
    Result<double> d(s, p.q, p.k, p.v, p.da);
    EXPECT_LE(maxRelError(d.a, ref.a), 1e-11);
    EXPECT_LE(maxRelError(d.lse, ref.lse), 1e-12);
    EXPECT_LE(maxRelError(d.dq, ref.dq), 1e-10); // dS is a difference of large dP terms
    EXPECT_LE(maxRelError(d.dk, ref.dk), 1e-10);
    EXPECT_LE(maxRelError(d.dv, ref.dv), 1e-11);
    Result<float> f(s, p.q, p.k, p.v, p.da, false);
    EXPECT_LE(maxRelError(f.a, ref.a), 3e-3);
    EXPECT_LE(maxRelError(f.lse, ref.lse), 1e-4);
  }
}

//===----------------------------------------------------------------------===//
// 4. Prefix-dense heads
//===----------------------------------------------------------------------===//

TEST(CpuAttention, PrefixDenseEqualsFullOnActiveHeads) {
  int tested = 0;
  uint64_t seed = 500;
  for (Heads hs : kHeads)
    for (int64_t L : {5, 65, 130})
      for (int64_t qActive = 0; qActive < hs.nh / hs.nkv; ++qActive) {
        AttentionShape full = makeShape(2, L, hs), part = makeShape(2, L, hs, qActive);
        SCOPED_TRACE(describe(part));
        Problem p(full, seed++);
        // The full computation's cotangent with the inactive heads' da zeroed: what the
        // caller passes when the head mask multiplies those heads by 0.
        Vec da(p.da);
        for (size_t i = 0; i < da.size(); ++i)
          if (!activeHead(part, (i / hs.hd) % hs.nh))
            da[i] = 0.0;
        Result<double> f(full, p.q, p.k, p.v, da), r(part, p.q, p.k, p.v, p.da);
        Reference ref(part, p.q, p.k, p.v, p.da);
        for (size_t i = 0; i < p.q.size(); ++i) {
          bool on = activeHead(part, (i / hs.hd) % hs.nh);
          ASSERT_EQ(r.a[i], on ? f.a[i] : 0.0) << i;
          ASSERT_EQ(r.dq[i], on ? f.dq[i] : 0.0) << i;
        }
        for (int64_t i = 0; i < p.lseSize(); ++i)
          ASSERT_EQ(r.lse[i], activeHead(part, (i / L) % hs.nh) ? f.lse[i] : 0.0) << i;
        // dk/dv: the inactive heads add exact zeros in the full run, so the sums agree to
        // rounding (the tolerance only allows for a different association).
        EXPECT_LE(maxRelError(r.dk, f.dk), 1e-14);
        EXPECT_LE(maxRelError(r.dv, f.dv), 1e-14);
        // And against the reference restricted to the active heads.
        EXPECT_LE(maxRelError(r.dk, ref.dk), 1e-11);
        EXPECT_LE(maxRelError(r.dv, ref.dv), 1e-11);
        if (qActive == 0) {
          EXPECT_EQ(maxAbs(r.dk), 0.0);
          EXPECT_EQ(maxAbs(r.dv), 0.0);
        } else {
          EXPECT_GT(maxAbs(r.dk), 0.0);
        }
        ++tested;
      }
  EXPECT_EQ(tested, 3 * (3 + 1 + 3)); // qActive < full: 3, 1 and 3 values per length
}

//===----------------------------------------------------------------------===//
// 5. Thread-count independence
//===----------------------------------------------------------------------===//

void expectSameBits(const Vec &x, const Vec &y, const char *what) {
  ASSERT_EQ(x.size(), y.size()) << what;
  // The widening of the precision-T results to double is exact, so equal bits here are equal
  // bits there.
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(double)), 0) << what;
}

template <typename T> void checkThreadIndependence() {
  for (Heads hs : kHeads) {
    AttentionShape s = makeShape(2, 130, hs, std::max<int64_t>(1, hs.nh / hs.nkv - 1));
    SCOPED_TRACE(describe(s));
    Problem p(s, 700 + hs.hd);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    Result<T> one(s, p.q, p.k, p.v, p.da);
    omp_set_num_threads(2);
    Result<T> two(s, p.q, p.k, p.v, p.da);
    omp_set_num_threads(saved);
    expectSameBits(one.a, two.a, "a");
    expectSameBits(one.lse, two.lse, "lse");
    expectSameBits(one.dq, two.dq, "dq");
    expectSameBits(one.dk, two.dk, "dk");
    expectSameBits(one.dv, two.dv, "dv");
  }
}

TEST(CpuAttention, ThreadCountIndependentDouble) { checkThreadIndependence<double>(); }
TEST(CpuAttention, ThreadCountIndependentFloat) { checkThreadIndependence<float>(); }

//===----------------------------------------------------------------------===//
// 6. The cached step (decode and prefill)
//===----------------------------------------------------------------------===//

/// attentionStep over a KV cache, fed a sequence in pieces, against the reference over the whole
/// sequence: each piece's outputs are the reference's rows at its positions. Pieces of 1 (a
/// decode step), of partial and whole tiles, and starting inside a tile; the cache has spare rows
/// past the sequence and starts as NaN, so a row read before it is written shows.
template <typename T>
void checkStepInPieces(const std::vector<int64_t> &pieces, Heads h, int64_t qActive, double tol) {
  int64_t total = 0;
  for (int64_t n : pieces)
    total += n;
  AttentionShape full = makeShape(2, total, h, qActive);
  SCOPED_TRACE(describe(full));
  Problem p(full, 7 + total);
  Reference ref(full, p.q, p.k, p.v, Vec());
  int64_t context = total + 5, B = full.batch, qw = h.nh * h.hd, kw = h.nkv * h.hd;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> kCache(B * context * kw, nan), vCache(B * context * kw, nan);
  Vec got(p.q.size(), std::nan(""));
  int64_t position = 0;
  for (int64_t n : pieces) {
    AttentionShape s = makeShape(B, n, h, qActive);
    // The piece's rows of every sequence, packed [B, n, width].
    auto rows = [&](const Vec &x, int64_t width) {
      std::vector<T> out(B * n * width);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t e = 0; e < width; ++e)
            out[(b * n + i) * width + e] = T(x[(b * total + position + i) * width + e]);
      return out;
    };
    std::vector<T> q = rows(p.q, qw), k = rows(p.k, kw), v = rows(p.v, kw), a(B * n * qw, nan);
    attentionStep<T>(s, context, position, q.data(), k.data(), v.data(), kCache.data(),
                     vCache.data(), a.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t e = 0; e < qw; ++e)
          got[(b * total + position + i) * qw + e] = a[(b * n + i) * qw + e];
    position += n;
  }
  EXPECT_GT(maxAbs(ref.a), 0.1);
  EXPECT_LE(maxRelError(got, ref.a), tol);
}

TEST(CpuAttention, StepOverACacheEqualsTheWholeSequence) {
  const std::vector<std::vector<int64_t>> splits = {
      {1, 1, 1, 1, 1}, {130}, {64, 66}, {5, 63, 1, 61}, {70, 1, 1, 64, 3}};
  for (Heads h : kHeads)
    for (const auto &pieces : splits) {
      checkStepInPieces<double>(pieces, h, h.nh / h.nkv, 1e-12);
      checkStepInPieces<float>(pieces, h, h.nh / h.nkv, 2e-5);
    }
  // Prefix-dense heads: inactive heads' outputs are 0, as in the reference.
  checkStepInPieces<double>({3, 64, 2}, {6, 2, 10}, 1, 1e-12);
}

//===----------------------------------------------------------------------===//
// Timing (not a test: run with --gtest_also_run_disabled_tests --gtest_filter='*Timing*').
//===----------------------------------------------------------------------===//

TEST(CpuAttention, DISABLED_Timing) {
  AttentionShape s = makeShape(8, 256, {8, 2, 32});
  Problem p(s, 1);
  std::vector<float> q(p.q.begin(), p.q.end()), k(p.k.begin(), p.k.end()),
      v(p.v.begin(), p.v.end()), da(p.da.begin(), p.da.end());
  std::vector<float> a(q.size()), lse(p.lseSize()), dq(q.size()), dk(k.size()), dv(v.size());
  using Clock = std::chrono::steady_clock;
  double bestF = 1e30, bestB = 1e30;
  for (int rep = 0; rep < 20; ++rep) {
    auto t0 = Clock::now();
    attentionForward<float>(s, q.data(), k.data(), v.data(), a.data(), lse.data());
    auto t1 = Clock::now();
    attentionBackward<float>(s, q.data(), k.data(), v.data(), a.data(), lse.data(), da.data(),
                             dq.data(), dk.data(), dv.data());
    auto t2 = Clock::now();
    bestF = std::min(bestF, std::chrono::duration<double, std::milli>(t1 - t0).count());
    bestB = std::min(bestB, std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  std::printf("attention float B=8 L=256 nh=8 nkv=2 hd=32, %d threads: forward %.2f ms, "
              "backward %.2f ms, total %.2f ms (best of 20)\n",
              omp_get_max_threads(), bestF, bestB, bestF + bestB);
}

} // namespace
