//===- CudaRowsTest.cpp - The CUDA row kernels against the CPU kernels -------===//
//
// Every row-family emitter (lib/codegen/cuda/emit/Rows.cpp) is compiled with NVRTC for sm_80
// and sm_90 (its entries and key instructions checked in the PTX) and run on the host under
// the CUDA emulation against lib/codegen/cpu at sizes that fill no block, pack or tile.
//
//===----------------------------------------------------------------------===//
#include "test/unit/cuda/HostRun.h"

#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

namespace {

using nestor::cuda::test::randomVector;

std::vector<int32_t> randomTokens(size_t n, int32_t vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t &t : v)
    t = pick(rng);
  return v;
}

/// max |got - want| / (floor + |want|).
template <typename T>
double maxRelativeError(const std::vector<T> &got, const std::vector<T> &want,
                        double floor = 1e-6) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    double e = std::abs(double(got[i]) - double(want[i])) / (floor + std::abs(double(want[i])));
    if (!(e <= worst)) // NaN counts as the worst
      worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

/// max |got - want| / max |want|: for sums whose terms cancel, where the elementwise relative
/// error of a small result says little.
template <typename T> double maxScaledError(const std::vector<T> &got, const std::vector<T> &want) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i)
    scale = std::max(scale, std::abs(double(want[i])));
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    double e = std::abs(double(got[i]) - double(want[i]));
    worst = std::isnan(e) ? INFINITY : std::max(worst, e);
  }
  return scale > 0 ? worst / scale : worst;
}

/// A prefix mask of `n` entries in `groups` groups: the first `active` entries of each group
/// kept (random multipliers in [0.5, 1)), the rest 0; then phi and sigma.
template <typename T>
std::vector<T> prefixMask(int64_t n, int64_t active, unsigned seed, int64_t groups = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> keep(0.5, 1.0);
  std::vector<T> m(n + 2, T(0));
  int64_t per = n / groups;
  for (int64_t i = 0; i < n; ++i)
    if (i % per < active)
      m[i] = T(keep(rng));
  m[n] = T(double(active) / double(per));
  m[n + 1] = T(std::sqrt(double(active) / double(per)));
  return m;
}

/// One kernel op parsed, with its emitted CUDA form.
struct Emitted {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
  Operation *op = nullptr;
  KernelSource kernel;
};

std::unique_ptr<Emitted> emit(llvm::StringRef ir) {
  auto e = std::make_unique<Emitted>();
  e->module = test::parseKernelModule(e->ctx, ir);
  if (!e->module)
    return nullptr;
  e->op = test::firstKernelOp(*e->module);
  if (!e->op || failed(cast<kernel::CudaEmitOpInterface>(e->op).emitCuda(e->kernel)))
    return nullptr;
  return e;
}

#define EMIT(var, ir)                                                                              \
  auto var = emit(ir);                                                                             \
  ASSERT_TRUE(var) << "parse or emit failed"

/// Compiles `e`'s op for sm_80 and sm_90 and checks every launch's entry is in the PTX, with
/// each of `patterns`, and no floating-point atomic (reductions are two-pass).
void expectPtx(const Emitted &e, std::vector<std::string> patterns) {
  for (const char *arch : {"sm_80", "sm_90"}) {
    auto ptx = test::compileToPtx(e.op, arch);
    ASSERT_TRUE(static_cast<bool>(ptx)) << arch << ": " << llvm::toString(ptx.takeError());
    EXPECT_NE(ptx->find(std::string(".target ") + arch), std::string::npos);
    for (const Launch &l : e.kernel.launches)
      EXPECT_NE(ptx->find(".visible .entry " + l.entry + "("), std::string::npos)
          << arch << ": no entry " << l.entry;
    for (const std::string &p : patterns)
      EXPECT_NE(ptx->find(p), std::string::npos) << arch << ": no '" << p << "'";
    for (const char *atomic : {"atom.global.add.f", "red.global.add.f", "atom.add.f", "red.add.f"})
      EXPECT_EQ(ptx->find(atomic), std::string::npos) << arch << ": a float atomic";
  }
}

void run(const Emitted &e, std::vector<const void *> operands, std::vector<void *> results,
         const KernelSource *kernel = nullptr) {
  llvm::Error err = test::runOnHost(e.op, kernel ? *kernel : e.kernel, operands, results);
  ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
}

//===----------------------------------------------------------------------===//
// embed
//===----------------------------------------------------------------------===//

constexpr const char *kEmbed = R"(
func.func @k(%t: tensor<2x19xi32>, %w: tensor<53x100xf32>, %m: tensor<102xf32>) -> tensor<2x19x100xf32> {
  %y = kernel.embed %t, %w mask(%m : tensor<102xf32>) {prefix_dense}
      : (tensor<2x19xi32>, tensor<53x100xf32>) -> tensor<2x19x100xf32>
  return %y : tensor<2x19x100xf32>
})";

/// `kernel` plus a launch that copies the status word (scratch 0) into the last 8 bytes of
/// result 0, so that a test can read it.
KernelSource withStatusReader(const Emitted &e, size_t resultBytes) {
  KernelSource k = e.kernel;
  Launch l;
  l.entry = "test_read_status";
  l.block.x = 32;
  l.args = {{KernelArg::Kind::Scratch, 0, 1, "status"}, {KernelArg::Kind::Result, 0, 1, "out"}};
  k.source += "\n" + entrySignature(e.op, l) +
              " {\n  if (threadIdx.x == 0)\n    memcpy(reinterpret_cast<char *>(out) + " +
              std::to_string(resultBytes - 8) + ", status, 8);\n}\n";
  k.launches.push_back(l);
  return k;
}

uint64_t statusOf(const std::vector<float> &out) {
  uint64_t word;
  std::memcpy(&word, reinterpret_cast<const char *>(out.data()) + out.size() * 4 - 8, 8);
  return word;
}

TEST(CudaRowsTest, EmbedCompilesWithVectorLoadsAndTheStatusAtomic) {
  EMIT(e, kEmbed);
  EXPECT_EQ(e->kernel.scratchBytes, std::vector<int64_t>{8});
  expectPtx(*e, {"v4.f32", "atom.global.max.u64"});
}

TEST(CudaRowsTest, MaskedEmbedMatchesTheCpuKernel) {
  EMIT(e, kEmbed);
  int64_t rows = 38, vocab = 53, d = 100, active = 77;
  std::vector<int32_t> tok = randomTokens(rows, vocab, 3);
  tok[4] = 0;
  tok[5] = vocab - 1;
  std::vector<float> table = randomVector<float>(vocab * d, 4),
                     mask = prefixMask<float>(d, active, 5);
  std::vector<float> got(rows * d, -1.0f), want(rows * d);
  KernelSource k = withStatusReader(*e, got.size() * 4);
  run(*e, {tok.data(), table.data(), mask.data()}, {got.data()}, &k);
  ASSERT_EQ(cpu::embedForward<float>(tok.data(), rows, table.data(), vocab, d, mask.data(), active,
                                     want.data()),
            -1);
  EXPECT_EQ(statusOf(got), 0u) << "every token is in range";
  got.resize(got.size() - 2); // the status word
  want.resize(want.size() - 2);
  EXPECT_EQ(maxRelativeError(got, want), 0.0) << "a gather times the mask is exact";
  EXPECT_EQ(got[3 * d + active], 0.0f) << "outside the active prefix";
}

TEST(CudaRowsTest, EmbedNamesTheFirstOutOfRangeToken) {
  EMIT(e, kEmbed);
  int64_t rows = 38, vocab = 53, d = 100;
  std::vector<int32_t> tok = randomTokens(rows, vocab, 6);
  tok[9] = -3;
  tok[7] = int32_t(vocab); // the first bad row
  tok[30] = 1000;
  std::vector<float> table = randomVector<float>(vocab * d, 7), mask = prefixMask<float>(d, 90, 8);
  std::vector<float> got(rows * d, -1.0f);
  KernelSource k = withStatusReader(*e, got.size() * 4);
  run(*e, {tok.data(), table.data(), mask.data()}, {got.data()}, &k);
  uint64_t status = statusOf(got);
  ASSERT_NE(status, 0u);
  EXPECT_EQ(int64_t(rows - int64_t(status >> 32)), 7) << "the row";
  EXPECT_EQ(int32_t(uint32_t(status & 0xffffffffu)), int32_t(vocab)) << "the token";
  EXPECT_EQ(cpu::embedForward<float>(tok.data(), rows, table.data(), vocab, d, mask.data(), 90,
                                     got.data()),
            7);
}

TEST(CudaRowsTest, UnmaskedEmbedOfAnOddWidthMatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%t: tensor<3x7xi32>, %w: tensor<11x37xf64>) -> tensor<3x7x37xf64> {
  %y = kernel.embed %t, %w : (tensor<3x7xi32>, tensor<11x37xf64>) -> tensor<3x7x37xf64>
  return %y : tensor<3x7x37xf64>
})");
  int64_t rows = 21, vocab = 11, d = 37;
  std::vector<int32_t> tok = randomTokens(rows, vocab, 9);
  std::vector<double> table = randomVector<double>(vocab * d, 10);
  std::vector<double> got(rows * d, -1.0), want(rows * d);
  run(*e, {tok.data(), table.data()}, {got.data()});
  cpu::embedForward<double>(tok.data(), rows, table.data(), vocab, d, nullptr, d, want.data());
  EXPECT_EQ(maxRelativeError(got, want), 0.0);
}

//===----------------------------------------------------------------------===//
// embed_grad
//===----------------------------------------------------------------------===//

TEST(CudaRowsTest, MaskedEmbedGradMatchesTheCpuKernel) {
  // Two vocabulary tiles (64 + 6 rows) and two column slices (1024 + 76), the second wholly
  // past the active prefix.
  EMIT(e, R"(
func.func @k(%t: tensor<1x37xi32>, %w: tensor<70x1100xf32>, %dy: tensor<1x37x1100xf32>, %m: tensor<1102xf32>) -> (tensor<70x1100xf32>, tensor<1102xf32>) {
  %dt, %dm = kernel.embed_grad %t, %w, %dy mask(%m : tensor<1102xf32>) {prefix_dense}
      : (tensor<1x37xi32>, tensor<70x1100xf32>, tensor<1x37x1100xf32>) -> tensor<70x1100xf32>, tensor<1102xf32>
  return %dt, %dm : tensor<70x1100xf32>, tensor<1102xf32>
})");
  expectPtx(*e, {"shfl.sync.up"});
  ASSERT_EQ(e->kernel.launches.size(), 2u);
  EXPECT_EQ(e->kernel.launches[0].grid.x, 2);
  EXPECT_EQ(e->kernel.launches[0].grid.y, 2);
  int64_t rows = 37, vocab = 70, d = 1100, active = 900;
  std::vector<int32_t> tok = randomTokens(rows, 20, 11); // repeats
  tok[0] = 69;
  tok[1] = 64;
  tok[2] = 69;
  tok[3] = 63;
  std::vector<float> table = randomVector<float>(vocab * d, 12);
  std::vector<float> dy = randomVector<float>(rows * d, 13);
  std::vector<float> mask = prefixMask<float>(d, active, 14);
  std::vector<float> gotT(vocab * d, -1.0f), gotM(d + 2, -1.0f), wantT(vocab * d), wantM(d + 2);
  run(*e, {tok.data(), table.data(), dy.data(), mask.data()}, {gotT.data(), gotM.data()});
  cpu::embedBackward<float>(tok.data(), rows, table.data(), vocab, d, mask.data(), active,
                            dy.data(), wantT.data(), wantM.data());
  // dTable sums in the CPU's order (row order per token), which may contract to fma.
  EXPECT_LE(maxScaledError(gotT, wantT), 1e-6);
  EXPECT_LE(maxScaledError(gotM, wantM), 1e-5);
  EXPECT_EQ(gotT[69 * d + active], 0.0f);
  EXPECT_EQ(gotT[50 * d], 0.0f) << "a token no row names";
  EXPECT_EQ(gotM[d + 1], 0.0f);
}

TEST(CudaRowsTest, EmbedGradOfManyRowsOfFewTokensMatchesTheCpuKernel) {
  // 2700 rows of 5 tokens: the list of one tile fills (1024 rows) and is summed in batches.
  EMIT(e, R"(
func.func @k(%t: tensor<3x900xi32>, %w: tensor<5x24xf64>, %dy: tensor<3x900x24xf64>, %m: tensor<26xf64>) -> (tensor<5x24xf64>, tensor<26xf64>) {
  %dt, %dm = kernel.embed_grad %t, %w, %dy mask(%m : tensor<26xf64>)
      : (tensor<3x900xi32>, tensor<5x24xf64>, tensor<3x900x24xf64>) -> tensor<5x24xf64>, tensor<26xf64>
  return %dt, %dm : tensor<5x24xf64>, tensor<26xf64>
})");
  int64_t rows = 2700, vocab = 5, d = 24;
  std::vector<int32_t> tok = randomTokens(rows, vocab, 15);
  std::vector<double> table = randomVector<double>(vocab * d, 16);
  std::vector<double> dy = randomVector<double>(rows * d, 17);
  std::vector<double> mask = prefixMask<double>(d, d, 18);
  std::vector<double> gotT(vocab * d, -1.0), gotM(d + 2, -1.0), wantT(vocab * d), wantM(d + 2);
  run(*e, {tok.data(), table.data(), dy.data(), mask.data()}, {gotT.data(), gotM.data()});
  cpu::embedBackward<double>(tok.data(), rows, table.data(), vocab, d, mask.data(), d, dy.data(),
                             wantT.data(), wantM.data());
  EXPECT_LE(maxScaledError(gotT, wantT), 1e-14);
  EXPECT_LE(maxScaledError(gotM, wantM), 1e-12);
}

//===----------------------------------------------------------------------===//
// rmsnorm_grad
//===----------------------------------------------------------------------===//

TEST(CudaRowsTest, MaskedRMSNormGradMatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%x: tensor<37x100xf32>, %w: tensor<100xf32>, %dy: tensor<37x100xf32>, %m: tensor<102xf32>) -> (tensor<37x100xf32>, tensor<100xf32>, tensor<102xf32>) {
  %dx, %dw, %dm = kernel.rmsnorm_grad %x, %w, %dy mask(%m : tensor<102xf32>) {epsilon = 1.0e-5 : f64, prefix_dense}
      : (tensor<37x100xf32>, tensor<100xf32>, tensor<37x100xf32>) -> tensor<37x100xf32>, tensor<100xf32>, tensor<102xf32>
  return %dx, %dw, %dm : tensor<37x100xf32>, tensor<100xf32>, tensor<102xf32>
})");
  expectPtx(*e, {"shfl.sync.bfly"});
  int64_t rows = 37, d = 100, active = 77;
  std::vector<float> x = randomVector<float>(rows * d, 21), w = randomVector<float>(d, 22);
  std::vector<float> dy = randomVector<float>(rows * d, 23),
                     mask = prefixMask<float>(d, active, 24);
  for (int64_t r = 0; r < rows; ++r) // the residual stream is zero past the active prefix
    std::fill(x.begin() + r * d + active, x.begin() + (r + 1) * d, 0.0f);
  std::vector<float> gx(rows * d, -1), gw(d, -1), gm(d + 2, -1);
  std::vector<float> wx(rows * d), ww(d), wm(d + 2);
  run(*e, {x.data(), w.data(), dy.data(), mask.data()}, {gx.data(), gw.data(), gm.data()});
  cpu::rmsnormBackward<float>(x.data(), rows, d, w.data(), 1e-5, mask.data(), active, dy.data(),
                              wx.data(), ww.data(), wm.data());
  EXPECT_LE(maxScaledError(gx, wx), 1e-5);
  EXPECT_LE(maxScaledError(gw, ww), 1e-5);
  std::vector<float> gmv(gm.begin(), gm.begin() + d), wmv(wm.begin(), wm.begin() + d);
  EXPECT_LE(maxScaledError(gmv, wmv), 1e-5) << "dm";
  // dphi sums -eps/2 inv^3 gx over rows: terms of about 5e-5 of either sign, 2e-6 in all.
  EXPECT_NEAR(gm[d], wm[d], 1e-9) << "dphi";
  EXPECT_NEAR(gm[d + 1], wm[d + 1], 1e-5 * std::abs(wm[d + 1])) << "dsigma";
  EXPECT_EQ(gx[2 * d + active], 0.0f);
  EXPECT_EQ(gw[active], 0.0f);
  EXPECT_NE(gm[d], 0.0f) << "dphi";
}

TEST(CudaRowsTest, UnmaskedRMSNormGradInFloat64MatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%x: tensor<37x130xf64>, %w: tensor<130xf64>, %dy: tensor<37x130xf64>) -> (tensor<37x130xf64>, tensor<130xf64>) {
  %dx, %dw = kernel.rmsnorm_grad %x, %w, %dy {epsilon = 1.0e-6 : f64}
      : (tensor<37x130xf64>, tensor<130xf64>, tensor<37x130xf64>) -> tensor<37x130xf64>, tensor<130xf64>
  return %dx, %dw : tensor<37x130xf64>, tensor<130xf64>
})");
  expectPtx(*e, {"sqrt.rn.f64"});
  int64_t rows = 37, d = 130;
  std::vector<double> x = randomVector<double>(rows * d, 25), w = randomVector<double>(d, 26);
  std::vector<double> dy = randomVector<double>(rows * d, 27);
  std::vector<double> gx(rows * d, -1), gw(d, -1), wx(rows * d), ww(d);
  run(*e, {x.data(), w.data(), dy.data()}, {gx.data(), gw.data()});
  cpu::rmsnormBackward<double>(x.data(), rows, d, w.data(), 1e-6, nullptr, d, dy.data(), wx.data(),
                               ww.data(), nullptr);
  EXPECT_LE(maxScaledError(gx, wx), 1e-12);
  EXPECT_LE(maxScaledError(gw, ww), 1e-12);
}

//===----------------------------------------------------------------------===//
// mask, mask_grad
//===----------------------------------------------------------------------===//

// Heads-like: 12 entries of 4 channels in 2 groups of 6, 4 active per group.
constexpr const char *kHeadMask = R"(
func.func @k(%x: tensor<37x48xf32>, %m: tensor<14xf32>, %dy: tensor<37x48xf32>) -> (tensor<37x48xf32>, tensor<37x48xf32>, tensor<14xf32>) {
  %y = kernel.mask %x, %m {block = 4 : i64, groups = 2 : i64, prefix_dense} : tensor<37x48xf32>, tensor<14xf32>
  %dx, %dm = kernel.mask_grad %x, %m, %dy {block = 4 : i64, groups = 2 : i64, prefix_dense} : tensor<37x48xf32>, tensor<14xf32>
  return %y, %dx, %dm : tensor<37x48xf32>, tensor<37x48xf32>, tensor<14xf32>
})";

TEST(CudaRowsTest, GroupedBlockMaskMatchesTheCpuKernel) {
  EMIT(e, kHeadMask);
  expectPtx(*e, {"v4.f32"});
  int64_t rows = 37, width = 48, block = 4, entries = 12, groups = 2, active = 4;
  std::vector<float> x = randomVector<float>(rows * width, 31);
  std::vector<float> mask = prefixMask<float>(entries, active, 32, groups);
  mask[3] = -7.0f; // a value reaching the output (an active entry of group 0)
  std::vector<float> got(rows * width, -1), want(rows * width);
  run(*e, {x.data(), mask.data()}, {got.data()});
  cpu::maskForward<float>(x.data(), rows, width, block, mask.data(), groups, active, want.data());
  EXPECT_EQ(maxRelativeError(got, want), 0.0);
  EXPECT_EQ(got[5 * width + 4 * block], 0.0f) << "entry 4 is past the active prefix of group 0";
  EXPECT_NE(got[5 * width + 6 * block], 0.0f) << "entry 6 is the first of group 1";
}

TEST(CudaRowsTest, GroupedBlockMaskGradMatchesTheCpuKernel) {
  auto e = std::make_unique<Emitted>();
  e->module = test::parseKernelModule(e->ctx, kHeadMask);
  ASSERT_TRUE(e->module);
  e->module->walk([&](kernel::MaskGradOp g) { e->op = g; });
  ASSERT_TRUE(e->op);
  ASSERT_TRUE(succeeded(cast<kernel::CudaEmitOpInterface>(e->op).emitCuda(e->kernel)));
  ASSERT_EQ(e->kernel.launches.size(), 3u) << "rows, columns, entries";
  expectPtx(*e, {});
  int64_t rows = 37, width = 48, block = 4, entries = 12, groups = 2, active = 4;
  std::vector<float> x = randomVector<float>(rows * width, 33),
                     dy = randomVector<float>(rows * width, 34);
  std::vector<float> mask = prefixMask<float>(entries, active, 35, groups);
  std::vector<float> gx(rows * width, -1), gm(entries + 2, -1), wx(rows * width), wm(entries + 2);
  run(*e, {x.data(), mask.data(), dy.data()}, {gx.data(), gm.data()});
  cpu::maskBackward<float>(x.data(), dy.data(), rows, width, block, mask.data(), groups, active,
                           wx.data(), wm.data());
  EXPECT_EQ(maxRelativeError(gx, wx), 0.0);
  EXPECT_LE(maxScaledError(gm, wm), 1e-5);
  EXPECT_EQ(gm[5], 0.0f) << "an inactive entry";
  EXPECT_NE(gm[6], 0.0f);
}

TEST(CudaRowsTest, ChannelMaskGradInFloat64MatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%x: tensor<41x29xf64>, %m: tensor<31xf64>, %dy: tensor<41x29xf64>) -> (tensor<41x29xf64>, tensor<31xf64>) {
  %dx, %dm = kernel.mask_grad %x, %m, %dy : tensor<41x29xf64>, tensor<31xf64>
  return %dx, %dm : tensor<41x29xf64>, tensor<31xf64>
})");
  ASSERT_EQ(e->kernel.launches.size(), 2u) << "rows, columns";
  int64_t rows = 41, width = 29;
  std::vector<double> x = randomVector<double>(rows * width, 36),
                      dy = randomVector<double>(rows * width, 37);
  std::vector<double> mask = randomVector<double>(width + 2, 38);
  std::vector<double> gx(rows * width, -1), gm(width + 2, -1), wx(rows * width), wm(width + 2);
  run(*e, {x.data(), mask.data(), dy.data()}, {gx.data(), gm.data()});
  cpu::maskBackward<double>(x.data(), dy.data(), rows, width, 1, mask.data(), 1, width, wx.data(),
                            wm.data());
  EXPECT_EQ(maxRelativeError(gx, wx), 0.0);
  EXPECT_LE(maxScaledError(gm, wm), 1e-12);
}

/// The diagnostic emitCuda gives for the first kernel op of `ir` (empty when it succeeds).
std::string refusal(llvm::StringRef ir) {
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, ir);
  if (!module)
    return "parse error";
  std::string message;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  KernelSource k;
  if (succeeded(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*module)).emitCuda(k)))
    return "";
  return message.empty() ? "failed without a diagnostic" : message;
}

TEST(CudaRowsTest, ConfigurationsTheEmittersRefuse) {
  EXPECT_NE(refusal(R"(
func.func @k(%x: tensor<3x8xf32>, %m: tensor<10xf32>) -> tensor<3x8xf32> {
  %y = kernel.mask %x, %m {block = 2 : i64} : tensor<3x8xf32>, tensor<10xf32>
  return %y : tensor<3x8xf32>
})")
                .find("expected 6 (width / block + 2)"),
            std::string::npos);
  EXPECT_NE(refusal(R"(
func.func @k(%x: tensor<3x8xf32>, %m: tensor<6xf32>) -> tensor<3x8xf32> {
  %y = kernel.mask %x, %m {block = 2 : i64, groups = 3 : i64} : tensor<3x8xf32>, tensor<6xf32>
  return %y : tensor<3x8xf32>
})")
                .find("groups 3 do not divide 4 entries"),
            std::string::npos);
  EXPECT_NE(refusal(R"(
func.func @k(%h: tensor<3x8xf32>, %b: tensor<3x8xf32>, %keep: tensor<2xf32>) -> tensor<3x8xf32> {
  %y = kernel.depth_gate %h, %b keep(%keep : tensor<2xf32>) {layer = 2 : i64} : tensor<3x8xf32>
  return %y : tensor<3x8xf32>
})")
                .find("layer 2 is outside keep's 2 entries"),
            std::string::npos);
  EXPECT_NE(refusal(R"(
func.func @k(%t: tensor<65536x32768xi32>, %w: tensor<11x8xf32>) -> tensor<65536x32768x8xf32> {
  %y = kernel.embed %t, %w : (tensor<65536x32768xi32>, tensor<11x8xf32>) -> tensor<65536x32768x8xf32>
  return %y : tensor<65536x32768x8xf32>
})")
                .find("at most 2^31-1 tokens"),
            std::string::npos);
}

//===----------------------------------------------------------------------===//
// relu2, relu2_grad
//===----------------------------------------------------------------------===//

TEST(CudaRowsTest, MaskedRelu2MatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%u: tensor<37x100xf32>, %m: tensor<102xf32>) -> tensor<37x100xf32> {
  %a = kernel.relu2 %u mask(%m : tensor<102xf32>) {prefix_dense} : tensor<37x100xf32> -> tensor<37x100xf32>
  return %a : tensor<37x100xf32>
})");
  expectPtx(*e, {"v4.f32"});
  int64_t rows = 37, f = 100, active = 61;
  std::vector<float> u = randomVector<float>(rows * f, 41), mask = prefixMask<float>(f, active, 42);
  std::vector<float> got(rows * f, -1), want(rows * f);
  run(*e, {u.data(), mask.data()}, {got.data()});
  cpu::relu2Forward<float>(u.data(), rows, f, mask.data(), active, want.data());
  EXPECT_EQ(maxRelativeError(got, want), 0.0);
}

TEST(CudaRowsTest, MaskedRelu2GradMatchesTheCpuKernel) {
  // Two column slices (1024 + 76 columns), the active prefix ending in the second.
  EMIT(e, R"(
func.func @k(%u: tensor<37x1100xf32>, %da: tensor<37x1100xf32>, %m: tensor<1102xf32>) -> (tensor<37x1100xf32>, tensor<1102xf32>) {
  %du, %dm = kernel.relu2_grad %u, %da mask(%m : tensor<1102xf32>) {prefix_dense} : tensor<37x1100xf32> -> tensor<1102xf32>
  return %du, %dm : tensor<37x1100xf32>, tensor<1102xf32>
})");
  expectPtx(*e, {});
  ASSERT_EQ(e->kernel.launches.size(), 2u) << "rows, columns";
  EXPECT_EQ(e->kernel.launches[0].grid.y, 2);
  int64_t rows = 37, f = 1100, active = 1030;
  std::vector<float> u = randomVector<float>(rows * f, 43), da = randomVector<float>(rows * f, 44);
  std::vector<float> mask = prefixMask<float>(f, active, 45);
  std::vector<float> gu(rows * f, -1), gm(f + 2, -1), wu(rows * f), wm(f + 2);
  run(*e, {u.data(), da.data(), mask.data()}, {gu.data(), gm.data()});
  cpu::relu2Backward<float>(u.data(), rows, f, mask.data(), active, da.data(), wu.data(),
                            wm.data());
  EXPECT_EQ(maxRelativeError(gu, wu), 0.0);
  EXPECT_LE(maxScaledError(gm, wm), 1e-5);
  EXPECT_EQ(gm[active], 0.0f);
  EXPECT_NE(gm[active - 1], 0.0f);
  EXPECT_EQ(gu[3 * f + active], 0.0f);
}

TEST(CudaRowsTest, UnmaskedRelu2GradOfAnOddWidthMatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%u: tensor<37x75xf32>, %da: tensor<37x75xf32>) -> tensor<37x75xf32> {
  %du = kernel.relu2_grad %u, %da : tensor<37x75xf32>
  return %du : tensor<37x75xf32>
})");
  ASSERT_EQ(e->kernel.launches.size(), 1u) << "elementwise without a mask cotangent";
  expectPtx(*e, {});
  int64_t rows = 37, f = 75;
  std::vector<float> u = randomVector<float>(rows * f, 46), da = randomVector<float>(rows * f, 47);
  std::vector<float> got(rows * f, -1), want(rows * f);
  run(*e, {u.data(), da.data()}, {got.data()});
  cpu::relu2Backward<float>(u.data(), rows, f, nullptr, f, da.data(), want.data(), nullptr);
  EXPECT_EQ(maxRelativeError(got, want), 0.0);
}

//===----------------------------------------------------------------------===//
// depth_gate, depth_gate_grad
//===----------------------------------------------------------------------===//

TEST(CudaRowsTest, DepthGateReadsKeepOfItsLayer) {
  EMIT(e, R"(
func.func @k(%h: tensor<37x100xf32>, %b: tensor<37x100xf32>, %keep: tensor<5xf32>) -> tensor<37x100xf32> {
  %y = kernel.depth_gate %h, %b keep(%keep : tensor<5xf32>) {layer = 2 : i64} : tensor<37x100xf32>
  return %y : tensor<37x100xf32>
})");
  expectPtx(*e, {"v4.f32"});
  int64_t n = 3700;
  std::vector<float> h = randomVector<float>(n, 51), b = randomVector<float>(n, 52);
  std::vector<float> keep = {0.1f, 0.2f, 0.625f, 0.4f, 0.5f};
  std::vector<float> got(n, -1), want(n);
  run(*e, {h.data(), b.data(), keep.data()}, {got.data()});
  cpu::depthGateForward<float>(h.data(), b.data(), n, 0.625f, want.data());
  EXPECT_LE(maxScaledError(got, want), 1e-6) << "h + gamma * b, perhaps as one fma";
}

TEST(CudaRowsTest, DepthGateGradInFloat64MatchesTheCpuKernel) {
  // 999 elements: 499 packs of two doubles and a tail element.
  EMIT(e, R"(
func.func @k(%b: tensor<3x333xf64>, %dy: tensor<3x333xf64>, %keep: tensor<4xf64>) -> (tensor<3x333xf64>, tensor<4xf64>) {
  %db, %dk = kernel.depth_gate_grad %b, %dy keep(%keep : tensor<4xf64>) {layer = 3 : i64} : tensor<3x333xf64> -> tensor<4xf64>
  return %db, %dk : tensor<3x333xf64>, tensor<4xf64>
})");
  expectPtx(*e, {"v2.f64", "shfl.sync.bfly"});
  int64_t n = 999;
  std::vector<double> b = randomVector<double>(n, 53), dy = randomVector<double>(n, 54);
  std::vector<double> keep = {0.5, 0.25, 0.125, 0.75};
  std::vector<double> gb(n, -1), gk(4, -1), wb(n);
  double dgamma = 0;
  run(*e, {b.data(), dy.data(), keep.data()}, {gb.data(), gk.data()});
  cpu::depthGateBackward<double>(b.data(), dy.data(), n, 0.75, wb.data(), &dgamma);
  EXPECT_EQ(maxRelativeError(gb, wb), 0.0);
  EXPECT_NEAR(gk[3], dgamma, 1e-12 * std::abs(dgamma) + 1e-13);
  EXPECT_EQ(gk[0], 0.0);
  EXPECT_EQ(gk[2], 0.0);
}

//===----------------------------------------------------------------------===//
// add, mul
//===----------------------------------------------------------------------===//

constexpr const char *kAdd3 = R"(
func.func @k(%a: tensor<7x143xf32>, %b: tensor<7x143xf32>, %c: tensor<7x143xf32>) -> tensor<7x143xf32> {
  %s = kernel.add %a, %b, %c : tensor<7x143xf32>
  return %s : tensor<7x143xf32>
})";

TEST(CudaRowsTest, AddOfThreeInOnePassMatchesTheCpuOrder) {
  EMIT(e, kAdd3);
  expectPtx(*e, {"v4.f32"});
  int64_t n = 7 * 143; // 1001: 250 packs and a tail
  std::vector<float> a = randomVector<float>(n, 61), b = randomVector<float>(n, 62);
  std::vector<float> c = randomVector<float>(n, 63);
  std::vector<float> got(n, -1), want(n);
  run(*e, {a.data(), b.data(), c.data()}, {got.data()});
  cpu::add<float>(a.data(), b.data(), n, want.data());
  cpu::add<float>(want.data(), c.data(), n, want.data());
  EXPECT_EQ(maxRelativeError(got, want), 0.0);
}

TEST(CudaRowsTest, AddOfMisalignedBuffersTakesTheScalarPath) {
  EMIT(e, kAdd3);
  int64_t n = 7 * 143;
  // One float past a 16-byte boundary: the vector path is off, the packs the same.
  std::vector<float> a = randomVector<float>(n + 1, 64), b = randomVector<float>(n + 1, 65);
  std::vector<float> c = randomVector<float>(n + 1, 66), got(n + 1, -1), want(n);
  run(*e, {a.data() + 1, b.data() + 1, c.data() + 1}, {got.data() + 1});
  cpu::add<float>(a.data() + 1, b.data() + 1, n, want.data());
  cpu::add<float>(want.data(), c.data() + 1, n, want.data());
  EXPECT_EQ(maxRelativeError(std::vector<float>(got.begin() + 1, got.end()), want), 0.0);
  EXPECT_EQ(got[0], -1.0f);
}

TEST(CudaRowsTest, MulMatchesTheCpuKernel) {
  EMIT(e, R"(
func.func @k(%a: tensor<5x61xf64>, %b: tensor<5x61xf64>) -> tensor<5x61xf64> {
  %p = kernel.mul %a, %b : tensor<5x61xf64>
  return %p : tensor<5x61xf64>
})");
  expectPtx(*e, {"v2.f64"});
  int64_t n = 305;
  std::vector<double> a = randomVector<double>(n, 67), b = randomVector<double>(n, 68);
  std::vector<double> got(n, -1), want(n);
  run(*e, {a.data(), b.data()}, {got.data()});
  for (int64_t i = 0; i < n; ++i)
    want[i] = a[i] * b[i];
  EXPECT_EQ(maxRelativeError(got, want), 0.0);
}

} // namespace
