//===- CudaGemmTest.cpp - The emitted kernel.gemm, compiled and run ----------===//
//
// The CUDA GEMM (lib/codegen/cuda/emit/Gemm.cpp) compiled with NVRTC for sm_80 and sm_90 (its
// PTX checked) and run on the host under the CUDA emulation, at sizes no tile divides, against
// two references: a float64 loop written from the op's description, and a transcription of
// the CPU executor's gemm step (runtime/Executor.cpp: runs of the prefix-dense extents, one
// cpu::gemm per run, the mask epilogue through cpu::maskForward).
//
//===----------------------------------------------------------------------===//
#include "test/unit/cuda/HostRun.h"

#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

namespace {

/// A prefix-dense extent mask: `entries` entries in `groups` groups, the first `active` of
/// every group nonzero (entries = 0: none).
struct Extent {
  int64_t entries = 0, groups = 1, active = 0;
};

/// One kernel.gemm configuration.
struct Spec {
  std::string elem = "f32";
  std::vector<int64_t> a, b, c; // operand and result shapes
  bool ta = false, tb = false, acc = false;
  int64_t maskBlock = 0; // 0: no mask epilogue
  Extent m, n, k;
  std::string extra;    // more attributes, e.g. the tile override
  int64_t misalign = 0; // elements by which every buffer is offset (vector-load fallback)
};

std::string shape(const std::vector<int64_t> &s, const std::string &elem) {
  std::ostringstream os;
  os << "tensor<";
  for (int64_t d : s)
    os << d << "x";
  os << elem << ">";
  return os.str();
}

std::string vectorType(int64_t n, const std::string &elem) { return shape({n}, elem); }

std::string gemmIR(const Spec &s) {
  std::string A = shape(s.a, s.elem), B = shape(s.b, s.elem), C = shape(s.c, s.elem);
  std::ostringstream args, uses, attrs;
  args << "%a: " << A << ", %b: " << B;
  if (s.acc) {
    args << ", %acc: " << C;
    uses << " acc(%acc : " << C << ")";
  }
  int64_t n = s.c.back();
  if (s.maskBlock) {
    std::string M = vectorType(n / s.maskBlock + 2, s.elem);
    args << ", %mask: " << M;
    uses << " mask(%mask : " << M << ")";
  }
  std::vector<std::string> list;
  if (s.ta)
    list.push_back("transpose_a");
  if (s.tb)
    list.push_back("transpose_b");
  if (s.maskBlock)
    list.push_back("mask_block = " + std::to_string(s.maskBlock));
  for (auto [name, e] :
       {std::pair<const char *, const Extent *>{"m", &s.m}, {"n", &s.n}, {"k", &s.k}})
    if (e->entries) {
      std::string V = vectorType(e->entries + 2, s.elem);
      args << ", %" << name << "e: " << V;
      uses << " " << name << "_extent(%" << name << "e : " << V << ")";
      if (e->groups != 1)
        list.push_back(std::string(name) + "_groups = " + std::to_string(e->groups));
    }
  if (!s.extra.empty())
    list.push_back(s.extra);
  if (!list.empty()) {
    attrs << " {";
    for (size_t i = 0; i < list.size(); ++i)
      attrs << (i ? ", " : "") << list[i];
    attrs << "}";
  }
  std::ostringstream os;
  os << "func.func @k(" << args.str() << ") -> " << C << " {\n"
     << "  %y = kernel.gemm %a, %b" << uses.str() << attrs.str() << " : (" << A << ", " << B
     << ") -> " << C << "\n"
     << "  return %y : " << C << "\n}\n";
  return os.str();
}

int64_t product(const std::vector<int64_t> &s) {
  int64_t p = 1;
  for (int64_t d : s)
    p *= d;
  return p;
}

using nestor::cuda::test::randomVector;

template <typename T> std::vector<T> extentMask(const Extent &e) {
  std::vector<T> m(e.entries + 2, T(0));
  int64_t per = e.entries / e.groups;
  for (int64_t i = 0; i < e.entries; ++i)
    m[i] = i % per < e.active ? T(0.75) : T(0);
  m[e.entries] = T(double(e.active) / per);
  m[e.entries + 1] = T(std::sqrt(double(e.active) / per));
  return m;
}

/// Whether index i of a dimension of `size` lies in an active run of extent `e`.
bool activeAt(const Extent &e, int64_t size, int64_t i) {
  if (!e.entries)
    return true;
  int64_t per = e.entries / e.groups, block = size / e.entries;
  return i % (per * block) < e.active * block;
}

/// The runs of Executor.cpp's Extent::runs().
std::vector<std::pair<int64_t, int64_t>> runsOf(const Extent &e, int64_t size) {
  if (!e.entries)
    return {{0, size}};
  int64_t per = e.entries / e.groups, block = size / e.entries;
  std::vector<std::pair<int64_t, int64_t>> out;
  if (e.active > 0)
    for (int64_t g = 0; g < e.groups; ++g)
      out.push_back({g * per * block, e.active * block});
  return out;
}

struct Outcome {
  size_t launches = 0;
};

/// Emits, runs on the host and checks `s` against both references.
template <typename T> Outcome check(const Spec &s, double tol) {
  Outcome outcome;
  MLIRContext ctx;
  std::string ir = gemmIR(s);
  SCOPED_TRACE(ir);
  auto module = test::parseKernelModule(ctx, ir);
  EXPECT_TRUE(module);
  if (!module)
    return outcome;
  Operation *op = test::firstKernelOp(*module);
  KernelSource kernel;
  EXPECT_TRUE(succeeded(cast<kernel::CudaEmitOpInterface>(op).emitCuda(kernel)));
  outcome.launches = kernel.launches.size();

  int64_t ar = product(s.a) / s.a.back(), ac = s.a.back();
  int64_t br = product(s.b) / s.b.back(), bc = s.b.back();
  int64_t m = s.ta ? ac : ar, k = s.ta ? ar : ac, n = s.tb ? br : bc;
  EXPECT_EQ(m * n, product(s.c));

  // Inputs, each in a buffer offset by `misalign` elements.
  std::vector<std::vector<T>> storage;
  std::vector<const T *> inputs;
  auto add = [&](std::vector<T> v) {
    std::vector<T> buf(v.size() + s.misalign + 1, T(0));
    std::copy(v.begin(), v.end(), buf.begin() + s.misalign);
    storage.push_back(std::move(buf));
    inputs.push_back(storage.back().data() + s.misalign);
  };
  storage.reserve(8);
  add(randomVector<T>(ar * ac, 11));
  add(randomVector<T>(br * bc, 12));
  const T *A = inputs[0], *B = inputs[1], *Acc = nullptr, *Mask = nullptr;
  if (s.acc) {
    add(randomVector<T>(m * n, 13));
    Acc = inputs.back();
  }
  if (s.maskBlock) {
    std::vector<T> mask = randomVector<T>(n / s.maskBlock + 2, 14);
    for (size_t i = 0; i + 2 < mask.size(); ++i)
      mask[i] = i % 4 == 3 ? T(0) : T(0.5) + std::abs(mask[i]);
    add(mask);
    Mask = inputs.back();
  }
  for (const Extent *e : {&s.m, &s.n, &s.k})
    if (e->entries)
      add(extentMask<T>(*e));

  std::vector<T> gotStore(m * n + s.misalign + 1, T(NAN));
  T *got = gotStore.data() + s.misalign;
  std::vector<const void *> operands(inputs.begin(), inputs.end());
  llvm::Error err = test::runOnHost(op, kernel, operands, {got});
  EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));

  auto at = [&](const T *x, bool trans, int64_t ld, int64_t i, int64_t j) {
    return double(trans ? x[j * ld + i] : x[i * ld + j]);
  };
  // Reference 1: float64, from the op's description.
  std::vector<double> want(m * n), scale(m * n);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double v = Acc ? double(Acc[r * n + c]) : 0.0, mag = std::abs(v);
      if (activeAt(s.m, m, r) && activeAt(s.n, n, c))
        for (int64_t q = 0; q < k; ++q)
          if (activeAt(s.k, k, q)) {
            double p = at(A, s.ta, ac, r, q) * at(B, s.tb, bc, q, c);
            v += p;
            mag += std::abs(p);
          }
      double w = Mask ? double(Mask[c / s.maskBlock]) : 1.0;
      want[r * n + c] = v * w;
      scale[r * n + c] = mag * std::abs(w);
    }
  // Reference 2: the CPU executor's step.
  std::vector<T> cpu(m * n);
  {
    auto rm = runsOf(s.m, m), rn = runsOf(s.n, n), rk = runsOf(s.k, k);
    bool restricted = rm.size() != 1 || rn.size() != 1 || rm[0].second != m || rn[0].second != n;
    if (Acc)
      std::memcpy(cpu.data(), Acc, sizeof(T) * m * n);
    else if (restricted)
      std::fill(cpu.begin(), cpu.end(), T(0));
    for (auto [m0, ml] : rm)
      for (auto [n0, nl] : rn) {
        bool first = !Acc;
        for (auto [k0, kl] : rk) {
          const T *sa = s.ta ? A + k0 * ac + m0 : A + m0 * ac + k0;
          const T *sb = s.tb ? B + n0 * bc + k0 : B + k0 * bc + n0;
          cpu::gemm<T>(s.ta, s.tb, ml, nl, kl, T(1), sa, ac, sb, bc, first ? T(0) : T(1),
                       cpu.data() + m0 * n + n0, n);
          first = false;
        }
        if (rk.empty() && !Acc)
          for (int64_t i = 0; i < ml; ++i)
            std::fill_n(cpu.data() + (m0 + i) * n + n0, nl, T(0));
      }
    if (Mask)
      cpu::maskForward<T>(cpu.data(), m, n, s.maskBlock, Mask, 1, n / s.maskBlock, cpu.data());
  }
  double worst = 0, worstCpu = 0;
  int64_t bad = -1;
  for (int64_t i = 0; i < m * n; ++i) {
    double denom = scale[i] + 1e-30;
    double e1 = std::abs(double(got[i]) - want[i]) / denom;
    double e2 = std::abs(double(got[i]) - double(cpu[i])) / denom;
    if (std::isnan(double(got[i])))
      e1 = e2 = INFINITY;
    if (e1 > worst && bad < 0 && e1 > tol)
      bad = i;
    worst = std::max(worst, e1);
    worstCpu = std::max(worstCpu, e2);
  }
  EXPECT_LE(worst, tol) << "vs the float64 loop; first bad entry (" << (bad < 0 ? 0 : bad / n)
                        << ", " << (bad < 0 ? 0 : bad % n) << "): got "
                        << (bad < 0 ? 0.0 : double(got[bad])) << " want "
                        << (bad < 0 ? 0.0 : want[bad]);
  EXPECT_LE(worstCpu, tol) << "vs the CPU executor's gemm step";
  // Outside the active M x N the result is acc (times the mask) or exactly 0.
  if (!Acc)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c)
        if (!activeAt(s.m, m, r) || !activeAt(s.n, n, c) || (s.k.entries && !s.k.active))
          if (got[r * n + c] != T(0)) {
            ADD_FAILURE() << "entry (" << r << ", " << c << ") outside the active extent is "
                          << got[r * n + c];
            return outcome;
          }
  return outcome;
}

constexpr double kF32 = 1e-5, kF64 = 1e-12;

Spec plain(int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  Spec s;
  s.ta = ta;
  s.tb = tb;
  s.a = ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k};
  s.b = tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n};
  s.c = {m, n};
  return s;
}

//===----------------------------------------------------------------------===//
// PTX
//===----------------------------------------------------------------------===//

void expectPtx(const Spec &s, const std::vector<std::string> &entries, const char *fma) {
  MLIRContext ctx;
  std::string ir = gemmIR(s);
  SCOPED_TRACE(ir);
  auto module = test::parseKernelModule(ctx, ir);
  ASSERT_TRUE(module);
  for (const char *arch : {"sm_80", "sm_90"}) {
    auto ptx = test::compileToPtx(test::firstKernelOp(*module), arch);
    ASSERT_TRUE(static_cast<bool>(ptx)) << llvm::toString(ptx.takeError());
    EXPECT_NE(ptx->find(std::string(".target ") + arch), std::string::npos);
    for (const std::string &e : entries)
      EXPECT_NE(ptx->find(".visible .entry " + e + "("), std::string::npos) << e;
    EXPECT_NE(ptx->find("ld.shared"), std::string::npos) << "the shared-memory tiles";
    EXPECT_NE(ptx->find(fma), std::string::npos) << "the exact fma path";
    EXPECT_NE(ptx->find("bar.sync"), std::string::npos);
  }
}

TEST(CudaGemmTest, CompilesForSm80AndSm90) {
  Spec s = plain(37, 45, 53, false, true);
  s.acc = true;
  s.maskBlock = 5;
  s.k = {53, 1, 40};
  expectPtx(s, {"gemm"}, "fma.rn.f32");
}

TEST(CudaGemmTest, LargeTileAndVectorLoadsCompile) {
  Spec s = plain(4096, 4096, 512, false, false); // 128 x 128 tiles
  expectPtx(s, {"gemm"}, "fma.rn.f32");
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, gemmIR(s));
  ASSERT_TRUE(module);
  auto ptx = test::compileToPtx(test::firstKernelOp(*module), "sm_90");
  ASSERT_TRUE(static_cast<bool>(ptx)) << llvm::toString(ptx.takeError());
  EXPECT_NE(ptx->find("ld.shared.v4.f32"), std::string::npos) << "float4 shared reads";
  EXPECT_TRUE(ptx->find("ld.global.nc.v4.f32") != std::string::npos ||
              ptx->find("ld.global.v4.f32") != std::string::npos)
      << "float4 global loads";
}

TEST(CudaGemmTest, SplitKAndFloat64Compile) {
  Spec s = plain(5, 100, 1000, true, false);
  s.m = {5, 1, 3};
  s.maskBlock = 10;
  expectPtx(s, {"gemm_partial", "gemm_reduce"}, "fma.rn.f32");
  Spec d = plain(37, 45, 53, true, true);
  d.elem = "f64";
  d.acc = true;
  expectPtx(d, {"gemm"}, "fma.rn.f64");
}

//===----------------------------------------------------------------------===//
// Values
//===----------------------------------------------------------------------===//

TEST(CudaGemmTest, NoTransposeMatchesTheCpu) {
  EXPECT_EQ(check<float>(plain(37, 45, 53, false, false), kF32).launches, 1u);
}

TEST(CudaGemmTest, TransposeBMatchesTheCpu) { check<float>(plain(37, 45, 53, false, true), kF32); }

TEST(CudaGemmTest, TransposeAMatchesTheCpu) { check<float>(plain(37, 45, 53, true, false), kF32); }

TEST(CudaGemmTest, TransposeBothMatchesTheCpu) {
  check<float>(plain(37, 45, 53, true, true), kF32);
}

TEST(CudaGemmTest, AccAndBlockMaskEpilogue) {
  Spec s = plain(37, 45, 53, false, true);
  s.acc = true;
  s.maskBlock = 5; // 9 entries, 5 columns each
  check<float>(s, kF32);
}

TEST(CudaGemmTest, ThreeDimensionalViews) {
  // A [3, 7, 53] is the matrix [21, 53]; the result [3, 7, 45] the matrix [21, 45].
  Spec s;
  s.a = {3, 7, 53};
  s.b = {53, 45};
  s.c = {3, 7, 45};
  s.maskBlock = 3;
  check<float>(s, kF32);
  // Transposed: A [3, 11, 37] is [33, 37], so M = 37 and K = 33.
  Spec t;
  t.ta = true;
  t.a = {3, 11, 37};
  t.b = {45, 33};
  t.tb = true;
  t.c = {37, 45};
  t.acc = true;
  check<float>(t, kF32);
}

TEST(CudaGemmTest, MExtent) {
  Spec s = plain(37, 45, 53, false, false);
  s.m = {37, 1, 23};
  check<float>(s, kF32);
  Spec g = plain(38, 45, 53, true, false);
  g.m = {38, 2, 11}; // runs [0, 11) and [19, 30)
  g.acc = true;
  check<float>(g, kF32);
}

TEST(CudaGemmTest, NExtentGrouped) {
  Spec s = plain(37, 50, 53, false, true);
  s.n = {10, 2, 3}; // 5 columns an entry: runs [0, 15) and [25, 40)
  s.maskBlock = 5;
  check<float>(s, kF32);
}

TEST(CudaGemmTest, KExtentGrouped) {
  Spec s = plain(37, 45, 54, false, false);
  s.k = {18, 2, 5}; // 3 indices an entry: runs [0, 15) and [27, 42)
  check<float>(s, kF32);
  Spec t = plain(37, 45, 54, true, true);
  t.k = {54, 1, 41};
  t.acc = true;
  check<float>(t, kF32);
}

TEST(CudaGemmTest, AllExtentsWithAccAndMask) {
  Spec s;
  s.ta = true;
  s.a = {2, 27, 38}; // [54, 38]: K = 54, M = 38
  s.b = {54, 50};
  s.c = {38, 50};
  s.acc = true;
  s.maskBlock = 5;
  s.m = {38, 2, 13};
  s.n = {10, 2, 4};
  s.k = {18, 2, 7};
  check<float>(s, kF32);
}

TEST(CudaGemmTest, EmptyExtents) {
  Spec s = plain(37, 45, 53, false, false);
  s.k = {53, 1, 0}; // nothing in K: the result is acc times the mask
  s.acc = true;
  s.maskBlock = 9;
  check<float>(s, kF32);
  Spec z = plain(37, 45, 53, true, false);
  z.m = {37, 1, 0}; // no active row: zeros
  check<float>(z, kF32);
}

TEST(CudaGemmTest, AlignedSizesUseVectorLoads) {
  // A [M, K] and B [K, N] both load float4s: A along K within the runs [0, 20) and [28, 48).
  Spec s = plain(36, 44, 56, false, false);
  s.acc = true;
  s.k = {14, 2, 5};
  check<float>(s, kF32);
  Spec t = plain(36, 44, 52, true, true);
  t.maskBlock = 4;
  check<float>(t, kF32);
  // The same with every buffer one element off 16-byte alignment: the scalar fallback.
  t.misalign = 1;
  t.acc = true;
  check<float>(t, kF32);
}

TEST(CudaGemmTest, OtherTiles) {
  Spec s = plain(130, 131, 20, false, true);
  s.extra = "cuda.gemm_tile = \"128x128\"";
  s.acc = true;
  check<float>(s, kF32);
  Spec t = plain(37, 45, 53, true, false);
  t.extra = "cuda.gemm_tile = \"128x64\"";
  t.n = {45, 1, 30};
  check<float>(t, kF32);
  Spec u = plain(37, 45, 53, false, false);
  u.extra = "cuda.gemm_tile = \"16x64\"";
  u.m = {37, 1, 20};
  check<float>(u, kF32);
  // Row tiles [16, 32) (starting in a gap, reaching the second run) and [32, 40) (none).
  Spec v = plain(40, 45, 53, true, true);
  v.extra = "cuda.gemm_tile = \"16x64\"";
  v.m = {40, 2, 5}; // runs [0, 5) and [20, 25)
  v.acc = true;
  v.maskBlock = 3;
  check<float>(v, kF32);
}

TEST(CudaGemmTest, SplitKForFewTiles) {
  // Five rows: one 16 x 128 tile, so K is split over slices summed by a second launch.
  Spec s = plain(5, 45, 700, false, true);
  s.acc = true;
  s.maskBlock = 5;
  s.k = {70, 2, 29}; // 10 indices an entry: runs [0, 290) and [350, 640)
  s.n = {9, 1, 7};
  EXPECT_EQ(check<float>(s, kF32).launches, 2u);
  Spec t = plain(5, 45, 300, true, false);
  EXPECT_EQ(check<float>(t, kF32).launches, 2u);
}

TEST(CudaGemmTest, Float64) {
  Spec s = plain(37, 45, 53, true, false);
  s.elem = "f64";
  s.acc = true;
  s.maskBlock = 5;
  s.k = {53, 1, 31};
  s.m = {37, 1, 30};
  check<double>(s, kF64);
  Spec t = plain(36, 44, 52, false, true);
  t.elem = "f64";
  t.extra = "cuda.gemm_split = 3";
  t.n = {22, 2, 8};
  EXPECT_EQ(check<double>(t, kF64).launches, 2u);
}

TEST(CudaGemmTest, RefusedConfigurations) {
  const char *ir = R"(
func.func @k(%a: tensor<4x8xf32>, %b: tensor<8x6xf32>, %m: tensor<8xf64>) -> tensor<4x6xf32> {
  %y = kernel.gemm %a, %b mask(%m : tensor<8xf64>) : (tensor<4x8xf32>, tensor<8x6xf32>) -> tensor<4x6xf32>
  return %y : tensor<4x6xf32>
})";
  MLIRContext ctx;
  auto module = test::parseKernelModule(ctx, ir);
  ASSERT_TRUE(module);
  std::string message;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  KernelSource k;
  EXPECT_TRUE(failed(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*module)).emitCuda(k)));
  EXPECT_NE(message.find("element type"), std::string::npos) << message;

  Spec s = plain(8, 8, 8, false, false);
  s.extra = "cuda.gemm_tile = \"32x32\"";
  MLIRContext other;
  ScopedDiagnosticHandler otherHandler(&other, [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  auto bad = test::parseKernelModule(other, gemmIR(s));
  ASSERT_TRUE(bad);
  EXPECT_TRUE(failed(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*bad)).emitCuda(k)));
  EXPECT_NE(message.find("cuda.gemm_tile"), std::string::npos) << message;
}

} // namespace
