//===- Gemm.cpp - GEMMs through OpenBLAS ------------------------------------===//
//
// OpenBLAS is Debian's tuned BLAS; on this project's CPUs it is several times faster than a
// straightforward blocked GEMM, so kernel.gemm goes through it (BUILD-NOTES.md has its numbers
// and the OPENBLAS_CORETYPE caveat, documented in README.md). A product with one row (a
// decode step's projections) is a matrix-vector product: ?gemv, which streams the weights once
// without GEMM's packing; one restricted to runs of rows and columns is gemvRuns' row kernel.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"
#include "lib/codegen/cpu/Vector.h"

#include <cblas.h>

#include <algorithm>

// OpenBLAS's thread count, where the BLAS is OpenBLAS (weak: another BLAS simply lacks them).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace nestor::cpu {

namespace {

/// Products of one row by at most this many weights run on one OpenBLAS thread. A decode
/// step's projections are this size: waking OpenBLAS's own threads (a pool apart from the
/// OpenMP threads of the kernels around them, which they then contend with) costs more than
/// the second core saves on a product that is a few microseconds long. Measured on the tiny
/// hybrid's decode step (2-core EPYC, OpenBLAS 0.3.21 pthreads): 1.2-1.6x the tokens/s.
/// Larger ones are bandwidth-bound and gain from both cores' memory bandwidth.
constexpr int64_t kSingleThreadGemv = int64_t(1) << 20;

/// Runs `f` with OpenBLAS on one thread when the product is small enough (see above). The
/// thread count is OpenBLAS's global setting: the executors call their GEMMs from one thread.
template <typename F> void smallProduct(int64_t weights, F f) {
  int threads = openblas_get_num_threads && openblas_set_num_threads && weights <= kSingleThreadGemv
                    ? openblas_get_num_threads()
                    : 1;
  if (threads > 1)
    openblas_set_num_threads(1);
  f();
  if (threads > 1)
    openblas_set_num_threads(threads);
}

} // namespace

template <>
void gemm<float>(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  if (m == 1) {
    // c[0, :] = alpha op(B)^T-applied a + beta c: B [n, k] (transB) or [k, n].
    smallProduct(n * k, [&] {
      cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, transB ? n : k, transB ? k : n,
                  alpha, b, ldb, a, transA ? lda : 1, beta, c, 1);
    });
    return;
  }
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void gemm<double>(bool transA, bool transB, int64_t m, int64_t n, int64_t k, double alpha,
                  const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                  double *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  if (m == 1) {
    // c[0, :] = alpha op(B)^T-applied a + beta c: B [n, k] (transB) or [k, n].
    smallProduct(n * k, [&] {
      cblas_dgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, transB ? n : k, transB ? k : n,
                  alpha, b, ldb, a, transA ? lda : 1, beta, c, 1);
    });
    return;
  }
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

namespace {

/// y[r] (+)= sum over the column runs of w[r * ld + c] x[c] for kRows consecutive rows. Each x
/// load serves kRows rows, so kRows streams of weights are in flight; the partial sums stay in
/// two vector registers per row across the runs (a head's channels are short), one horizontal
/// sum per row at the end.
template <int64_t kRows, typename T>
inline void rowBlock(const T *w, int64_t ld, const IndexRuns &cols, const T *x, bool accumulate,
                     T *y) {
  using V = Vec<T>;
  using v = typename V::type;
  constexpr int64_t kL = V::kLanes;
  v lo[kRows], hi[kRows];
  T tail[kRows];
  for (int64_t r = 0; r < kRows; ++r) {
    lo[r] = v{};
    hi[r] = v{};
    tail[r] = T(0);
  }
  for (auto [start, len] : cols) {
    const T *wr = w + start, *xr = x + start;
    int64_t j = 0;
    for (; j + 2 * kL <= len; j += 2 * kL) {
      v x0 = V::load(xr + j), x1 = V::load(xr + j + kL);
      for (int64_t r = 0; r < kRows; ++r) {
        lo[r] += V::load(wr + r * ld + j) * x0;
        hi[r] += V::load(wr + r * ld + j + kL) * x1;
      }
    }
    for (; j + kL <= len; j += kL) {
      v x0 = V::load(xr + j);
      for (int64_t r = 0; r < kRows; ++r)
        lo[r] += V::load(wr + r * ld + j) * x0;
    }
    for (; j < len; ++j)
      for (int64_t r = 0; r < kRows; ++r)
        tail[r] += wr[r * ld + j] * xr[j];
  }
  for (int64_t r = 0; r < kRows; ++r) {
    T acc = tail[r] + V::sum(lo[r] + hi[r]);
    y[r] = accumulate ? y[r] + acc : acc;
  }
}

} // namespace

template <typename T>
void gemvRuns(const T *w, int64_t ld, const IndexRuns &rows, const IndexRuns &cols, const T *x,
              bool accumulate, T *y) {
  constexpr int64_t kChunk = 32;
  std::vector<std::pair<int64_t, int64_t>> chunks; // {first row, rows}
  int64_t width = 0, total = 0;
  for (auto [start, len] : cols)
    width += len;
  for (auto [start, len] : rows)
    for (int64_t first = 0; first < len; first += kChunk) {
      chunks.push_back({start + first, std::min(kChunk, len - first)});
      total += chunks.back().second;
    }
  int64_t n = static_cast<int64_t>(chunks.size());
  // Threads only pay off once a product is well past the cost of waking them (as for BLAS).
#pragma omp parallel for schedule(static) if (total * width > kSingleThreadGemv)
  for (int64_t c = 0; c < n; ++c) {
    auto [row, count] = chunks[c];
    int64_t i = 0;
    for (; i + 4 <= count; i += 4)
      rowBlock<4>(w + (row + i) * ld, ld, cols, x, accumulate, y + row + i);
    for (; i < count; ++i)
      rowBlock<1>(w + (row + i) * ld, ld, cols, x, accumulate, y + row + i);
  }
}

template void gemvRuns<float>(const float *, int64_t, const IndexRuns &, const IndexRuns &,
                              const float *, bool, float *);
template void gemvRuns<double>(const double *, int64_t, const IndexRuns &, const IndexRuns &,
                               const double *, bool, double *);

} // namespace nestor::cpu
