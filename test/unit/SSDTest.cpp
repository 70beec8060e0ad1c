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
