//===- CudaEmitTest.cpp - Emitted CUDA kernels, compiled and run ----------===//
//
// Each emitted kernel is compiled with NVRTC for sm_80 and sm_90 (its PTX checked) and run on
// the host under the CUDA emulation against the CPU kernel, at sizes that fill no block.
//
//===----------------------------------------------------------------------===//
#include "test/unit/cuda/HostRun.h"

#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

namespace {

std::vector<float> randomVector(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = normal(rng);
  return v;
}

double maxRelativeError(const std::vector<float> &got, const std::vector<float> &want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double(got[i]) - want[i]) / (1e-6 + std::abs(want[i])));
  return worst;
}

/// A hard prefix mask of `n` entries keeping `active` (times 0.75, the max probability),
/// with phi and sigma.
std::vector<float> prefixMask(int64_t n, int64_t active) {
  std::vector<float> m(n + 2, 0.0f);
  for (int64_t i = 0; i < active; ++i)
    m[i] = 0.75f;
  m[n] = float(active) / float(n);
  m[n + 1] = std::sqrt(float(active) / float(n));
  return m;
}

constexpr const char *kRMSNorm = R"(
func.func @k(%x: tensor<37x100xf32>, %w: tensor<100xf32>, %m: tensor<102xf32>) -> tensor<37x100xf32> {
  %y = kernel.rmsnorm %x, %w mask(%m : tensor<102xf32>) {epsilon = 1.0e-5 : f64, prefix_dense}
      : (tensor<37x100xf32>, tensor<100xf32>) -> tensor<37x100xf32>
  return %y : tensor<37x100xf32>
})";

TEST(CudaEmitTest, MaskedRMSNormCompilesForSm80AndSm90) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, kRMSNorm);
  ASSERT_TRUE(module);
  for (const char *arch : {"sm_80", "sm_90"}) {
    auto ptx = test::compileToPtx(test::firstKernelOp(*module), arch);
    ASSERT_TRUE(static_cast<bool>(ptx)) << llvm::toString(ptx.takeError());
    EXPECT_NE(ptx->find(std::string(".target ") + arch), std::string::npos);
    EXPECT_NE(ptx->find(".visible .entry rmsnorm_forward("), std::string::npos);
    EXPECT_NE(ptx->find("shfl.sync.bfly"), std::string::npos) << "the block reduction";
  }
}

TEST(CudaEmitTest, MaskedRMSNormMatchesTheCpuKernel) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, kRMSNorm);
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k;
  ASSERT_TRUE(succeeded(cast<kernel::CudaEmitOpInterface>(op).emitCuda(k)));
  int64_t rows = 37, d = 100, active = 77;
  std::vector<float> x = randomVector(rows * d, 1), w = randomVector(d, 2);
  for (int64_t r = 0; r < rows; ++r) // the residual stream is zero past the active prefix
    std::fill(x.begin() + r * d + active, x.begin() + (r + 1) * d, 0.0f);
  std::vector<float> mask = prefixMask(d, active);
  std::vector<float> got(rows * d, -1.0f), want(rows * d);
  llvm::Error e = test::runOnHost(op, k, {x.data(), w.data(), mask.data()}, {got.data()});
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  cpu::rmsnormForward<float>(x.data(), rows, d, w.data(), 1e-5, mask.data(), active, want.data());
  EXPECT_LE(maxRelativeError(got, want), 1e-5);
  EXPECT_EQ(got[5 * d + active], 0.0f) << "outside the active prefix";
}

} // namespace
