//===- CudaAttentionTest.cpp - The emitted attention kernels ----------------===//
//
// kernel.attention and kernel.attention_grad as CUDA: compiled with NVRTC for sm_80 and sm_90
// (PTX checked), and run on the host under the CUDA emulation against the CPU kernels of
// lib/codegen/cpu/Attention.cpp, at sizes that fill no tile (length 37 and 100 against tiles
// of 32 and 64 rows), with GQA, prefix-dense head masks that leave heads of every group
// inactive, head dims that are not a multiple of 4 x 8 (12) or of 4 (78), and ones streamed in
// chunks (64, 78 and 128).
//
//===----------------------------------------------------------------------===//
#include "test/unit/cuda/HostRun.h"

#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FormatVariadic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

namespace {

/// An attention problem: sizes, and the active query heads per KV group (the prefix-dense
/// extent; 0 = no mask, every head active).
struct Problem {
  int64_t batch, length, heads, kvHeads, headDim, qActive;
  bool isDouble = false;
  int64_t group() const { return heads / kvHeads; }
  bool masked() const { return qActive > 0; }
  int64_t active() const { return masked() ? qActive : group(); }
  cpu::AttentionShape shape() const { return {batch, length, heads, kvHeads, headDim, active()}; }
  int64_t qSize() const { return batch * length * heads * headDim; }
  int64_t kvSize() const { return batch * length * kvHeads * headDim; }
  int64_t lseSize() const { return batch * heads * length; }
  std::string elem() const { return isDouble ? "f64" : "f32"; }
  std::string qType() const {
    return llvm::formatv("tensor<{0}x{1}x{2}x{3}>", batch, length, heads * headDim, elem());
  }
  std::string kvType() const {
    return llvm::formatv("tensor<{0}x{1}x{2}x{3}>", batch, length, kvHeads * headDim, elem());
  }
  std::string lseType() const {
    return llvm::formatv("tensor<{0}x{1}x{2}x{3}>", batch, heads, length, elem());
  }
  std::string maskType() const { return llvm::formatv("tensor<{0}x{1}>", heads + 2, elem()); }
  std::string attrs() const {
    return llvm::formatv("{{num_heads = {0} : i64, num_kv_heads = {1} : i64, head_dim = {2} : "
                         "i64{3}}",
                         heads, kvHeads, headDim, masked() ? ", prefix_dense" : "");
  }
  std::string maskArg() const { return masked() ? ", %m: " + maskType() : ""; }
  std::string maskUse() const { return masked() ? " heads(%m : " + maskType() + ")" : ""; }

  std::string forwardIR() const {
    return "func.func @f(%q: " + qType() + ", %k: " + kvType() + ", %v: " + kvType() + maskArg() +
           ") -> (" + qType() + ", " + lseType() + ") {\n  %a, %lse = kernel.attention %q, %k, %v" +
           maskUse() + " " + attrs() + " : (" + qType() + ", " + kvType() + ") -> " + lseType() +
           "\n  return %a, %lse : " + qType() + ", " + lseType() + "\n}\n";
  }
  std::string backwardIR() const {
    return "func.func @g(%q: " + qType() + ", %k: " + kvType() + ", %v: " + kvType() +
           ", %a: " + qType() + ", %lse: " + lseType() + ", %da: " + qType() + maskArg() +
           ") -> (" + qType() + ", " + kvType() + ", " + kvType() +
           ") {\n  %dq, %dk, %dv = kernel.attention_grad %q, %k, %v, %a, %lse, %da" + maskUse() +
           " " + attrs() + " : (" + qType() + ", " + kvType() + ", " + lseType() +
           ")\n  return %dq, %dk, %dv : " + qType() + ", " + kvType() + ", " + kvType() + "\n}\n";
  }
};

using nestor::cuda::test::randomVector;

/// The heads mask [m_0 .. m_{nh-1}, phi, sigma] keeping the first `active` heads of each group.
template <typename T> std::vector<T> headsMask(const Problem &p) {
  std::vector<T> m(p.heads + 2, T(0));
  for (int64_t h = 0; h < p.heads; ++h)
    m[h] = h % p.group() < p.qActive ? T(0.75) : T(0);
  m[p.heads] = T(p.qActive) / T(p.group());
  m[p.heads + 1] = T(1);
  return m;
}

/// max_i |got_i - want_i| / (|want_i| + floor * max_j |want_j|): relative error, with an
/// absolute floor (a fraction of the tensor's largest magnitude) for entries near 0, where
/// reordered sums of cancelling terms leave only absolute accuracy.
template <typename T>
double relativeError(const std::vector<T> &got, const std::vector<T> &want, double floor) {
  double big = 0, worst = 0;
  for (T w : want)
    big = std::max(big, std::abs(double(w)));
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::abs(double(got[i]) - double(want[i]));
    if (!std::isfinite(double(got[i])))
      return INFINITY;
    worst = std::max(worst, err / (std::abs(double(want[i])) + floor * big + 1e-300));
  }
  return worst;
}

/// The absolute floor of relativeError: 1% of the tensor's largest magnitude.
constexpr double kFloor = 1e-2;

/// Every element of the inactive heads' [.., hd] slices of a q-shaped buffer is exactly 0.
template <typename T> bool inactiveHeadsZero(const Problem &p, const std::vector<T> &x) {
  for (int64_t r = 0; r < p.batch * p.length; ++r)
    for (int64_t h = 0; h < p.heads; ++h)
      if (h % p.group() >= p.active())
        for (int64_t e = 0; e < p.headDim; ++e)
          if (x[(r * p.heads + h) * p.headDim + e] != T(0))
            return false;
  return true;
}

KernelSource emit(Operation *op) {
  KernelSource k;
  EXPECT_TRUE(succeeded(cast<kernel::CudaEmitOpInterface>(op).emitCuda(k)));
  return k;
}

template <typename T> std::vector<double> toDouble(const std::vector<T> &x) {
  return std::vector<double>(x.begin(), x.end());
}

/// Checks `got` (the emulated kernel's result `name`) against `want` (the CPU kernel's, in T)
/// within `tol`; for float, also against `exact` (the float64 CPU kernel's on the same inputs):
/// at most twice as far from it as the float CPU kernel is (or 1e-6), i.e. as accurate as the
/// CPU kernel whatever order the sums run in.
template <typename T>
void expectClose(const char *name, const std::vector<T> &got, const std::vector<T> &want,
                 const std::vector<double> &exact, double tol) {
  EXPECT_LE(relativeError(got, want, kFloor), tol) << name << " against the CPU kernel";
  if (exact.empty())
    return;
  double gpu = relativeError(toDouble(got), exact, kFloor);
  double cpu = relativeError(toDouble(want), exact, kFloor);
  EXPECT_LE(gpu, std::max(2 * cpu, 1e-6))
      << name << " against float64: the CPU kernel's float error is " << cpu;
}

/// Runs the forward on the host emulation and on the CPU; checks a and lse.
template <typename T> void checkForward(const Problem &p, double tol) {
  ASSERT_EQ(p.isDouble, (std::is_same_v<T, double>));
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, p.forwardIR());
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  ASSERT_EQ(k.launches.size(), 1u);
  std::vector<T> q = randomVector<T>(p.qSize(), 1), kk = randomVector<T>(p.kvSize(), 2),
                 v = randomVector<T>(p.kvSize(), 3), mask = headsMask<T>(p);
  // NaN-filled outputs: every element must be written.
  std::vector<T> a(p.qSize(), T(NAN)), lse(p.lseSize(), T(NAN));
  std::vector<const void *> operands = {q.data(), kk.data(), v.data()};
  if (p.masked())
    operands.push_back(mask.data());
  llvm::Error e = test::runOnHost(op, k, operands, {a.data(), lse.data()});
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));

  std::vector<T> wantA(p.qSize()), wantLse(p.lseSize());
  cpu::attentionForward<T>(p.shape(), q.data(), kk.data(), v.data(), wantA.data(), wantLse.data());
  std::vector<double> exactA, exactLse;
  if (!p.isDouble) {
    auto qd = toDouble(q), kd = toDouble(kk), vd = toDouble(v);
    exactA.resize(p.qSize()), exactLse.resize(p.lseSize());
    cpu::attentionForward<double>(p.shape(), qd.data(), kd.data(), vd.data(), exactA.data(),
                                  exactLse.data());
  }
  expectClose("a", a, wantA, exactA, tol);
  expectClose("lse", lse, wantLse, exactLse, tol);
  EXPECT_TRUE(inactiveHeadsZero(p, a)) << "inactive heads' outputs";
}

/// Runs the backward (from the CPU forward's a and lse) on the host emulation and on the CPU;
/// checks dq, dk, dv.
template <typename T> void checkBackward(const Problem &p, double tol) {
  ASSERT_EQ(p.isDouble, (std::is_same_v<T, double>));
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, p.backwardIR());
  ASSERT_TRUE(module);
  Operation *op = test::firstKernelOp(*module);
  KernelSource k = emit(op);
  ASSERT_EQ(k.launches.size(), 3u);
  std::vector<T> q = randomVector<T>(p.qSize(), 4), kk = randomVector<T>(p.kvSize(), 5),
                 v = randomVector<T>(p.kvSize(), 6), da = randomVector<T>(p.qSize(), 7),
                 mask = headsMask<T>(p);
  std::vector<T> a(p.qSize()), lse(p.lseSize());
  cpu::AttentionShape s = p.shape();
  cpu::attentionForward<T>(s, q.data(), kk.data(), v.data(), a.data(), lse.data());
  std::vector<T> dq(p.qSize(), T(NAN)), dk(p.kvSize(), T(NAN)), dv(p.kvSize(), T(NAN));
  std::vector<const void *> operands = {q.data(), kk.data(),  v.data(),
                                        a.data(), lse.data(), da.data()};
  if (p.masked())
    operands.push_back(mask.data());
  llvm::Error e = test::runOnHost(op, k, operands, {dq.data(), dk.data(), dv.data()});
  ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));

  std::vector<T> wantDq(p.qSize()), wantDk(p.kvSize()), wantDv(p.kvSize());
  cpu::attentionBackward<T>(s, q.data(), kk.data(), v.data(), a.data(), lse.data(), da.data(),
                            wantDq.data(), wantDk.data(), wantDv.data());
  std::vector<double> exactDq, exactDk, exactDv;
  if (!p.isDouble) {
    auto qd = toDouble(q), kd = toDouble(kk), vd = toDouble(v), dad = toDouble(da);
    std::vector<double> ad(p.qSize()), lsed(p.lseSize());
    cpu::attentionForward<double>(s, qd.data(), kd.data(), vd.data(), ad.data(), lsed.data());
    exactDq.resize(p.qSize()), exactDk.resize(p.kvSize()), exactDv.resize(p.kvSize());
    cpu::attentionBackward<double>(s, qd.data(), kd.data(), vd.data(), ad.data(), lsed.data(),
                                   dad.data(), exactDq.data(), exactDk.data(), exactDv.data());
  }
  expectClose("dq", dq, wantDq, exactDq, tol);
  expectClose("dk", dk, wantDk, exactDk, tol);
  expectClose("dv", dv, wantDv, exactDv, tol);
  EXPECT_TRUE(inactiveHeadsZero(p, dq)) << "inactive heads' dq";
}

// GQA 6 heads on 2 KV heads, 2 of each group's 3 heads active (prefix-dense), head dim 12.
const Problem kSmall{2, 37, 6, 2, 12, 2};
// Every head active (no mask), head dim 64: the backward streams it in 2 chunks of 32; 100
// rows are 2 query tiles of 64 (forward, dQ) and 4 of 32 (dK/dV).
const Problem kWide{1, 100, 4, 2, 64, 0};
// Head dim 78 (not a multiple of 4): streamed in chunks of 64 (forward) and 32 (backward), the
// last one partly empty.
const Problem kChunked{1, 70, 2, 1, 78, 0};
// Head dim 128, one of each group's 2 heads active: chunks of 64 (forward) and 32 (backward).
const Problem kLongHead{1, 45, 4, 2, 128, 1};
// Float64, one of each group's 3 heads active, head dim 16.
const Problem kDouble{2, 37, 6, 2, 16, 1, true};

TEST(CudaAttentionTest, CompilesForSm80AndSm90) {
  for (const Problem &p : {kSmall, Problem{1, 100, 8, 2, 128, 3}}) {
    MLIRContext ctx;
    auto fwd = test::parseKernelModule(ctx, p.forwardIR());
    auto bwd = test::parseKernelModule(ctx, p.backwardIR());
    ASSERT_TRUE(fwd && bwd);
    for (const char *arch : {"sm_80", "sm_90"}) {
      auto ptx = test::compileToPtx(test::firstKernelOp(*fwd), arch);
      ASSERT_TRUE(static_cast<bool>(ptx)) << llvm::toString(ptx.takeError());
      EXPECT_NE(ptx->find(std::string(".target ") + arch), std::string::npos);
      EXPECT_NE(ptx->find(".visible .entry attention_forward("), std::string::npos);
      EXPECT_NE(ptx->find("ld.shared.v4.f32"), std::string::npos) << "float4 tile reads";
      EXPECT_EQ(ptx->find(".local"), std::string::npos) << "accumulators kept in registers";
      auto gptx = test::compileToPtx(test::firstKernelOp(*bwd), arch);
      ASSERT_TRUE(static_cast<bool>(gptx)) << llvm::toString(gptx.takeError());
      for (const char *entry :
           {"attention_grad_rowdot(", "attention_grad_dkdv(", "attention_grad_dq("})
        EXPECT_NE(gptx->find(std::string(".visible .entry ") + entry), std::string::npos) << entry;
      EXPECT_EQ(gptx->find(".local"), std::string::npos) << "accumulators kept in registers";
      EXPECT_EQ(gptx->find("atom."), std::string::npos) << "deterministic: no atomics";
    }
  }
}

TEST(CudaAttentionTest, LaunchesAndExtents) {
  MLIRContext ctx;
  auto bwd = test::parseKernelModule(ctx, kSmall.backwardIR());
  ASSERT_TRUE(bwd);
  KernelSource k = emit(test::firstKernelOp(*bwd));
  ASSERT_EQ(k.launches.size(), 3u);
  EXPECT_EQ(k.kind, "attention_grad");
  ASSERT_EQ(k.scratchBytes.size(), 1u);
  EXPECT_EQ(k.scratchBytes[0], int64_t(2 * 6 * 37 * sizeof(float))) << "D, like lse";
  for (const Launch &l : k.launches) {
    const KernelArg &last = l.args.back();
    EXPECT_EQ(last.kind, KernelArg::Kind::Extent) << l.entry;
    EXPECT_EQ(last.index, 6u) << l.entry << ": the heads operand";
    EXPECT_EQ(last.groups, 2) << l.entry << ": groups = num_kv_heads";
    EXPECT_LE(l.block.x * l.block.y * l.block.z, 256) << l.entry;
    EXPECT_LE(l.sharedBytes, 48 * 1024) << l.entry;
  }
  EXPECT_EQ(k.launches[1].grid.y, 2) << "dK/dV: one block row per KV head";
  EXPECT_EQ(k.launches[2].grid.y, 6) << "dQ: one block row per query head";
  // Without the mask (or without prefix_dense) no launch takes an extent.
  auto full = test::parseKernelModule(ctx, kWide.forwardIR());
  ASSERT_TRUE(full);
  KernelSource f = emit(test::firstKernelOp(*full));
  ASSERT_EQ(f.launches.size(), 1u);
  for (const KernelArg &a : f.launches[0].args)
    EXPECT_NE(a.kind, KernelArg::Kind::Extent);
}

TEST(CudaAttentionTest, RejectsMismatchedHeads) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, R"(
func.func @f(%q: tensor<1x5x12xf32>, %k: tensor<1x5x8xf32>) -> tensor<1x5x12xf32> {
  %a, %lse = kernel.attention %q, %k, %k {num_heads = 3 : i64, num_kv_heads = 2 : i64, head_dim = 4 : i64}
      : (tensor<1x5x12xf32>, tensor<1x5x8xf32>) -> tensor<1x3x5xf32>
  return %a : tensor<1x5x12xf32>
})");
  ASSERT_TRUE(module);
  std::string message;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  KernelSource k;
  EXPECT_TRUE(failed(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*module)).emitCuda(k)));
  EXPECT_NE(message.find("not a multiple of num_kv_heads"), std::string::npos) << message;
}

TEST(CudaAttentionTest, ForwardMatchesTheCpuKernelPrefixDense) {
  checkForward<float>(kSmall, 1e-5);
}

TEST(CudaAttentionTest, ForwardMatchesTheCpuKernelWideHead) { checkForward<float>(kWide, 1e-5); }

TEST(CudaAttentionTest, ForwardAndBackwardMatchTheCpuKernelOddChunkedHead) {
  checkForward<float>(kChunked, 1e-5);
  checkBackward<float>(kChunked, 1e-4);
}

TEST(CudaAttentionTest, BackwardMatchesTheCpuKernelPrefixDense) {
  checkBackward<float>(kSmall, 1e-4);
}

TEST(CudaAttentionTest, BackwardMatchesTheCpuKernelWideHead) { checkBackward<float>(kWide, 1e-4); }

TEST(CudaAttentionTest, ForwardAndBackwardMatchTheCpuKernelHeadDim128) {
  checkForward<float>(kLongHead, 1e-5);
  checkBackward<float>(kLongHead, 1e-4);
}

TEST(CudaAttentionTest, Float64MatchesTheCpuKernel) {
  checkForward<double>(kDouble, 1e-12);
  checkBackward<double>(kDouble, 1e-12);
}

} // namespace
