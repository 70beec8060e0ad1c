//===- Gemm.cpp - GEMMs through OpenBLAS ------------------------------------===//
//
// OpenBLAS is Debian's tuned BLAS; on this project's CPUs it is several times faster than a
// straightforward blocked GEMM, so kernel.gemm goes through it (BUILD-NOTES.md has its numbers
// and the OPENBLAS_CORETYPE caveat, documented in README.md). A product with one row (a
// decode step's projections) is a matrix-vector product: ?gemv, which streams the weights once
// without GEMM's packing.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cpu/Kernels.h"

#include <cblas.h>

namespace nestor::cpu {

template <>
void gemm<float>(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  if (m == 1) {
    // c[0, :] = alpha op(B)^T-applied a + beta c: B [n, k] (transB) or [k, n].
    cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, transB ? n : k, transB ? k : n,
                alpha, b, ldb, a, transA ? lda : 1, beta, c, 1);
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
    cblas_dgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, transB ? n : k, transB ? k : n,
                alpha, b, ldb, a, transA ? lda : 1, beta, c, 1);
    return;
  }
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

} // namespace nestor::cpu
