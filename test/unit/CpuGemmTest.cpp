//===- CpuGemmTest.cpp - The restricted matrix-vector kernel against loops --===//
//
// gemvRuns (Kernels.h) against plain float64 loops at awkward sizes: row runs of 1, 3, 5 and
// 37 rows (the row kernel's blocks of 4 and its tail), column runs shorter and longer than the
// vector lanes, a leading dimension wider than any run, with and without accumulation, in
// float64 (to rounding) and float32 (close). Rows outside the runs keep their NaN sentinel
// value; a product big enough for OpenMP gives bit-identical results at 1 and 2 threads.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

using namespace nestor::cpu;

namespace {

struct Case {
  int64_t rows, ld;
  IndexRuns rowRuns, colRuns;
};

std::vector<double> randomVector(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(n);
  for (double &x : v)
    x = u(rng);
  return v;
}

template <typename T> void check(const Case &c, bool accumulate, double tolerance) {
  std::vector<double> w = randomVector(c.rows * c.ld, 1), x = randomVector(c.ld, 2);
  std::vector<double> y0 = randomVector(c.rows, 3);
  std::vector<T> wt(w.begin(), w.end()), xt(x.begin(), x.end());
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> y(c.rows, nan);
  std::vector<bool> inRuns(c.rows, false);
  for (auto [start, len] : c.rowRuns)
    for (int64_t i = start; i < start + len; ++i) {
      inRuns[i] = true;
      if (accumulate)
        y[i] = static_cast<T>(y0[i]);
    }
  gemvRuns<T>(wt.data(), c.ld, c.rowRuns, c.colRuns, xt.data(), accumulate, y.data());
  for (int64_t i = 0; i < c.rows; ++i) {
    if (!inRuns[i]) {
      EXPECT_TRUE(std::isnan(y[i])) << "row " << i << " outside the runs was written";
      continue;
    }
    double want = accumulate ? static_cast<double>(static_cast<T>(y0[i])) : 0.0;
    for (auto [start, len] : c.colRuns)
      for (int64_t j = start; j < start + len; ++j)
        want += static_cast<double>(wt[i * c.ld + j]) * static_cast<double>(xt[j]);
    EXPECT_NEAR(static_cast<double>(y[i]), want, tolerance) << "row " << i;
  }
}

std::vector<Case> cases() {
  return {
      {1, 7, {{0, 1}}, {{0, 7}}},
      {9, 40, {{0, 3}, {5, 4}}, {{1, 3}, {9, 17}, {33, 7}}},
      {50, 130, {{2, 37}, {45, 5}}, {{0, 16}, {16, 1}, {40, 70}}},
      {64, 96, {{0, 64}}, {{0, 32}, {48, 5}}},
      {12, 20, {{3, 3}}, {}},
  };
}

TEST(CpuGemmTest, RunsOfRowsAndColumnsMatchPlainLoops) {
  for (const Case &c : cases())
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << c.rows << " rows, ld " << c.ld << ", accumulate " << accumulate);
      check<double>(c, accumulate, 1e-12);
      check<float>(c, accumulate, 1e-4);
    }
}

TEST(CpuGemmTest, ThreadedProductIsBitIdenticalAtOneAndTwoThreads) {
  // 900 rows x 600 columns is past the kernel's threading threshold.
  int64_t rows = 900, ld = 700;
  IndexRuns rowRuns = {{0, 300}, {301, 599}}, colRuns = {{0, 64}, {100, 536}};
  std::vector<double> w = randomVector(rows * ld, 4), x = randomVector(ld, 5);
  std::vector<float> wf(w.begin(), w.end()), xf(x.begin(), x.end());
  auto run = [&](int threads) {
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> y(rows, 0.0f);
    gemvRuns<float>(wf.data(), ld, rowRuns, colRuns, xf.data(), false, y.data());
    omp_set_num_threads(saved);
    return y;
  };
  std::vector<float> one = run(1), two = run(2);
  ASSERT_EQ(one.size(), two.size());
  for (int64_t i = 0; i < rows; ++i)
    ASSERT_EQ(one[i], two[i]) << "row " << i;
  EXPECT_EQ(one[300], 0.0f) << "row 300 lies between the runs";
}

} // namespace
