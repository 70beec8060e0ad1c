//===- SSDTest.cpp - The chunked SSD scan against the sequential recurrence ===//
//
// At awkward lengths (1, 7, chunk-1, chunk+1, 3 chunk+5), head sizes that fill no vector
// (P = 10, N = 7), strided rows and a non-zero initial state: float64 chunked equals float64
// sequential to rounding; float32 chunked is at most twice as far from the float64 result as
// float32 sequential is (the low-precision rule of FlashAttention's tests).
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/SSD.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

using namespace nestor::cpu;

namespace {

/// Inputs of one head laid out in rows wider than needed, to exercise the strides.
struct Problem {
  int64_t L, P = 10, N = 7, pad = 3;
  std::vector<double> x, b, c, delta, state;
  double a, d;

  Problem(int64_t length, uint64_t seed) : L(length) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uni(0.01, 0.5);
    x.resize(L * (P + pad));
    b.resize(L * (N + pad));
    c.resize(L * (N + pad));
    delta.resize(L * 2);
    for (auto *v : {&x, &b, &c})
      for (double &e : *v)
        e = normal(rng);
    for (double &e : delta)
      e = uni(rng);
    state.resize(P * N);
    for (double &e : state)
      e = 0.3 * normal(rng);
    a = -std::exp(0.3 * normal(rng));
    d = normal(rng);
  }

  template <typename T> std::vector<T> cast(const std::vector<double> &v) const {
    return std::vector<T>(v.begin(), v.end());
  }

  /// Runs `chunked` (or the sequential form) in precision T; returns y then the final state.
  template <typename T> std::vector<double> run(bool chunked, int64_t chunk) const {
    auto xs = cast<T>(x), bs = cast<T>(b), cs = cast<T>(c), ds = cast<T>(delta);
    auto st = cast<T>(state);
    std::vector<T> y(L * (P + 1), T(-99));
    SSDHead<T> h;
    h.length = L, h.headDim = P, h.stateSize = N;
    h.x = xs.data(), h.xStride = P + pad;
    h.b = bs.data(), h.bStride = N + pad;
    h.c = cs.data(), h.cStride = N + pad;
    h.delta = ds.data(), h.deltaStride = 2;
    h.a = T(a), h.d = T(d);
    h.y = y.data(), h.yStride = P + 1;
    h.state = st.data();
    if (chunked) {
      std::vector<T> scratch(ssdChunkedScratchSize(P, N, chunk));
      ssdChunked(h, chunk, scratch.data());
    } else {
      ssdSequential(h);
    }
    std::vector<double> out;
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t p = 0; p < P; ++p)
        out.push_back(y[t * (P + 1) + p]);
      EXPECT_EQ(y[t * (P + 1) + P], T(-99)) << "wrote past the row";
    }
    out.insert(out.end(), st.begin(), st.end());
    return out;
  }
};

double maxRelErr(const std::vector<double> &got, const std::vector<double> &want) {
  double scale = 1e-30, err = 0.0;
  for (double w : want)
    scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i)
    err = std::max(err, std::abs(got[i] - want[i]));
  return err / scale;
}

class SSDChunkedTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {};

TEST_P(SSDChunkedTest, MatchesSequential) {
  auto [chunk, which] = GetParam();
  int64_t lengths[] = {1, 7, chunk - 1, chunk + 1, 3 * chunk + 5};
  int64_t L = lengths[which];
  if (L < 1)
    GTEST_SKIP() << "length " << L << " is empty for chunk " << chunk;
  Problem prob(L, 1000 + L);
  std::vector<double> exact = prob.run<double>(false, chunk);
  EXPECT_LT(maxRelErr(prob.run<double>(true, chunk), exact), 1e-12);
  double seq32 = maxRelErr(prob.run<float>(false, chunk), exact);
  double chunk32 = maxRelErr(prob.run<float>(true, chunk), exact);
  EXPECT_LE(chunk32, 2.0 * seq32 + 1e-6)
      << "float32: chunked " << chunk32 << " vs sequential " << seq32;
}

INSTANTIATE_TEST_SUITE_P(Lengths, SSDChunkedTest,
                         ::testing::Combine(::testing::Values(4, 16, 64),
                                            ::testing::Values(0, 1, 2, 3, 4)));

TEST(SSDTest, SequentialFollowsTheRecurrenceByHand) {
  // P = N = 1: S_1 = dt x b, y_1 = S_1 c + d x; S_2 = e^{dt A} S_1 + dt x b.
  double x[2] = {2.0, -1.0}, b[2] = {0.5, 3.0}, c[2] = {1.5, -0.25}, dt[2] = {0.2, 0.7};
  double y[2], state = 0.0;
  SSDHead<double> h;
  h.length = 2, h.headDim = 1, h.stateSize = 1;
  h.x = x, h.xStride = 1, h.b = b, h.bStride = 1, h.c = c, h.cStride = 1, h.delta = dt;
  h.a = -0.5, h.d = 0.1, h.y = y, h.yStride = 1, h.state = &state;
  ssdSequential(h);
  double s1 = 0.2 * 2.0 * 0.5, s2 = std::exp(0.7 * -0.5) * s1 + 0.7 * -1.0 * 3.0;
  EXPECT_DOUBLE_EQ(y[0], s1 * 1.5 + 0.1 * 2.0);
  EXPECT_DOUBLE_EQ(y[1], s2 * -0.25 + 0.1 * -1.0);
  EXPECT_DOUBLE_EQ(state, s2);
}

} // namespace

namespace {

/// All cotangents of one problem as a flat vector: dx, db, dc, dDelta, dA, dD, dState.
template <typename T> struct Backward {
  std::vector<double> run(const Problem &prob, const std::vector<double> &dyIn, bool chunked,
                          int64_t chunk) {
    auto xs = prob.cast<T>(prob.x), bs = prob.cast<T>(prob.b), cs = prob.cast<T>(prob.c);
    auto ds = prob.cast<T>(prob.delta), st = prob.cast<T>(prob.state), dy = prob.cast<T>(dyIn);
    int64_t L = prob.L, P = prob.P, N = prob.N, pad = prob.pad;
    std::vector<T> y(L * (P + 1));
    SSDHead<T> h;
    h.length = L, h.headDim = P, h.stateSize = N;
    h.x = xs.data(), h.xStride = P + pad, h.b = bs.data(), h.bStride = N + pad;
    h.c = cs.data(), h.cStride = N + pad, h.delta = ds.data(), h.deltaStride = 2;
    h.a = T(prob.a), h.d = T(prob.d), h.y = y.data(), h.yStride = P + 1, h.state = st.data();
    std::vector<T> dx(xs.size()), db(bs.size()), dc(cs.size()), dd(ds.size()), dstate(P * N);
    SSDHeadGrad<T> g;
    g.dy = dy.data(), g.dx = dx.data(), g.db = db.data(), g.dc = dc.data(), g.dDelta = dd.data();
    g.dState = dstate.data();
    if (chunked)
      ssdChunkedBackward(h, chunk, g);
    else
      ssdSequentialBackward(h, g);
    std::vector<double> out;
    for (auto *v : {&dx, &db, &dc, &dd, &dstate})
      out.insert(out.end(), v->begin(), v->end());
    out.push_back(g.dA);
    out.push_back(g.dD);
    return out;
  }
};

/// <dy, y(prob)> in float64, for finite differences.
double objective(const Problem &prob, const std::vector<double> &dy) {
  std::vector<double> y = prob.run<double>(false, 1);
  double sum = 0.0;
  for (int64_t t = 0; t < prob.L; ++t)
    for (int64_t p = 0; p < prob.P; ++p)
      sum += y[t * prob.P + p] * dy[t * (prob.P + 1) + p];
  return sum;
}

std::vector<double> randomCotangent(const Problem &prob, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> dy(prob.L * (prob.P + 1));
  for (double &v : dy)
    v = normal(rng);
  return dy;
}

TEST(SSDBackwardTest, SequentialMatchesFiniteDifferences) {
  Problem prob(9, 77);
  std::vector<double> dy = randomCotangent(prob, 5);
  std::vector<double> grad = Backward<double>().run(prob, dy, false, 1);
  // Perturb a sample of every input: x, B, C, delta, the initial state, A, D.
  size_t offset = 0;
  std::vector<double> *inputs[] = {&prob.x, &prob.b, &prob.c, &prob.delta, &prob.state};
  int checked = 0;
  for (std::vector<double> *v : inputs) {
    for (size_t i = 0; i < v->size(); i += 3) {
      double saved = (*v)[i], eps = 1e-6;
      (*v)[i] = saved + eps;
      double plus = objective(prob, dy);
      (*v)[i] = saved - eps;
      double minus = objective(prob, dy);
      (*v)[i] = saved;
      EXPECT_NEAR(grad[offset + i], (plus - minus) / (2 * eps), 1e-6) << "input " << checked;
      ++checked;
    }
    offset += v->size();
  }
  for (double *scalar : {&prob.a, &prob.d}) {
    double saved = *scalar, eps = 1e-6;
    *scalar = saved + eps;
    double plus = objective(prob, dy);
    *scalar = saved - eps;
    double minus = objective(prob, dy);
    *scalar = saved;
    EXPECT_NEAR(grad[offset++], (plus - minus) / (2 * eps), 1e-6);
  }
  EXPECT_GT(checked, 50);
}

class SSDChunkedBackwardTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {};

TEST_P(SSDChunkedBackwardTest, MatchesSequentialBackward) {
  auto [chunk, which] = GetParam();
  int64_t lengths[] = {1, 7, chunk - 1, chunk + 1, 3 * chunk + 5};
  int64_t L = lengths[which];
  Problem prob(L, 2000 + L);
  std::vector<double> dy = randomCotangent(prob, 9 + L);
  std::vector<double> exact = Backward<double>().run(prob, dy, false, chunk);
  EXPECT_LT(maxRelErr(Backward<double>().run(prob, dy, true, chunk), exact), 1e-11);
  double seq32 = maxRelErr(Backward<float>().run(prob, dy, false, chunk), exact);
  double chunk32 = maxRelErr(Backward<float>().run(prob, dy, true, chunk), exact);
  EXPECT_LE(chunk32, 2.0 * seq32 + 1e-6)
      << "float32: chunked " << chunk32 << " vs sequential " << seq32;
}

INSTANTIATE_TEST_SUITE_P(Lengths, SSDChunkedBackwardTest,
                         ::testing::Combine(::testing::Values(4, 16, 64),
                                            ::testing::Values(0, 1, 2, 3, 4)));

} // namespace
