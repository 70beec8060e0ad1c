//===- CudaLossTest.cpp - The CUDA loss and optimizer kernels -------------===//
//
// kernel.cross_entropy(_grad), kernel.kl(_grad), kernel.squared_norm and kernel.adamw: each
// emitted kernel is compiled with NVRTC for sm_80 and sm_90 (its PTX checked) and run on the
// host under the CUDA emulation against the CPU kernel, at sizes that fill no block, in float32
// and float64.
//
//===----------------------------------------------------------------------===//
#include "test/unit/cuda/HostRun.h"

#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FormatVariadic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

namespace {

using nestor::cuda::test::randomVector;

/// The largest error relative to each entry, with a floor of 1e-6 of the largest entry (where a
/// difference such as b1 m + (1 - b1) g cancels).
template <typename T>
double maxRelativeError(const std::vector<T> &got, const std::vector<T> &want) {
  double largest = 0, worst = 0;
  for (T w : want)
    largest = std::max(largest, std::abs(double(w)));
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double(got[i]) - double(want[i])) /
                                (1e-6 * largest + std::abs(double(want[i])) + 1e-300));
  return worst;
}

template <typename T> double relativeError(T got, T want) {
  return std::abs(double(got) - double(want)) / (1e-30 + std::abs(double(want)));
}

/// Float32 results reorder float32 reductions; float64 ones float64 reductions.
template <typename T> double tolerance() { return sizeof(T) == 4 ? 1e-5 : 1e-12; }

template <typename T> const char *typeName() { return sizeof(T) == 4 ? "f32" : "f64"; }

/// Emits the module's first kernel op, failing the test if it cannot.
KernelSource emit(Operation *op) {
  KernelSource k;
  EXPECT_TRUE(succeeded(cast<kernel::CudaEmitOpInterface>(op).emitCuda(k)));
  return k;
}

void run(Operation *op, const KernelSource &k, llvm::ArrayRef<const void *> operands,
         llvm::ArrayRef<void *> results) {
  llvm::Error e = test::runOnHost(op, k, operands, results);
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
}

// Logits [2 x 4 x 300]: 8 rows of a vocabulary of 300 (256 threads, some with two entries).
constexpr int64_t kB = 2, kL = 4, kRows = kB * kL, kVocab = 300, kIgnore = -100;

std::string crossEntropyIR(const char *t, bool grad) {
  std::string x = llvm::formatv("tensor<{0}x{1}x{2}x{3}>", kB, kL, kVocab, t).str();
  std::string tok = llvm::formatv("tensor<{0}x{1}xi32>", kB, kL).str();
  if (!grad)
    return llvm::formatv(R"(
func.func @k(%x: {0}, %t: {1}) -> tensor<{2}> {
  %l = kernel.cross_entropy %x, %t {{ignore_index = {3} : i64} : {0}, {1} -> tensor<{2}>
  return %l : tensor<{2}>
})",
                         x, tok, t, kIgnore)
        .str();
  return llvm::formatv(R"(
func.func @k(%x: {0}, %t: {1}, %d: tensor<{2}>) -> {0} {
  %g = kernel.cross_entropy_grad %x, %t, %d {{ignore_index = {3} : i64} : {0}, {1}, tensor<{2}>
  return %g : {0}
})",
                       x, tok, t, kIgnore)
      .str();
}

std::string klIR(const char *t, bool grad) {
  std::string x = llvm::formatv("tensor<{0}x{1}x{2}x{3}>", kB, kL, kVocab, t).str();
  if (!grad)
    return llvm::formatv(R"(
func.func @k(%s: {0}, %t: {0}) -> tensor<{1}> {
  %l = kernel.kl %s, %t {{temperature = 2.0 : f64} : {0} -> tensor<{1}>
  return %l : tensor<{1}>
})",
                         x, t)
        .str();
  return llvm::formatv(R"(
func.func @k(%s: {0}, %t: {0}, %d: tensor<{1}>) -> {0} {
  %g = kernel.kl_grad %s, %t, %d {{temperature = 2.0 : f64} : {0}, tensor<{1}>
  return %g : {0}
})",
                       x, t)
      .str();
}

/// `count` inputs of the given types (cycled) to one squared_norm.
std::string squaredNormIR(const std::vector<std::string> &types, size_t count) {
  std::string args, operands, operandTypes;
  for (size_t i = 0; i < count; ++i) {
    const std::string &type = types[i % types.size()];
    args += llvm::formatv("{0}%a{1}: {2}", i ? ", " : "", i, type).str();
    operands += llvm::formatv("{0}%a{1}", i ? ", " : "", i).str();
    operandTypes += (i ? ", " : "") + type;
  }
  return llvm::formatv(R"(
func.func @k({0}) -> tensor<f64> {
  %n = kernel.squared_norm {1} : {2} -> tensor<f64>
  return %n : tensor<f64>
})",
                       args, operands, operandTypes)
      .str();
}

// AdamW on [37 x 29] = 1073 parameters: 5 blocks of 256, the last partly idle.
constexpr int64_t kAdamRows = 37, kAdamCols = 29, kAdamN = kAdamRows * kAdamCols;

std::string adamwIR(const char *t) {
  std::string p = llvm::formatv("tensor<{0}x{1}x{2}>", kAdamRows, kAdamCols, t).str();
  return llvm::formatv(R"(
func.func @k(%p: {0}, %g: {0}, %m: {0}, %v: {0}, %h: tensor<3xf64>) {
  kernel.adamw %p, %g, %m, %v, %h {{beta1 = 0.9 : f64, beta2 = 0.999 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.01 : f64} : {0}, tensor<3xf64>
  return
})",
                       p)
      .str();
}

/// Targets with ignored rows and the vocabulary's first and last entries.
std::vector<int32_t> targetsWithIgnored() {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> pick(0, kVocab - 1);
  std::vector<int32_t> t(kRows);
  for (int32_t &x : t)
    x = pick(rng);
  t[1] = t[6] = int32_t(kIgnore);
  t[2] = 0;
  t[3] = kVocab - 1;
  return t;
}

/// Logits with a row shifted by +shift and one by -shift, shift / temperature = 100 (float32)
/// or 1000 (float64): exp without the max subtracted would overflow or vanish. (Not more in
/// float32: the log-sum-exp's own rounding, ulp(shift), is then the tolerance.)
template <typename T>
std::vector<T> logitsWithOutliers(unsigned seed, double scale, double temperature = 1.0) {
  std::vector<T> x = randomVector<T>(kRows * kVocab, seed, scale);
  T shift = T((sizeof(T) == 4 ? 100.0 : 1000.0) * temperature);
  for (int64_t c = 0; c < kVocab; ++c) {
    x[4 * kVocab + c] += shift;
    x[5 * kVocab + c] -= shift;
  }
  return x;
}

//===----------------------------------------------------------------------===//
// NVRTC: every emitter's source compiles for sm_80 and sm_90.
//===----------------------------------------------------------------------===//

void expectPtx(const std::string &ir, std::vector<std::string> entries, bool reduces) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, ir);
  ASSERT_TRUE(module);
  for (const char *arch : {"sm_80", "sm_90"}) {
    auto ptx = test::compileToPtx(test::firstKernelOp(*module), arch);
    ASSERT_TRUE(static_cast<bool>(ptx)) << llvm::toString(ptx.takeError());
    EXPECT_NE(ptx->find(std::string(".target ") + arch), std::string::npos);
    for (const std::string &entry : entries) {
      EXPECT_NE(ptx->find(".visible .entry " + entry + "("), std::string::npos) << entry;
    }
    if (reduces) {
      EXPECT_NE(ptx->find("shfl.sync.bfly"), std::string::npos) << "the block reductions";
    }
    EXPECT_EQ(ptx->find("atom.global"), std::string::npos) << "deterministic: no atomics";
  }
}

TEST(CudaLossTest, CrossEntropyCompilesForSm80AndSm90) {
  expectPtx(crossEntropyIR("f32", false), {"cross_entropy_rows", "cross_entropy_mean"}, true);
  expectPtx(crossEntropyIR("f64", false), {"cross_entropy_rows", "cross_entropy_mean"}, true);
  expectPtx(crossEntropyIR("f32", true), {"cross_entropy_count", "cross_entropy_backward"}, true);
}

TEST(CudaLossTest, KLCompilesForSm80AndSm90) {
  expectPtx(klIR("f32", false), {"kl_rows", "kl_mean"}, true);
  expectPtx(klIR("f32", true), {"kl_backward"}, true);
  expectPtx(klIR("f64", true), {"kl_backward"}, true);
}

TEST(CudaLossTest, OptimizerCompilesForSm80AndSm90) {
  expectPtx(squaredNormIR({"tensor<70001xf32>", "tensor<3x5xf64>"}, 2),
            {"squared_norm_chunks_0", "squared_norm_total"}, true);
  expectPtx(adamwIR("f32"), {"adamw_step"}, false);
  expectPtx(adamwIR("f64"), {"adamw_step"}, false);
}

TEST(CudaLossTest, AdamWUpdatesThroughWritableOperands) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, adamwIR("f32"));
  ASSERT_TRUE(module);
  KernelSource k = emit(test::firstKernelOp(*module));
  ASSERT_EQ(k.launches.size(), 1u);
  EXPECT_NE(k.source.find("adamw_step(float *__restrict__ param, const float *__restrict__ grad, "
                          "float *__restrict__ exp_avg, float *__restrict__ exp_avg_sq, const "
                          "double *__restrict__ hyper)"),
            std::string::npos)
      << k.source;
}

TEST(CudaLossTest, MismatchedTargetsAreRefused) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, R"(
func.func @k(%x: tensor<2x4x300xf32>, %t: tensor<2x5xi32>) -> tensor<f32> {
  %l = kernel.cross_entropy %x, %t {ignore_index = -100 : i64} : tensor<2x4x300xf32>, tensor<2x5xi32> -> tensor<f32>
  return %l : tensor<f32>
})");
  ASSERT_TRUE(module);
  std::string message;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  KernelSource k;
  EXPECT_TRUE(failed(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*module)).emitCuda(k)));
  EXPECT_NE(message.find("10 targets for 8 rows"), std::string::npos) << message;
}

//===----------------------------------------------------------------------===//
// Values against the CPU kernels.
//===----------------------------------------------------------------------===//

template <typename T> void checkCrossEntropy() {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, crossEntropyIR(typeName<T>(), false));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  std::vector<T> x = logitsWithOutliers<T>(1, 3.0);
  std::vector<int32_t> t = targetsWithIgnored();
  T got = T(-1);
  run(op, k, {x.data(), t.data()}, {&got});
  T want = cpu::crossEntropyForward<T>(x.data(), kRows, kVocab, t.data(), kIgnore);
  EXPECT_LE(relativeError(got, want), tolerance<T>()) << got << " vs " << want;

  // Every row ignored: 0.
  std::vector<int32_t> ignored(kRows, int32_t(kIgnore));
  got = T(-1);
  run(op, k, {x.data(), ignored.data()}, {&got});
  EXPECT_EQ(got, T(0));
}

TEST(CudaLossTest, CrossEntropyMatchesTheCpuKernelF32) { checkCrossEntropy<float>(); }
TEST(CudaLossTest, CrossEntropyMatchesTheCpuKernelF64) { checkCrossEntropy<double>(); }

template <typename T> void checkCrossEntropyGrad() {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, crossEntropyIR(typeName<T>(), true));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  std::vector<T> x = logitsWithOutliers<T>(2, 3.0);
  std::vector<int32_t> t = targetsWithIgnored();
  T dLoss = T(0.75);
  std::vector<T> got(kRows * kVocab, T(-1)), want(kRows * kVocab);
  run(op, k, {x.data(), t.data(), &dLoss}, {got.data()});
  cpu::crossEntropyBackward<T>(x.data(), kRows, kVocab, t.data(), kIgnore, dLoss, want.data());
  EXPECT_LE(maxRelativeError(got, want), tolerance<T>());
  EXPECT_EQ(got[6 * kVocab + 17], T(0)) << "an ignored row";
  EXPECT_LT(got[3 * kVocab + kVocab - 1], T(0)) << "the target entry";
}

TEST(CudaLossTest, CrossEntropyGradMatchesTheCpuKernelF32) { checkCrossEntropyGrad<float>(); }
TEST(CudaLossTest, CrossEntropyGradMatchesTheCpuKernelF64) { checkCrossEntropyGrad<double>(); }

/// A student near the teacher (logits differing by noise of half their scale), outlier rows.
template <typename T> std::pair<std::vector<T>, std::vector<T>> studentAndTeacher() {
  std::vector<T> teacher = logitsWithOutliers<T>(3, 4.0, 2.0);
  std::vector<T> noise = randomVector<T>(teacher.size(), 4, 2.0);
  std::vector<T> student(teacher.size());
  for (size_t i = 0; i < teacher.size(); ++i)
    student[i] = teacher[i] + noise[i];
  return {student, teacher};
}

template <typename T> void checkKL() {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, klIR(typeName<T>(), false));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  auto [s, t] = studentAndTeacher<T>();
  T got = T(-1);
  run(op, k, {s.data(), t.data()}, {&got});
  T want = cpu::klForward<T>(s.data(), t.data(), kRows, kVocab, 2.0);
  EXPECT_GT(want, T(0));
  EXPECT_LE(relativeError(got, want), tolerance<T>()) << got << " vs " << want;
}

TEST(CudaLossTest, KLMatchesTheCpuKernelF32) { checkKL<float>(); }
TEST(CudaLossTest, KLMatchesTheCpuKernelF64) { checkKL<double>(); }

template <typename T> void checkKLGrad() {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, klIR(typeName<T>(), true));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  auto [s, t] = studentAndTeacher<T>();
  T dLoss = T(1.5);
  std::vector<T> got(kRows * kVocab, T(-1)), want(kRows * kVocab);
  run(op, k, {s.data(), t.data(), &dLoss}, {got.data()});
  cpu::klBackward<T>(s.data(), t.data(), kRows, kVocab, 2.0, dLoss, want.data());
  // p_S - p_T cancels where the distributions agree: the error is relative to the terms'
  // magnitude, scale * (p_S + p_T) (in double here).
  double worst = 0, scale = double(dLoss) / (kRows * 2.0);
  auto probabilities = [&](const std::vector<T> &x, int64_t r) {
    std::vector<double> p(kVocab);
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < kVocab; ++c)
      mx = std::max(mx, double(x[r * kVocab + c]) / 2.0);
    for (int64_t c = 0; c < kVocab; ++c)
      sum += p[c] = std::exp(double(x[r * kVocab + c]) / 2.0 - mx);
    for (double &v : p)
      v /= sum;
    return p;
  };
  for (int64_t r = 0; r < kRows; ++r) {
    std::vector<double> pS = probabilities(s, r), pT = probabilities(t, r);
    for (int64_t c = 0; c < kVocab; ++c) {
      size_t i = r * kVocab + c;
      worst = std::max(worst, std::abs(double(got[i]) - double(want[i])) /
                                  (scale * (pS[c] + pT[c]) + 1e-300));
    }
  }
  EXPECT_LE(worst, tolerance<T>());
}

TEST(CudaLossTest, KLGradMatchesTheCpuKernelF32) { checkKLGrad<float>(); }
TEST(CudaLossTest, KLGradMatchesTheCpuKernelF64) { checkKLGrad<double>(); }

/// The CPU executor's squared norm (runtime/Executor.cpp): blocks of 4096 in order.
template <typename T> double cpuSquaredNorm(const std::vector<T> &x) {
  double total = 0;
  for (size_t b = 0; b < x.size(); b += 4096) {
    double acc = 0;
    for (size_t i = b; i < std::min(x.size(), b + 4096); ++i)
      acc += double(x[i]) * double(x[i]);
    total += acc;
  }
  return total;
}

TEST(CudaLossTest, SquaredNormMatchesTheCpuSum) {
  // 70001 elements: three chunks, the last partial; then a small float32 matrix.
  MLIRContext ctx;
  auto module =
      test::parseKernelModule(ctx, squaredNormIR({"tensor<70001xf32>", "tensor<37x11xf32>"}, 2));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  ASSERT_EQ(k.launches.size(), 2u);
  EXPECT_EQ(k.launches[0].grid.x, 4);
  std::vector<float> a = randomVector<float>(70001, 5), b = randomVector<float>(37 * 11, 6, 10.0);
  double got = -1;
  run(op, k, {a.data(), b.data()}, {&got});
  double want = cpuSquaredNorm(a) + cpuSquaredNorm(b);
  EXPECT_LE(relativeError(got, want), 1e-12) << got << " vs " << want;
}

TEST(CudaLossTest, SquaredNormOfManyMixedInputs) {
  // 66 inputs (two first-pass launches of at most 64), float32 and float64 alternating.
  constexpr size_t kInputs = 66;
  MLIRContext ctx;
  auto module =
      test::parseKernelModule(ctx, squaredNormIR({"tensor<3x7xf32>", "tensor<13xf64>"}, kInputs));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  ASSERT_EQ(k.launches.size(), 3u);
  std::vector<std::vector<float>> f;
  std::vector<std::vector<double>> d;
  std::vector<const void *> operands;
  double want = 0;
  for (size_t i = 0; i < kInputs; ++i) {
    if (i % 2 == 0) {
      f.push_back(randomVector<float>(21, 100 + i));
      want += cpuSquaredNorm(f.back());
    } else {
      d.push_back(randomVector<double>(13, 100 + i));
      want += cpuSquaredNorm(d.back());
    }
  }
  for (size_t i = 0; i < kInputs; ++i)
    operands.push_back(i % 2 == 0 ? static_cast<const void *>(f[i / 2].data()) : d[i / 2].data());
  double got = -1;
  run(op, k, operands, {&got});
  EXPECT_LE(relativeError(got, want), 1e-12) << got << " vs " << want;
}

template <typename T> void checkAdamW() {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, adamwIR(typeName<T>()));
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  std::vector<T> p = randomVector<T>(kAdamN, 11), g = randomVector<T>(kAdamN, 12, 0.1);
  std::vector<T> m = randomVector<T>(kAdamN, 13, 0.01), v = randomVector<T>(kAdamN, 14, 0.001);
  for (T &x : v)
    x = x * x;
  std::vector<T> wantP = p, wantM = m, wantV = v;
  double hyper[3] = {1e-3, 7, 0.5};
  run(op, k, {p.data(), g.data(), m.data(), v.data(), hyper}, {});
  cpu::adamw<T>(wantP.data(), g.data(), wantM.data(), wantV.data(), kAdamN, hyper[0], 0.9, 0.999,
                1e-8, 0.01, 7, hyper[2]);
  EXPECT_LE(maxRelativeError(p, wantP), tolerance<T>());
  EXPECT_LE(maxRelativeError(m, wantM), tolerance<T>());
  EXPECT_LE(maxRelativeError(v, wantV), tolerance<T>());
}

TEST(CudaLossTest, AdamWMatchesTheCpuKernelF32) { checkAdamW<float>(); }
TEST(CudaLossTest, AdamWMatchesTheCpuKernelF64) { checkAdamW<double>(); }

} // namespace
