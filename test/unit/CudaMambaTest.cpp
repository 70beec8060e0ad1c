//===- CudaMambaTest.cpp - The Mamba2 CUDA kernels against the CPU kernels ----===//
//
// Each mixer op (kernel.mamba_mask, mamba_conv, mamba_scan, mamba_gate_norm, mamba_inner_grad)
// is emitted, compiled with NVRTC for sm_80 and sm_90 (its PTX checked), and run on the host
// under the CUDA emulation against the CPU functions of lib/codegen/cpu (composed as
// runtime/Executor.cpp composes them), at sizes that fill no block or tile: batch 2, length 19,
// 6 heads of head_dim 5 in 3 groups, state 4, conv kernel 4, chunk 8. With and without masks,
// soft masks at full width, hard prefix masks with prefix_dense (1 of 2 heads per group, 3 of 5
// channels), float32 and float64, in waves of one sequence, and two more scan layouts (P = 11,
// N = 40: 8 warps, 2 rows and 2 state values per thread; P = 300, N = 2: 2 lanes per channel,
// rows left over after the lane reduction, 2 norm channels per thread). Results are pre-filled
// with NaN: every element must be written.
//
//===----------------------------------------------------------------------===//
#include "test/unit/cuda/HostRun.h"

#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FormatVariadic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace mlir;
using namespace nestor;
using namespace nestor::cuda;

namespace {

struct Config {
  int64_t B = 2, L = 19, H = 6, P = 5, G = 3, N = 4, K = 4, chunk = 8;
  int64_t perGroup() const { return H / G; }
  int64_t hp() const { return H * P; }
  int64_t gn() const { return G * N; }
  int64_t convChannels() const { return hp() + 2 * gn(); }
  int64_t width() const { return 2 * hp() + 2 * gn() + H; }
  int64_t rows() const { return B * L; }
};

/// How the masks enter an op.
enum class Masks {
  None, // no mask operands
  Soft, // random multipliers, full width
  Hard, // hard prefix masks (hActive = 1 of 2, pActive = 3 of 5) and prefix_dense
};
constexpr int64_t kHActive = 1, kPActive = 3;

template <typename T> const char *typeName() { return std::is_same_v<T, double> ? "f64" : "f32"; }

using nestor::cuda::test::randomVector;

template <typename T> std::vector<T> nanVector(size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

/// A mask of `n` entries in `groups` groups (+ phi, sigma): soft multipliers in [0.5, 1.5), or
/// a hard prefix keeping `active` entries of each group.
template <typename T>
std::vector<T> maskVector(int64_t n, int64_t groups, Masks kind, int64_t active, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<T> m(n + 2);
  int64_t per = n / groups;
  for (int64_t i = 0; i < n; ++i)
    m[i] = kind == Masks::Hard ? (i % per < active ? T(0.75 + 0.05 * (i % per)) : T(0)) : T(u(rng));
  m[n] = T(kind == Masks::Hard ? double(active) / per : u(rng) * 0.6);
  m[n + 1] = T(kind == Masks::Hard ? std::sqrt(double(active) / per) : u(rng) * 0.8);
  return m;
}

/// max |got - want| / (|want| + floor), floor = 1e-2 * max |want|; NaN counts as infinite.
template <typename T> double relativeError(const std::vector<T> &got, const std::vector<T> &want) {
  double top = 0;
  for (T w : want)
    top = std::max(top, std::abs(double(w)));
  double floor = 1e-2 * top + 1e-30, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double e = std::abs(double(got[i]) - double(want[i])) / (std::abs(double(want[i])) + floor);
    if (!(e <= worst))
      worst = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
  }
  return worst;
}

template <typename T> double tolerance() { return std::is_same_v<T, double> ? 1e-12 : 2e-5; }

#define EXPECT_CLOSE(got, want) EXPECT_LE(relativeError(got, want), tolerance<T>()) << #got

std::string attrs(const Config &c, bool dense) {
  return llvm::formatv("num_heads = {0} : i64, head_dim = {1} : i64, n_groups = {2} : i64, "
                       "state_size = {3} : i64{4}",
                       c.H, c.P, c.G, c.N, dense ? ", prefix_dense" : "")
      .str();
}

std::string tensor(llvm::ArrayRef<int64_t> shape, const char *t) {
  std::string s = "tensor<";
  for (int64_t d : shape)
    s += std::to_string(d) + "x";
  return s + t + ">";
}

/// The module `func.func @k(<args>) { <body> return }`.
std::string module(const std::vector<std::pair<std::string, std::string>> &args,
                   const std::string &body) {
  std::string s = "func.func @k(";
  for (size_t i = 0; i < args.size(); ++i)
    s += (i ? ", %" : "%") + args[i].first + ": " + args[i].second;
  return s + ") {\n  " + body + "\n  return\n}\n";
}

/// Parses `ir`, emits its kernel op, and runs it on the host.
struct Harness {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> mod;
  Operation *op = nullptr;
  KernelSource kernel;
  bool ok = false;

  explicit Harness(const std::string &ir) {
    mod = test::parseKernelModule(ctx, ir);
    if (!mod) {
      ADD_FAILURE() << "cannot parse:\n" << ir;
      return;
    }
    op = test::firstKernelOp(*mod);
    auto emit = dyn_cast<kernel::CudaEmitOpInterface>(op);
    if (!emit) {
      ADD_FAILURE() << op->getName().getStringRef().str() << " has no CUDA emitter";
      return;
    }
    ok = succeeded(emit.emitCuda(kernel));
    if (!ok)
      ADD_FAILURE() << "emitting failed:\n" << ir;
  }

  void run(llvm::ArrayRef<const void *> operands, llvm::ArrayRef<void *> results) {
    ASSERT_TRUE(ok);
    llvm::Error e = test::runOnHost(op, kernel, operands, results);
    ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
  }
};

/// The MambaShape and extents the executor derives from the masks.
template <typename T>
cpu::MambaShape shapeOf(const Config &c, bool dense, const T *heads, const T *channels) {
  cpu::MambaShape s;
  s.batch = c.B, s.length = c.L, s.heads = c.H, s.headDim = c.P, s.groups = c.G;
  s.stateSize = c.N, s.convKernel = c.K;
  s.hActive = c.perGroup(), s.pActive = c.P;
  if (dense && heads) {
    int64_t a = 0;
    for (int64_t i = 0; i < c.perGroup(); ++i)
      if (heads[i] != T(0))
        a = i + 1;
    s.hActive = a;
  }
  if (dense && channels) {
    int64_t a = 0;
    for (int64_t i = 0; i < c.P; ++i)
      if (channels[i] != T(0))
        a = i + 1;
    s.pActive = a;
  }
  return s;
}

//===----------------------------------------------------------------------===//
// The inputs of one mixer
//===----------------------------------------------------------------------===//

template <typename T> struct Inputs {
  Config c;
  std::vector<T> proj, xbc, y, convW, convB, dtBias, aLog, dSkip, normW, dOut, heads, channels;
  std::vector<T> mzx; // expanded from the masks (CPU mambaMaskExpand)

  Inputs(const Config &c, Masks masks, bool withHeads = true, bool withChannels = true) : c(c) {
    proj = randomVector<T>(c.rows() * c.width(), 11);
    xbc = randomVector<T>(c.rows() * c.convChannels(), 12);
    y = randomVector<T>(c.rows() * c.hp(), 13);
    convW = randomVector<T>(c.convChannels() * c.K, 14, 0.5);
    convB = randomVector<T>(c.convChannels(), 15, 0.3);
    dtBias = randomVector<T>(c.H, 16, 0.5);
    aLog = randomVector<T>(c.H, 17, 0.5);
    dSkip = randomVector<T>(c.H, 18);
    normW = randomVector<T>(c.hp(), 19);
    dOut = randomVector<T>(c.rows() * c.hp(), 20);
    if (masks != Masks::None) {
      if (withHeads)
        heads = maskVector<T>(c.H, c.G, masks, kHActive, 21);
      if (withChannels)
        channels = maskVector<T>(c.P, 1, masks, kPActive, 22);
      cpu::MambaShape s = shapeOf<T>(c, masks == Masks::Hard, headsPtr(), channelsPtr());
      mzx.resize(c.hp());
      cpu::mambaMaskExpand<T>(s, headsPtr(), channelsPtr(), mzx.data());
    }
  }
  const T *headsPtr() const { return heads.empty() ? nullptr : heads.data(); }
  const T *channelsPtr() const { return channels.empty() ? nullptr : channels.data(); }
  const T *mzxPtr() const { return mzx.empty() ? nullptr : mzx.data(); }
};

//===----------------------------------------------------------------------===//
// kernel.mamba_mask
//===----------------------------------------------------------------------===//

template <typename T> void checkMask(Masks masks, bool withHeads, bool withChannels) {
  Config c;
  Inputs<T> in(c, masks, withHeads, withChannels);
  const char *t = typeName<T>();
  bool dense = masks == Masks::Hard;
  std::string ops, types;
  std::vector<std::pair<std::string, std::string>> args;
  std::vector<const void *> operands;
  if (withHeads) {
    args.push_back({"mh", tensor({c.H + 2}, t)});
    ops += " heads(%mh : " + tensor({c.H + 2}, t) + ")";
    operands.push_back(in.heads.data());
  }
  if (withChannels) {
    args.push_back({"mc", tensor({c.P + 2}, t)});
    ops += " channels(%mc : " + tensor({c.P + 2}, t) + ")";
    operands.push_back(in.channels.data());
  }
  Harness hr(module(args, "%r = kernel.mamba_mask" + ops + " {" + attrs(c, dense) +
                              "} : " + tensor({c.hp()}, t)));
  std::vector<T> got = nanVector<T>(c.hp());
  hr.run(operands, {got.data()});
  EXPECT_CLOSE(got, in.mzx);
}

TEST(CudaMambaTest, MaskMatchesTheCpuKernel) {
  checkMask<float>(Masks::Soft, true, true);
  checkMask<float>(Masks::Hard, true, true);
  checkMask<float>(Masks::Hard, false, true);
}

//===----------------------------------------------------------------------===//
// kernel.mamba_conv
//===----------------------------------------------------------------------===//

template <typename T> void checkConv(Masks masks) {
  Config c;
  Inputs<T> in(c, masks);
  const char *t = typeName<T>();
  bool dense = masks == Masks::Hard, masked = masks != Masks::None;
  std::string pt = tensor({c.B, c.L, c.width()}, t), wt = tensor({c.convChannels(), c.K}, t),
              bt = tensor({c.convChannels()}, t), mt = tensor({c.hp()}, t),
              rt = tensor({c.B, c.L, c.convChannels()}, t);
  std::vector<std::pair<std::string, std::string>> args = {{"p", pt}, {"w", wt}, {"b", bt}};
  if (masked)
    args.push_back({"m", mt});
  Harness hr(module(args, "%r = kernel.mamba_conv %p, %w, %b" +
                              (masked ? " mask(%m : " + mt + ")" : std::string()) + " {" +
                              attrs(c, dense) + "} : (" + pt + ", " + wt + ", " + bt + ") -> " +
                              rt));
  std::vector<const void *> operands = {in.proj.data(), in.convW.data(), in.convB.data()};
  if (masked)
    operands.push_back(in.mzx.data());
  std::vector<T> got = nanVector<T>(c.rows() * c.convChannels()), want(got.size());
  hr.run(operands, {got.data()});

  // The executor's extents: from the expanded multiplier.
  cpu::MambaShape s = shapeOf<T>(c, false, nullptr, nullptr);
  if (dense) {
    s.pActive = 0, s.hActive = 0;
    for (int64_t p = 0; p < c.P; ++p)
      if (in.mzx[p] != T(0))
        s.pActive = p + 1;
    for (int64_t h = 0; h < c.perGroup(); ++h)
      if (in.mzx[h * c.P] != T(0))
        s.hActive = h + 1;
    ASSERT_EQ(s.pActive, kPActive);
    ASSERT_EQ(s.hActive, kHActive);
  }
  cpu::mambaConvForward<T>(s, in.proj.data(), in.convW.data(), in.convB.data(), in.mzxPtr(),
                           want.data());
  EXPECT_CLOSE(got, want);
  if (dense) { // head 1 (inactive), channel 0
    EXPECT_EQ(got[5 * c.convChannels() + 1 * c.P], T(0));
  }
}

TEST(CudaMambaTest, ConvMatchesTheCpuKernel) {
  checkConv<float>(Masks::None);
  checkConv<float>(Masks::Soft);
  checkConv<float>(Masks::Hard);
}

//===----------------------------------------------------------------------===//
// kernel.mamba_scan
//===----------------------------------------------------------------------===//

template <typename T> void checkScan(const Config &c, Masks masks) {
  Inputs<T> in(c, masks);
  const char *t = typeName<T>();
  bool dense = masks == Masks::Hard, masked = masks != Masks::None;
  std::string pt = tensor({c.B, c.L, c.width()}, t), xt = tensor({c.B, c.L, c.convChannels()}, t),
              vt = tensor({c.H}, t), mt = tensor({c.H + 2}, t), rt = tensor({c.B, c.L, c.hp()}, t);
  std::vector<std::pair<std::string, std::string>> args = {
      {"p", pt}, {"x", xt}, {"dtb", vt}, {"al", vt}, {"d", vt}};
  if (masked)
    args.push_back({"mh", mt});
  Harness hr(module(args, "%r = kernel.mamba_scan %p, %x, %dtb, %al, %d" +
                              (masked ? " heads(%mh : " + mt + ")" : std::string()) + " {chunk = " +
                              std::to_string(c.chunk) + " : i64, " + attrs(c, dense) + "} : (" +
                              pt + ", " + xt + ", " + vt + ") -> " + rt));
  std::vector<const void *> operands = {in.proj.data(), in.xbc.data(), in.dtBias.data(),
                                        in.aLog.data(), in.dSkip.data()};
  if (masked)
    operands.push_back(in.heads.data());
  std::vector<T> got = nanVector<T>(c.rows() * c.hp()), want(got.size());
  hr.run(operands, {got.data()});
  cpu::MambaShape s = shapeOf<T>(c, dense, in.headsPtr(), nullptr);
  cpu::mambaScanForward<T>(s, in.proj.data(), in.xbc.data(), in.dtBias.data(), in.aLog.data(),
                           in.dSkip.data(), in.headsPtr(), c.chunk, want.data());
  EXPECT_CLOSE(got, want);
  if (dense) {
    EXPECT_EQ(got[3 * c.hp() + 1 * c.P + 2], T(0)) << "an inactive head";
  }
}

TEST(CudaMambaTest, ScanMatchesTheCpuKernel) {
  Config c;
  checkScan<float>(c, Masks::None);
  checkScan<float>(c, Masks::Soft);
  checkScan<float>(c, Masks::Hard);
}

TEST(CudaMambaTest, ScanMatchesTheCpuKernelInFloat64) { checkScan<double>(Config{}, Masks::Soft); }

TEST(CudaMambaTest, ScanWithSeveralRowsAndWarpsPerHead) {
  // 32 lanes over n (2 values each), 8 warps over p (2 rows each): block of 256 threads.
  Config c;
  c.B = 1, c.L = 13, c.H = 2, c.G = 1, c.P = 11, c.N = 40, c.chunk = 5;
  checkScan<float>(c, Masks::Soft);
}

TEST(CudaMambaTest, ScanWithRowsLeftAfterTheLaneReduction) {
  // 2 lanes over n, 128 lane groups over p with 3 rows each (padded to 4): each lane ends the
  // transposing reduction with 2 rows.
  Config c;
  c.B = 1, c.L = 6, c.H = 1, c.G = 1, c.P = 300, c.N = 2, c.chunk = 4;
  checkScan<float>(c, Masks::Soft);
}

//===----------------------------------------------------------------------===//
// kernel.mamba_gate_norm
//===----------------------------------------------------------------------===//

template <typename T> void checkGateNorm(Masks masks) {
  Config c;
  Inputs<T> in(c, masks);
  const char *t = typeName<T>();
  bool dense = masks == Masks::Hard, masked = masks != Masks::None;
  std::string yt = tensor({c.B, c.L, c.hp()}, t), pt = tensor({c.B, c.L, c.width()}, t),
              wt = tensor({c.hp()}, t), ht = tensor({c.H + 2}, t), ct = tensor({c.P + 2}, t);
  std::vector<std::pair<std::string, std::string>> args = {{"y", yt}, {"p", pt}, {"w", wt}};
  std::string ops;
  std::vector<const void *> operands = {in.y.data(), in.proj.data(), in.normW.data()};
  if (masked) {
    args.insert(args.end(), {{"m", wt}, {"mh", ht}, {"mc", ct}});
    ops = " mask(%m : " + wt + ") heads(%mh : " + ht + ") channels(%mc : " + ct + ")";
    operands.insert(operands.end(), {in.mzx.data(), in.heads.data(), in.channels.data()});
  }
  Harness hr(module(args, "%r = kernel.mamba_gate_norm %y, %p, %w" + ops +
                              " {epsilon = 1.0e-5 : f64, " + attrs(c, dense) + "} : (" + yt + ", " +
                              pt + ", " + wt + ") -> " + yt));
  std::vector<T> got = nanVector<T>(c.rows() * c.hp()), want(got.size());
  hr.run(operands, {got.data()});
  cpu::MambaShape s = shapeOf<T>(c, dense, in.headsPtr(), in.channelsPtr());
  const T *hm = in.headsPtr(), *cm = in.channelsPtr();
  T phi = (hm ? hm[c.H] : T(1)) * (cm ? cm[c.P] : T(1));
  T sigma = (hm ? hm[c.H + 1] : T(1)) * (cm ? cm[c.P + 1] : T(1));
  cpu::mambaGateNormForward<T>(s, in.y.data(), in.proj.data(), in.mzxPtr(), in.normW.data(), 1e-5,
                               phi, sigma, want.data());
  EXPECT_CLOSE(got, want);
  if (dense) {
    EXPECT_EQ(got[4 * c.hp() + 0 * c.P + 3], T(0)) << "an inactive channel";
  }
}

TEST(CudaMambaTest, GateNormMatchesTheCpuKernel) {
  checkGateNorm<float>(Masks::None);
  checkGateNorm<float>(Masks::Soft);
  checkGateNorm<float>(Masks::Hard);
}

//===----------------------------------------------------------------------===//
// kernel.mamba_inner_grad
//===----------------------------------------------------------------------===//

template <typename T> struct Grads {
  std::vector<T> dProj, dConvW, dConvB, dDtBias, dALog, dD, dNormW, dHeads, dChannels;
  Grads(const Config &c, bool withHeads, bool withChannels, bool nan) {
    auto make = [&](int64_t n) { return nan ? nanVector<T>(n) : std::vector<T>(n, T(0)); };
    dProj = make(c.rows() * c.width());
    dConvW = make(c.convChannels() * c.K);
    dConvB = make(c.convChannels());
    dDtBias = make(c.H), dALog = make(c.H), dD = make(c.H);
    dNormW = make(c.hp());
    if (withHeads)
      dHeads = make(c.H + 2);
    if (withChannels)
      dChannels = make(c.P + 2);
  }
  std::vector<void *> pointers() {
    std::vector<void *> p = {dProj.data(), dConvW.data(), dConvB.data(), dDtBias.data(),
                             dALog.data(), dD.data(),     dNormW.data()};
    if (!dHeads.empty())
      p.push_back(dHeads.data());
    if (!dChannels.empty())
      p.push_back(dChannels.data());
    return p;
  }
};

/// The CPU backward, composed exactly as runtime/Executor.cpp composes mamba_inner_grad.
template <typename T>
Grads<T> cpuInnerGrad(const Inputs<T> &in, bool dense, bool gradHeads, bool gradChannels) {
  const Config &c = in.c;
  Grads<T> g(c, gradHeads, gradChannels, false);
  const T *hm = in.headsPtr(), *cm = in.channelsPtr();
  bool masked = hm || cm;
  int64_t rows = c.rows(), HP = c.hp(), H = c.H, P = c.P;
  cpu::MambaShape s = shapeOf<T>(c, dense, hm, cm);
  std::vector<T> dY(rows * HP, T(0)), dXbc(rows * c.convChannels(), T(0)), mzx(HP), dMzx(HP, T(0));
  std::vector<T> dHeadM(H, T(0));
  if (masked)
    cpu::mambaMaskExpand<T>(s, hm, cm, mzx.data());
  T *m = masked ? mzx.data() : nullptr, *dm = masked ? dMzx.data() : nullptr;
  T phi = (hm ? hm[H] : T(1)) * (cm ? cm[P] : T(1));
  T sigma = (hm ? hm[H + 1] : T(1)) * (cm ? cm[P + 1] : T(1));
  T dPhi = 0, dSigma = 0;
  cpu::mambaGateNormBackward<T>(s, in.y.data(), in.proj.data(), m, in.normW.data(), 1e-5, phi,
                                sigma, in.dOut.data(), dY.data(), g.dProj.data(), g.dNormW.data(),
                                dm, &dPhi, &dSigma);
  cpu::mambaScanBackward<T>(s, in.proj.data(), in.xbc.data(), in.dtBias.data(), in.aLog.data(),
                            in.dSkip.data(), hm, c.chunk, dY.data(), dXbc.data(), g.dProj.data(),
                            g.dDtBias.data(), g.dALog.data(), g.dD.data(),
                            hm ? dHeadM.data() : nullptr);
  cpu::mambaConvBackward<T>(s, in.proj.data(), in.convW.data(), in.convB.data(), m, dXbc.data(),
                            g.dProj.data(), g.dConvW.data(), g.dConvB.data(), dm);
  if (masked) {
    cpu::mambaMaskBackward<T>(s, hm, cm, dm, dPhi, dSigma, gradHeads ? g.dHeads.data() : nullptr,
                              gradChannels ? g.dChannels.data() : nullptr);
    if (gradHeads)
      for (int64_t h = 0; h < H; ++h)
        g.dHeads[h] += dHeadM[h];
  }
  return g;
}

template <typename T>
void checkInnerGrad(const Config &c, Masks masks, bool withHeads = true, bool withChannels = true) {
  if (masks == Masks::None)
    withHeads = withChannels = false;
  Inputs<T> in(c, masks, withHeads, withChannels);
  const char *t = typeName<T>();
  bool dense = masks == Masks::Hard;
  std::string pt = tensor({c.B, c.L, c.width()}, t), xt = tensor({c.B, c.L, c.convChannels()}, t),
              yt = tensor({c.B, c.L, c.hp()}, t), wt = tensor({c.convChannels(), c.K}, t),
              bt = tensor({c.convChannels()}, t), vt = tensor({c.H}, t), nt = tensor({c.hp()}, t),
              ht = tensor({c.H + 2}, t), ct = tensor({c.P + 2}, t);
  std::vector<std::pair<std::string, std::string>> args = {
      {"p", pt},   {"x", xt},  {"y", yt}, {"w", wt},  {"b", bt},
      {"dtb", vt}, {"al", vt}, {"d", vt}, {"nw", nt}, {"g", yt}};
  std::vector<const void *> operands = {
      in.proj.data(),   in.xbc.data(),  in.y.data(),     in.convW.data(), in.convB.data(),
      in.dtBias.data(), in.aLog.data(), in.dSkip.data(), in.normW.data(), in.dOut.data()};
  std::string ops, extra;
  int results = 7;
  if (withHeads) {
    args.push_back({"mh", ht});
    ops += " heads(%mh : " + ht + ")";
    extra += " heads(" + ht + ")";
    operands.push_back(in.heads.data());
    ++results;
  }
  if (withChannels) {
    args.push_back({"mc", ct});
    ops += " channels(%mc : " + ct + ")";
    extra += " channels(" + ct + ")";
    operands.push_back(in.channels.data());
    ++results;
  }
  std::string body = "%r:" + std::to_string(results) +
                     " = kernel.mamba_inner_grad %p, %x, %y, %w, %b, %dtb, %al, %d, %nw, %g" + ops +
                     " {epsilon = 1.0e-5 : f64, chunk = " + std::to_string(c.chunk) + " : i64, " +
                     attrs(c, dense) + "} : (" + pt + ", " + xt + ", " + yt + ", " + wt + ", " +
                     bt + ", " + vt + ", " + vt + ", " + vt + ", " + nt + ", " + yt + ") -> (" +
                     pt + ", " + wt + ", " + bt + ", " + vt + ", " + vt + ", " + vt + ", " + nt +
                     ")" + extra;
  Harness hr(module(args, body));
  Grads<T> got(c, withHeads, withChannels, true);
  hr.run(operands, got.pointers());
  Grads<T> want = cpuInnerGrad<T>(in, dense, withHeads, withChannels);
  EXPECT_CLOSE(got.dProj, want.dProj);
  EXPECT_CLOSE(got.dConvW, want.dConvW);
  EXPECT_CLOSE(got.dConvB, want.dConvB);
  EXPECT_CLOSE(got.dDtBias, want.dDtBias);
  EXPECT_CLOSE(got.dALog, want.dALog);
  EXPECT_CLOSE(got.dD, want.dD);
  EXPECT_CLOSE(got.dNormW, want.dNormW);
  EXPECT_CLOSE(got.dHeads, want.dHeads);
  EXPECT_CLOSE(got.dChannels, want.dChannels);
  if (dense && withHeads) { // head 1 is inactive: its dt column
    EXPECT_EQ(got.dProj[7 * c.width() + 2 * c.hp() + 2 * c.gn() + 1], T(0));
  }
  if (dense && withChannels) { // channel 3 of head 0 is inactive: z, x and its conv weights
    EXPECT_EQ(got.dProj[7 * c.width() + 3], T(0));
    EXPECT_EQ(got.dProj[7 * c.width() + c.hp() + 3], T(0));
    EXPECT_EQ(got.dConvW[3 * c.K], T(0));
  }
}

TEST(CudaMambaTest, InnerGradWithoutMasksMatchesTheCpuKernels) {
  checkInnerGrad<float>(Config{}, Masks::None);
}

TEST(CudaMambaTest, InnerGradWithSoftMasksMatchesTheCpuKernels) {
  checkInnerGrad<float>(Config{}, Masks::Soft);
}

TEST(CudaMambaTest, InnerGradPrefixDenseMatchesTheCpuKernels) {
  checkInnerGrad<float>(Config{}, Masks::Hard);
}

TEST(CudaMambaTest, InnerGradWithTheHeadMaskOnlyMatchesTheCpuKernels) {
  checkInnerGrad<float>(Config{}, Masks::Hard, /*withHeads=*/true, /*withChannels=*/false);
}

TEST(CudaMambaTest, InnerGradMatchesTheCpuKernelsInFloat64) {
  checkInnerGrad<double>(Config{}, Masks::Soft);
}

TEST(CudaMambaTest, InnerGradInWavesOfOneSequence) {
  // A scratch budget below one sequence: each sequence's scan backward is its own wave.
  setenv("NESTOR_CUDA_MAMBA_WAVE_BYTES", "1", 1);
  checkInnerGrad<float>(Config{}, Masks::Soft);
  unsetenv("NESTOR_CUDA_MAMBA_WAVE_BYTES");
}

TEST(CudaMambaTest, InnerGradWithSeveralRowsAndWarpsPerHead) {
  Config c;
  c.B = 1, c.L = 13, c.H = 2, c.G = 1, c.P = 11, c.N = 40, c.K = 3, c.chunk = 5;
  checkInnerGrad<float>(c, Masks::Soft);
}

TEST(CudaMambaTest, InnerGradWithRowsLeftAndChannelsPerThread) {
  // The scan layout above; a norm group of 300 channels (2 per thread of 256), and 304 conv
  // channels in 3 blocks.
  Config c;
  c.B = 1, c.L = 6, c.H = 1, c.G = 1, c.P = 300, c.N = 2, c.K = 2, c.chunk = 4;
  checkInnerGrad<float>(c, Masks::Soft);
}

//===----------------------------------------------------------------------===//
// PTX
//===----------------------------------------------------------------------===//

TEST(CudaMambaTest, EveryOpCompilesForSm80AndSm90) {
  Config c;
  const char *t = "f32";
  std::string pt = tensor({c.B, c.L, c.width()}, t), xt = tensor({c.B, c.L, c.convChannels()}, t),
              yt = tensor({c.B, c.L, c.hp()}, t), wt = tensor({c.convChannels(), c.K}, t),
              bt = tensor({c.convChannels()}, t), vt = tensor({c.H}, t), nt = tensor({c.hp()}, t),
              ht = tensor({c.H + 2}, t), ct = tensor({c.P + 2}, t);
  std::vector<std::pair<std::string, std::string>> args = {
      {"p", pt},  {"x", xt}, {"y", yt},  {"w", wt}, {"b", bt},  {"dtb", vt},
      {"al", vt}, {"d", vt}, {"nw", nt}, {"g", yt}, {"mh", ht}, {"mc", ct}};
  std::string a = attrs(c, true);
  std::vector<std::string> bodies = {
      "%r = kernel.mamba_mask heads(%mh : " + ht + ") channels(%mc : " + ct + ") {" + a +
          "} : " + nt,
      "%r = kernel.mamba_conv %p, %w, %b mask(%nw : " + nt + ") {" + a + "} : (" + pt + ", " + wt +
          ", " + bt + ") -> " + xt,
      "%r = kernel.mamba_scan %p, %x, %dtb, %al, %d heads(%mh : " + ht + ") {chunk = 8 : i64, " +
          a + "} : (" + pt + ", " + xt + ", " + vt + ") -> " + yt,
      "%r = kernel.mamba_gate_norm %y, %p, %nw mask(%nw : " + nt + ") heads(%mh : " + ht +
          ") channels(%mc : " + ct + ") {epsilon = 1.0e-5 : f64, " + a + "} : (" + yt + ", " + pt +
          ", " + nt + ") -> " + yt,
      "%r:9 = kernel.mamba_inner_grad %p, %x, %y, %w, %b, %dtb, %al, %d, %nw, %g heads(%mh : " +
          ht + ") channels(%mc : " + ct + ") {epsilon = 1.0e-5 : f64, chunk = 8 : i64, " + a +
          "} : (" + pt + ", " + xt + ", " + yt + ", " + wt + ", " + bt + ", " + vt + ", " + vt +
          ", " + vt + ", " + nt + ", " + yt + ") -> (" + pt + ", " + wt + ", " + bt + ", " + vt +
          ", " + vt + ", " + vt + ", " + nt + ") heads(" + ht + ") channels(" + ct + ")"};
  for (const std::string &body : bodies) {
    Harness hr(module(args, body));
    ASSERT_TRUE(hr.ok);
    for (const char *arch : {"sm_80", "sm_90"}) {
      auto ptx = test::compileToPtx(hr.op, arch);
      ASSERT_TRUE(static_cast<bool>(ptx)) << llvm::toString(ptx.takeError());
      EXPECT_NE(ptx->find(std::string(".target ") + arch), std::string::npos);
      for (const Launch &l : hr.kernel.launches)
        EXPECT_NE(ptx->find(".visible .entry " + l.entry + "("), std::string::npos)
            << l.entry << " for " << arch;
      EXPECT_EQ(ptx->find(".local"), std::string::npos)
          << hr.op->getName().getStringRef().str() << ": register arrays spilled to local memory";
    }
  }
}

TEST(CudaMambaTest, TheEmittersRefuseWhatTheyCannotRun) {
  MLIRContext ctx;
  auto mod = test::parseKernelModule(ctx, R"(
func.func @k(%p: tensor<1x4x20xf32>, %x: tensor<1x4x14xf32>, %v: tensor<3xf32>) {
  %r = kernel.mamba_scan %p, %x, %v, %v, %v {num_heads = 3 : i64, head_dim = 2 : i64, n_groups = 2 : i64, state_size = 2 : i64}
      : (tensor<1x4x20xf32>, tensor<1x4x14xf32>, tensor<3xf32>) -> tensor<1x4x6xf32>
  return
})");
  ASSERT_TRUE(mod);
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    diagnostics += d.str();
    return success();
  });
  KernelSource k;
  EXPECT_TRUE(failed(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*mod)).emitCuda(k)));
  EXPECT_NE(diagnostics.find("not a multiple of n_groups"), std::string::npos) << diagnostics;

  // A 256 x 256 state: 32 rows x 8 values per thread of 256 would not stay in registers.
  Config c;
  c.B = 1, c.L = 2, c.H = 1, c.G = 1, c.P = 256, c.N = 256;
  std::string pt = tensor({c.B, c.L, c.width()}, "f32"),
              xt = tensor({c.B, c.L, c.convChannels()}, "f32"), vt = tensor({c.H}, "f32"),
              yt = tensor({c.B, c.L, c.hp()}, "f32");
  MLIRContext ctx2;
  auto big = test::parseKernelModule(ctx2, module({{"p", pt}, {"x", xt}, {"v", vt}},
                                                  "%r = kernel.mamba_scan %p, %x, %v, %v, %v {" +
                                                      attrs(c, false) + "} : (" + pt + ", " + xt +
                                                      ", " + vt + ") -> " + yt));
  ASSERT_TRUE(big);
  diagnostics.clear();
  ScopedDiagnosticHandler handler2(&ctx2, [&](Diagnostic &d) {
    diagnostics += d.str();
    return success();
  });
  EXPECT_TRUE(failed(cast<kernel::CudaEmitOpInterface>(test::firstKernelOp(*big)).emitCuda(k)));
  EXPECT_NE(diagnostics.find("too large a state"), std::string::npos) << diagnostics;
}

} // namespace
