//===- Executor.cpp - Run a planned kernel program on the CPU --------------===//
//
// create() binds every op once: a table maps each kernel op name to a binder that reads the
// op's shapes and attributes and returns a step (a closure over buffer slots). Buffer slots
// hold the arena addresses the memory plan assigned, constants, and the caller's argument
// pointers (refreshed by each run). The table is the CPU backend's op coverage: an op without a
// binder is an error naming it, at create() time.
//
//===----------------------------------------------------------------------===//
#include "nestor/Executor.h"

#include "dialects/elastic/ElasticOps.h"
#include "dialects/kernel/KernelOps.h"
#include "lib/codegen/cpu/Kernels.h"
#include "nestor/Reference.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>

using namespace mlir;
using namespace nestor;
using namespace nestor::runtime;
namespace kn = nestor::kernel;

namespace {

using Step = std::function<llvm::Error()>;

/// Frees with std::free (the arena comes from aligned_alloc).
struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};

int64_t numel(Type type) {
  auto t = cast<RankedTensorType>(type);
  return t.getNumElements();
}

/// [rows, last dim] view of a tensor type.
std::pair<int64_t, int64_t> matrixView(Type type) {
  auto t = cast<RankedTensorType>(type);
  if (t.getRank() == 0)
    return {1, 1};
  return {t.getNumElements() / t.getShape().back(), t.getShape().back()};
}

/// Active entries per group of a hard prefix mask: one past the last nonzero of group 0.
template <typename T> int64_t activeOf(const T *mask, int64_t entries, int64_t groups) {
  int64_t per = entries / groups, active = 0;
  for (int64_t i = 0; i < per; ++i)
    if (mask[i] != T(0))
      active = i + 1;
  return active;
}

} // namespace

int64_t nestor::runtime::activePrefix(const void *mask, Type element, int64_t entries,
                                      int64_t groups) {
  return element.isF64() ? activeOf(static_cast<const double *>(mask), entries, groups)
                         : activeOf(static_cast<const float *>(mask), entries, groups);
}

int64_t nestor::runtime::bufferBytes(Type type) {
  auto t = cast<RankedTensorType>(type);
  Type e = t.getElementType();
  return t.getNumElements() *
         (e.isInteger(1) ? 1 : std::max<int64_t>(1, e.getIntOrFloatBitWidth() / 8));
}

namespace {

/// Contiguous [start, length) runs of a GEMM dimension.
using Runs = llvm::SmallVector<std::pair<int64_t, int64_t>, 4>;

/// The element type an op computes in: its first floating-point tensor operand's (the
/// optimizer's hyper-parameters and the squared norm's result are float64 whatever the model).
bool computesInDouble(Operation *op) {
  for (Value v : op->getOperands())
    if (auto t = dyn_cast<RankedTensorType>(v.getType()); t && isa<FloatType>(t.getElementType()))
      return t.getElementType().isF64();
  for (Type t : op->getResultTypes())
    if (auto rt = dyn_cast<RankedTensorType>(t); rt && isa<FloatType>(rt.getElementType()))
      return rt.getElementType().isF64();
  return false;
}

} // namespace

struct CpuProgram::Impl {
  func::FuncOp func;
  std::unique_ptr<void, FreeDeleter> arena;
  int64_t arenaBytes = 0;
  std::vector<std::unique_ptr<char[]>> owned; // constants and kernel scratch
  llvm::DenseMap<Value, unsigned> slotOf;
  std::vector<void *> slots;
  std::vector<unsigned> argSlots, resultSlots;
  std::vector<Step> steps;
  std::vector<std::string> stepNames;
  std::vector<double> stepTimes;
  bool profiling = false;
  std::function<void(Operation *)> observer;
  std::vector<Operation *> stepOps;
  double gemmFlops = 0;
  OwningOpRef<ModuleOp> hostModule;

  unsigned slot(Value v) {
    auto [it, inserted] = slotOf.try_emplace(v, slots.size());
    if (inserted)
      slots.push_back(nullptr);
    return it->second;
  }
  void *scratch(int64_t bytes) {
    owned.push_back(std::make_unique<char[]>(std::max<int64_t>(bytes, 1)));
    std::memset(owned.back().get(), 0, std::max<int64_t>(bytes, 1));
    return owned.back().get();
  }
  llvm::Error fail(Operation *op, const llvm::Twine &message) {
    std::string loc;
    llvm::raw_string_ostream os(loc);
    op->getLoc().print(os);
    return llvm::createStringError(
        (op->getName().getStringRef() + " at " + loc + ": " + message).str().c_str());
  }

  template <typename T> llvm::Expected<Step> bind(Operation *op);
  llvm::Expected<Step> skipWhenDropped(Operation *op, int64_t layer, Step run);
  /// The depth gates' keep vector (one per program), found from any gated depth_gate.
  int keepSlot = -1;
  bool keepIsDouble = false;
  llvm::Expected<Step> bindHost(kn::HostOp op);
};

namespace {

/// Typed access to a value's buffer at run time.
template <typename T> struct Ref {
  std::vector<void *> *slots = nullptr;
  unsigned index = 0;
  bool present = false;
  T *get() const { return present ? static_cast<T *>((*slots)[index]) : nullptr; }
};

/// A GEMM dimension of `size` and its optional prefix-dense extent mask: `entries` entries in
/// `groups` groups, each covering size / entries consecutive indices.
template <typename T> struct Extent {
  Ref<T> mask;
  int64_t entries = 0, groups = 1, size = 0;
  Runs runs() const {
    if (!mask.present)
      return {{0, size}};
    int64_t active = activeOf(mask.get(), entries, groups), per = entries / groups;
    int64_t block = size / entries;
    Runs out;
    if (active > 0)
      for (int64_t g = 0; g < groups; ++g)
        out.push_back({g * per * block, active * block});
    return out;
  }
};

} // namespace

template <typename T> llvm::Expected<Step> CpuProgram::Impl::bind(Operation *op) {
  auto ref = [&](Value v) {
    Ref<T> r;
    r.slots = &slots;
    if (v) {
      r.index = slot(v);
      r.present = true;
    }
    return r;
  };
  auto iref = [&](Value v) {
    Ref<int32_t> r;
    r.slots = &slots;
    r.index = slot(v);
    r.present = true;
    return r;
  };
  auto maskSize = [](Value m) { return m ? numel(m.getType()) - 2 : 0; };

  if (auto g = dyn_cast<kn::GemmOp>(op)) {
    auto [ar, ac] = matrixView(g.getA().getType());
    auto [br, bc] = matrixView(g.getB().getType());
    bool ta = g.getTransposeA(), tb = g.getTransposeB();
    int64_t m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
    auto a = ref(g.getA()), b = ref(g.getB()), acc = ref(g.getAcc()), mask = ref(g.getMask());
    auto c = ref(g.getResult());
    int64_t block = g.getMaskBlock();
    Extent<T> em{ref(g.getMExtent()), maskSize(g.getMExtent()),
                 static_cast<int64_t>(g.getMGroups()), m};
    Extent<T> en{ref(g.getNExtent()), maskSize(g.getNExtent()),
                 static_cast<int64_t>(g.getNGroups()), n};
    Extent<T> ek{ref(g.getKExtent()), maskSize(g.getKExtent()),
                 static_cast<int64_t>(g.getKGroups()), k};
    double *flops = &gemmFlops;
    return Step([=]() {
      T *out = c.get();
      const T *pa = a.get(), *pb = b.get();
      Runs rm = em.runs(), rn = en.runs(), rk = ek.runs();
      bool restricted = rm.size() != 1 || rn.size() != 1 || rm[0].second != m || rn[0].second != n;
      if (acc.present) {
        if (acc.get() != out)
          std::memcpy(out, acc.get(), sizeof(T) * m * n);
      } else if (restricted) {
        std::memset(out, 0, sizeof(T) * m * n);
      }
      // One BLAS call per block of active rows x active columns, summed over active K runs.
      for (auto [m0, ml] : rm)
        for (auto [n0, nl] : rn) {
          bool first = !acc.present;
          for (auto [k0, kl] : rk) {
            const T *sa = ta ? pa + k0 * ac + m0 : pa + m0 * ac + k0;
            const T *sb = tb ? pb + n0 * bc + k0 : pb + k0 * bc + n0;
            cpu::gemm<T>(ta, tb, ml, nl, kl, T(1), sa, ac, sb, bc, first ? T(0) : T(1),
                         out + m0 * n + n0, n);
            *flops += 2.0 * ml * nl * kl;
            first = false;
          }
          if (rk.empty() && !acc.present)
            for (int64_t i = 0; i < ml; ++i)
              std::fill_n(out + (m0 + i) * n + n0, nl, T(0));
        }
      if (mask.present)
        cpu::maskForward<T>(out, m, n, block, mask.get(), 1, n / block, out);
      return llvm::Error::success();
    });
  }
  if (auto e = dyn_cast<kn::EmbedOp>(op)) {
    auto tok = iref(e.getTokens());
    auto table = ref(e.getTable()), mask = ref(e.getMask()), out = ref(e.getResult());
    auto [vocab, d] = matrixView(e.getTable().getType());
    int64_t rows = numel(e.getTokens().getType());
    bool dense = e.getPrefixDense();
    return Step([=]() -> llvm::Error {
      int64_t active = dense ? activeOf(mask.get(), d, 1) : d;
      int64_t bad = cpu::embedForward<T>(tok.get(), rows, table.get(), vocab, d, mask.get(), active,
                                         out.get());
      if (bad >= 0)
        return llvm::createStringError("kernel.embed: token %d at position %lld is outside the "
                                       "vocabulary [0, %lld)",
                                       tok.get()[bad], static_cast<long long>(bad),
                                       static_cast<long long>(vocab));
      return llvm::Error::success();
    });
  }
  if (auto e = dyn_cast<kn::EmbedGradOp>(op)) {
    auto tok = iref(e.getTokens());
    auto table = ref(e.getTable()), mask = ref(e.getMask()), dy = ref(e.getResultGrad());
    auto dt = ref(e.getTableGrad()), dm = ref(e.getMaskGrad());
    auto [vocab, d] = matrixView(e.getTable().getType());
    int64_t rows = numel(e.getTokens().getType());
    bool dense = e.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), d, 1) : d;
      cpu::embedBackward<T>(tok.get(), rows, table.get(), vocab, d, mask.get(), active, dy.get(),
                            dt.get(), dm.get());
      return llvm::Error::success();
    });
  }
  if (auto n = dyn_cast<kn::RMSNormOp>(op)) {
    auto x = ref(n.getInput()), w = ref(n.getWeight()), mask = ref(n.getMask());
    auto y = ref(n.getResult());
    auto [rows, d] = matrixView(n.getInput().getType());
    double eps = n.getEpsilon().convertToDouble();
    bool dense = n.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), d, 1) : d;
      cpu::rmsnormForward<T>(x.get(), rows, d, w.get(), eps, mask.get(), active, y.get());
      return llvm::Error::success();
    });
  }
  if (auto n = dyn_cast<kn::RMSNormGradOp>(op)) {
    auto x = ref(n.getInput()), w = ref(n.getWeight()), mask = ref(n.getMask());
    auto dy = ref(n.getResultGrad()), dx = ref(n.getInputGrad()), dw = ref(n.getWeightGrad());
    auto dm = ref(n.getMaskGrad());
    auto [rows, d] = matrixView(n.getInput().getType());
    double eps = n.getEpsilon().convertToDouble();
    bool dense = n.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), d, 1) : d;
      cpu::rmsnormBackward<T>(x.get(), rows, d, w.get(), eps, mask.get(), active, dy.get(),
                              dx.get(), dw.get(), dm.get());
      return llvm::Error::success();
    });
  }
  if (auto mk = dyn_cast<kn::MaskOp>(op)) {
    auto x = ref(mk.getInput()), mask = ref(mk.getMask()), y = ref(mk.getResult());
    auto [rows, width] = matrixView(mk.getInput().getType());
    int64_t block = mk.getBlock(), groups = mk.getGroups(), entries = maskSize(mk.getMask());
    bool dense = mk.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), entries, groups) : entries / groups;
      cpu::maskForward<T>(x.get(), rows, width, block, mask.get(), groups, active, y.get());
      return llvm::Error::success();
    });
  }
  if (auto mk = dyn_cast<kn::MaskGradOp>(op)) {
    auto x = ref(mk.getInput()), mask = ref(mk.getMask()), dy = ref(mk.getResultGrad());
    auto dx = ref(mk.getInputGrad()), dm = ref(mk.getMaskGrad());
    auto [rows, width] = matrixView(mk.getInput().getType());
    int64_t block = mk.getBlock(), groups = mk.getGroups(), entries = maskSize(mk.getMask());
    bool dense = mk.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), entries, groups) : entries / groups;
      cpu::maskBackward<T>(x.get(), dy.get(), rows, width, block, mask.get(), groups, active,
                           dx.get(), dm.get());
      return llvm::Error::success();
    });
  }
  if (auto r = dyn_cast<kn::Relu2Op>(op)) {
    auto u = ref(r.getInput()), mask = ref(r.getMask()), a = ref(r.getResult());
    auto [rows, f] = matrixView(r.getInput().getType());
    bool dense = r.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), f, 1) : f;
      cpu::relu2Forward<T>(u.get(), rows, f, mask.get(), active, a.get());
      return llvm::Error::success();
    });
  }
  if (auto r = dyn_cast<kn::Relu2GradOp>(op)) {
    auto u = ref(r.getInput()), mask = ref(r.getMask()), da = ref(r.getResultGrad());
    auto du = ref(r.getInputGrad()), dm = ref(r.getMaskGrad());
    auto [rows, f] = matrixView(r.getInput().getType());
    bool dense = r.getPrefixDense();
    return Step([=]() {
      int64_t active = dense ? activeOf(mask.get(), f, 1) : f;
      cpu::relu2Backward<T>(u.get(), rows, f, mask.get(), active, da.get(), du.get(), dm.get());
      return llvm::Error::success();
    });
  }
  if (auto g = dyn_cast<kn::DepthGateOp>(op)) {
    auto h = ref(g.getResidual()), blk = ref(g.getBlock()), keep = ref(g.getKeep());
    auto out = ref(g.getResult());
    int64_t n = numel(g.getResult().getType()), layer = g.getLayer().value_or(0);
    return Step([=]() {
      T gamma = keep.present ? keep.get()[layer] : T(1);
      cpu::depthGateForward<T>(h.get(), blk.get(), n, gamma, out.get());
      return llvm::Error::success();
    });
  }
  if (auto g = dyn_cast<kn::DepthGateGradOp>(op)) {
    auto blk = ref(g.getBlock()), dy = ref(g.getResultGrad()), keep = ref(g.getKeep());
    auto db = ref(g.getBlockGrad()), dk = ref(g.getKeepGrad());
    int64_t n = numel(g.getBlock().getType()), layer = g.getLayer().value_or(0);
    int64_t layers = keep.present ? numel(g.getKeep().getType()) : 0;
    return Step([=]() {
      T gamma = keep.present ? keep.get()[layer] : T(1), dgamma = 0;
      cpu::depthGateBackward<T>(blk.get(), dy.get(), n, gamma, db.get(), &dgamma);
      if (dk.present) {
        std::fill(dk.get(), dk.get() + layers, T(0));
        dk.get()[layer] = dgamma;
      }
      return llvm::Error::success();
    });
  }
  if (auto c = dyn_cast<kn::CrossEntropyOp>(op)) {
    auto logits = ref(c.getLogits()), out = ref(c.getResult());
    auto tgt = iref(c.getTargets());
    auto [rows, vocab] = matrixView(c.getLogits().getType());
    int64_t ignore = c.getIgnoreIndex();
    return Step([=]() {
      *out.get() = cpu::crossEntropyForward<T>(logits.get(), rows, vocab, tgt.get(), ignore);
      return llvm::Error::success();
    });
  }
  if (auto c = dyn_cast<kn::CrossEntropyGradOp>(op)) {
    auto logits = ref(c.getLogits()), dl = ref(c.getResultGrad()), g = ref(c.getLogitsGrad());
    auto tgt = iref(c.getTargets());
    auto [rows, vocab] = matrixView(c.getLogits().getType());
    int64_t ignore = c.getIgnoreIndex();
    return Step([=]() {
      cpu::crossEntropyBackward<T>(logits.get(), rows, vocab, tgt.get(), ignore, *dl.get(),
                                   g.get());
      return llvm::Error::success();
    });
  }
  if (auto k = dyn_cast<kn::KLOp>(op)) {
    auto s = ref(k.getStudent()), t = ref(k.getTeacher()), out = ref(k.getResult());
    auto [rows, vocab] = matrixView(k.getStudent().getType());
    double temp = k.getTemperature().convertToDouble();
    return Step([=]() {
      *out.get() = cpu::klForward<T>(s.get(), t.get(), rows, vocab, temp);
      return llvm::Error::success();
    });
  }
  if (auto k = dyn_cast<kn::KLGradOp>(op)) {
    auto s = ref(k.getStudent()), t = ref(k.getTeacher()), dl = ref(k.getResultGrad());
    auto g = ref(k.getStudentGrad());
    auto [rows, vocab] = matrixView(k.getStudent().getType());
    double temp = k.getTemperature().convertToDouble();
    return Step([=]() {
      cpu::klBackward<T>(s.get(), t.get(), rows, vocab, temp, *dl.get(), g.get());
      return llvm::Error::success();
    });
  }
  if (auto a = dyn_cast<kn::AddOp>(op)) {
    std::vector<Ref<T>> ins;
    for (Value v : a.getInputs())
      ins.push_back(ref(v));
    auto out = ref(a.getResult());
    int64_t n = numel(a.getResult().getType());
    return Step([=]() {
      cpu::add<T>(ins[0].get(), ins[1].get(), n, out.get());
      for (size_t i = 2; i < ins.size(); ++i)
        cpu::add<T>(out.get(), ins[i].get(), n, out.get());
      return llvm::Error::success();
    });
  }
  if (auto m = dyn_cast<kn::MulOp>(op)) {
    auto l = ref(m.getLhs()), r = ref(m.getRhs()), out = ref(m.getResult());
    int64_t n = numel(m.getResult().getType());
    return Step([=]() {
      for (int64_t i = 0; i < n; ++i)
        out.get()[i] = l.get()[i] * r.get()[i];
      return llvm::Error::success();
    });
  }

  if (auto sq = dyn_cast<kn::SquaredNormOp>(op)) {
    std::vector<std::pair<Ref<T>, int64_t>> ins;
    for (Value v : sq.getInputs())
      ins.push_back({ref(v), numel(v.getType())});
    Ref<double> out;
    out.slots = &slots;
    out.index = slot(sq.getResult());
    out.present = true;
    return Step([=]() {
      // Fixed-size blocks summed in order: the same total whatever the thread count.
      double total = 0;
      for (auto &[r, n] : ins) {
        const T *p = r.get();
        constexpr int64_t block = 4096;
        int64_t blocks = (n + block - 1) / block;
        std::vector<double> parts(blocks, 0.0);
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
          double acc = 0;
          for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i)
            acc += double(p[i]) * double(p[i]);
          parts[b] = acc;
        }
        for (double v : parts)
          total += v;
      }
      *out.get() = total;
      return llvm::Error::success();
    });
  }
  if (auto a = dyn_cast<kn::AdamWOp>(op)) {
    auto p = ref(a.getParam()), g = ref(a.getGrad()), m = ref(a.getExpAvg());
    auto v = ref(a.getExpAvgSq());
    Ref<double> hyper;
    hyper.slots = &slots;
    hyper.index = slot(a.getHyper());
    hyper.present = true;
    int64_t n = numel(a.getParam().getType());
    double b1 = a.getBeta1().convertToDouble(), b2 = a.getBeta2().convertToDouble();
    double eps = a.getEpsilon().convertToDouble(), wd = a.getWeightDecay().convertToDouble();
    return Step([=]() {
      const double *h = hyper.get();
      cpu::adamw<T>(p.get(), g.get(), m.get(), v.get(), n, h[0], b1, b2, eps, wd,
                    static_cast<int64_t>(h[1]), h[2]);
      return llvm::Error::success();
    });
  }

  // Mamba2.
  auto mambaShape = [&](auto mop, Value activation) {
    cpu::MambaShape s;
    auto t = cast<RankedTensorType>(activation.getType());
    s.batch = t.getDimSize(0);
    s.length = t.getDimSize(1);
    s.heads = mop.getNumHeads();
    s.headDim = mop.getHeadDim();
    s.groups = mop.getNGroups();
    s.stateSize = mop.getStateSize();
    s.hActive = s.heads / s.groups;
    s.pActive = s.headDim;
    return s;
  };
  // Run-time extents of the Mamba masks (heads per group, channels).
  auto mambaExtents = [](cpu::MambaShape s, bool dense, const T *heads, const T *chans) {
    if (dense && heads)
      s.hActive = activeOf(heads, s.heads, s.groups);
    if (dense && chans)
      s.pActive = activeOf(chans, s.headDim, 1);
    return s;
  };
  if (auto m = dyn_cast<kn::MambaMaskOp>(op)) {
    cpu::MambaShape s0;
    s0.heads = m.getNumHeads();
    s0.headDim = m.getHeadDim();
    s0.groups = m.getNGroups();
    s0.stateSize = m.getStateSize();
    s0.hActive = s0.heads / s0.groups;
    s0.pActive = s0.headDim;
    auto heads = ref(m.getHeads()), chans = ref(m.getChannels()), out = ref(m.getResult());
    bool dense = m.getPrefixDense();
    return Step([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), chans.get());
      cpu::mambaMaskExpand<T>(s, heads.get(), chans.get(), out.get());
      return llvm::Error::success();
    });
  }
  if (auto m = dyn_cast<kn::MambaConvOp>(op)) {
    cpu::MambaShape s0 = mambaShape(m, m.getProj());
    s0.convKernel = cast<RankedTensorType>(m.getConvWeight().getType()).getDimSize(1);
    auto proj = ref(m.getProj()), w = ref(m.getConvWeight()), b = ref(m.getConvBias());
    auto mzx = ref(m.getMzx()), out = ref(m.getResult());
    bool dense = m.getPrefixDense();
    // Extents come from the expanded multiplier: a head is active when any channel is.
    int64_t P = s0.headDim, H = s0.heads, G = s0.groups;
    return Step([=]() {
      cpu::MambaShape s = s0;
      if (dense && mzx.present) {
        const T *z = mzx.get();
        s.pActive = activeOf(z, P, 1);
        int64_t per = H / G, ha = 0;
        for (int64_t h = 0; h < per; ++h)
          if (z[h * P] != T(0))
            ha = h + 1;
        s.hActive = ha;
      }
      cpu::mambaConvForward<T>(s, proj.get(), w.get(), b.get(), mzx.get(), out.get());
      return llvm::Error::success();
    });
  }
  if (auto m = dyn_cast<kn::MambaScanOp>(op)) {
    cpu::MambaShape s0 = mambaShape(m, m.getProj());
    auto proj = ref(m.getProj()), xbc = ref(m.getXbc()), dtb = ref(m.getDtBias());
    auto alog = ref(m.getALog()), d = ref(m.getDSkip()), heads = ref(m.getHeads());
    auto y = ref(m.getResult());
    int64_t chunk = m.getChunk();
    bool dense = m.getPrefixDense();
    // The channel extent is not visible here; the scan computes all channels of active heads
    // (inactive channels have x = 0, so their outputs are exactly 0).
    return Step([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), nullptr);
      cpu::mambaScanForward<T>(s, proj.get(), xbc.get(), dtb.get(), alog.get(), d.get(),
                               heads.get(), chunk, y.get());
      return llvm::Error::success();
    });
  }
  if (auto m = dyn_cast<kn::MambaGateNormOp>(op)) {
    cpu::MambaShape s0 = mambaShape(m, m.getProj());
    auto y = ref(m.getY()), proj = ref(m.getProj()), w = ref(m.getNormWeight());
    auto mzx = ref(m.getMzx()), heads = ref(m.getHeads()), chans = ref(m.getChannels());
    auto out = ref(m.getResult());
    double eps = m.getEpsilon().convertToDouble();
    bool dense = m.getPrefixDense();
    int64_t H = s0.heads, P = s0.headDim;
    return Step([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), chans.get());
      T phi = (heads.present ? heads.get()[H] : T(1)) * (chans.present ? chans.get()[P] : T(1));
      T sigma =
          (heads.present ? heads.get()[H + 1] : T(1)) * (chans.present ? chans.get()[P + 1] : T(1));
      cpu::mambaGateNormForward<T>(s, y.get(), proj.get(), mzx.get(), w.get(), eps, phi, sigma,
                                   out.get());
      return llvm::Error::success();
    });
  }
  if (auto m = dyn_cast<kn::MambaInnerGradOp>(op)) {
    cpu::MambaShape s0 = mambaShape(m, m.getProj());
    s0.convKernel = cast<RankedTensorType>(m.getConvWeight().getType()).getDimSize(1);
    auto proj = ref(m.getProj()), xbc = ref(m.getXbc()), y = ref(m.getY());
    auto cw = ref(m.getConvWeight()), cb = ref(m.getConvBias()), dtb = ref(m.getDtBias());
    auto alog = ref(m.getALog()), dsk = ref(m.getDSkip()), nw = ref(m.getNormWeight());
    auto dout = ref(m.getResultGrad()), heads = ref(m.getHeads()), chans = ref(m.getChannels());
    auto dproj = ref(m.getProjGrad()), dcw = ref(m.getConvWeightGrad());
    auto dcb = ref(m.getConvBiasGrad()), ddtb = ref(m.getDtBiasGrad());
    auto dalog = ref(m.getALogGrad()), dd = ref(m.getDSkipGrad());
    auto dnw = ref(m.getNormWeightGrad()), dh = ref(m.getHeadsGrad());
    auto dc = ref(m.getChannelsGrad());
    double eps = m.getEpsilon().convertToDouble();
    int64_t chunk = m.getChunk();
    bool dense = m.getPrefixDense(), masked = heads.present || chans.present;
    int64_t rows = s0.rows(), H = s0.heads, P = s0.headDim, HP = s0.hp();
    // Kernel-private intermediates: the cotangents of y, of the conv output, and of the
    // multipliers (the expanded mzx itself is recomputed here).
    T *dY = static_cast<T *>(scratch(sizeof(T) * rows * HP));
    T *dXbc = static_cast<T *>(scratch(sizeof(T) * rows * s0.convChannels()));
    T *mzx = masked ? static_cast<T *>(scratch(sizeof(T) * HP)) : nullptr;
    T *dMzx = masked ? static_cast<T *>(scratch(sizeof(T) * HP)) : nullptr;
    T *dHeadM = static_cast<T *>(scratch(sizeof(T) * H));
    return Step([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), chans.get());
      const T *hm = heads.get(), *cm = chans.get();
      if (masked) {
        cpu::mambaMaskExpand<T>(s, hm, cm, mzx);
        std::fill(dMzx, dMzx + HP, T(0));
      }
      T phi = (hm ? hm[H] : T(1)) * (cm ? cm[P] : T(1));
      T sigma = (hm ? hm[H + 1] : T(1)) * (cm ? cm[P + 1] : T(1));
      T dPhi = 0, dSigma = 0;
      std::fill(dproj.get(), dproj.get() + rows * s.projWidth(), T(0));
      std::fill(dXbc, dXbc + rows * s.convChannels(), T(0));
      std::fill(dHeadM, dHeadM + H, T(0));
      cpu::mambaGateNormBackward<T>(s, y.get(), proj.get(), mzx, nw.get(), eps, phi, sigma,
                                    dout.get(), dY, dproj.get(), dnw.get(), dMzx, &dPhi, &dSigma);
      cpu::mambaScanBackward<T>(s, proj.get(), xbc.get(), dtb.get(), alog.get(), dsk.get(), hm,
                                chunk, dY, dXbc, dproj.get(), ddtb.get(), dalog.get(), dd.get(),
                                hm ? dHeadM : nullptr);
      cpu::mambaConvBackward<T>(s, proj.get(), cw.get(), cb.get(), mzx, dXbc, dproj.get(),
                                dcw.get(), dcb.get(), dMzx);
      if (masked) {
        cpu::mambaMaskBackward<T>(s, hm, cm, dMzx, dPhi, dSigma, dh.get(), dc.get());
        if (dh.present)
          for (int64_t h = 0; h < H; ++h)
            dh.get()[h] += dHeadM[h];
      }
      return llvm::Error::success();
    });
  }

  // Attention.
  if (auto a = dyn_cast<kn::AttentionOp>(op)) {
    auto t = cast<RankedTensorType>(a.getQ().getType());
    cpu::AttentionShape s0{t.getDimSize(0),
                           t.getDimSize(1),
                           static_cast<int64_t>(a.getNumHeads()),
                           static_cast<int64_t>(a.getNumKvHeads()),
                           static_cast<int64_t>(a.getHeadDim()),
                           0};
    s0.qActive = s0.heads / s0.kvHeads;
    auto q = ref(a.getQ()), k = ref(a.getK()), v = ref(a.getV()), heads = ref(a.getHeads());
    auto out = ref(a.getResult()), lse = ref(a.getLse());
    bool dense = a.getPrefixDense();
    return Step([=]() {
      cpu::AttentionShape s = s0;
      if (dense && heads.present)
        s.qActive = activeOf(heads.get(), s.heads, s.kvHeads);
      cpu::attentionForward<T>(s, q.get(), k.get(), v.get(), out.get(), lse.get());
      return llvm::Error::success();
    });
  }
  if (auto a = dyn_cast<kn::AttentionGradOp>(op)) {
    auto t = cast<RankedTensorType>(a.getQ().getType());
    cpu::AttentionShape s0{t.getDimSize(0),
                           t.getDimSize(1),
                           static_cast<int64_t>(a.getNumHeads()),
                           static_cast<int64_t>(a.getNumKvHeads()),
                           static_cast<int64_t>(a.getHeadDim()),
                           0};
    s0.qActive = s0.heads / s0.kvHeads;
    auto q = ref(a.getQ()), k = ref(a.getK()), v = ref(a.getV()), o = ref(a.getOut());
    auto lse = ref(a.getLse()), da = ref(a.getResultGrad()), heads = ref(a.getHeads());
    auto dq = ref(a.getQGrad()), dk = ref(a.getKGrad()), dv = ref(a.getVGrad());
    bool dense = a.getPrefixDense();
    return Step([=]() {
      cpu::AttentionShape s = s0;
      if (dense && heads.present)
        s.qActive = activeOf(heads.get(), s.heads, s.kvHeads);
      cpu::attentionBackward<T>(s, q.get(), k.get(), v.get(), o.get(), lse.get(), da.get(),
                                dq.get(), dk.get(), dv.get());
      return llvm::Error::success();
    });
  }
  return fail(op, "has no CPU kernel");
}

llvm::Expected<HostStep> HostStep::create(Operation *op, OwningOpRef<ModuleOp> &module) {
  auto host = dyn_cast<kn::HostOp>(op);
  if (!host)
    return llvm::createStringError("%s is not a kernel.host step",
                                   op->getName().getStringRef().str().c_str());
  // The region becomes a function of the host module, evaluated by the float64 interpreter.
  MLIRContext *ctx = host.getContext();
  if (!module)
    module = ModuleOp::create(UnknownLoc::get(ctx));
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(module->getBody());
  Block &body = host.getBody().front();
  SmallVector<Type> resultTypes;
  for (Value v : cast<kn::YieldOp>(body.getTerminator()).getValues())
    resultTypes.push_back(v.getType());
  size_t index = std::distance(module->getBody()->begin(), module->getBody()->end());
  HostStep step;
  step.fn = func::FuncOp::create(b, host.getLoc(), "host" + std::to_string(index),
                                 b.getFunctionType(body.getArgumentTypes(), resultTypes));
  Block *entry = step.fn.addEntryBlock();
  IRMapping map;
  for (auto [from, to] : llvm::zip(body.getArguments(), entry->getArguments()))
    map.map(from, to);
  b.setInsertionPointToStart(entry);
  for (Operation &inner : body.without_terminator())
    b.clone(inner, map);
  SmallVector<Value> rets;
  for (Value v : cast<kn::YieldOp>(body.getTerminator()).getValues())
    rets.push_back(map.lookup(v));
  func::ReturnOp::create(b, host.getLoc(), rets);

  auto port = [&](Value v) {
    auto t = cast<RankedTensorType>(v.getType());
    return Port{std::vector<int64_t>(t.getShape().begin(), t.getShape().end()), t.getElementType()};
  };
  for (Value v : host.getInputs())
    step.ins.push_back(port(v));
  for (Value v : host.getResults())
    step.outs.push_back(port(v));
  return step;
}

llvm::Error HostStep::run(llvm::ArrayRef<const void *> inputs,
                          llvm::ArrayRef<void *> outputs) const {
  if (inputs.size() != ins.size() || outputs.size() != outs.size())
    return llvm::createStringError("host step: %zu inputs and %zu outputs, expected %zu and %zu",
                                   inputs.size(), outputs.size(), ins.size(), outs.size());
  std::vector<ref::Tensor> args;
  for (auto [p, data] : llvm::zip(ins, inputs)) {
    ref::Tensor t(p.shape);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (p.element.isF32())
        t[i] = static_cast<const float *>(data)[i];
      else if (p.element.isF64())
        t[i] = static_cast<const double *>(data)[i];
      else if (p.element.isInteger(32))
        t[i] = static_cast<const int32_t *>(data)[i];
      else if (p.element.isInteger(64))
        t[i] = static_cast<double>(static_cast<const int64_t *>(data)[i]);
      else
        t[i] = static_cast<const uint8_t *>(data)[i] != 0;
    }
    args.push_back(std::move(t));
  }
  auto results = ref::evaluate(fn, args);
  if (!results)
    return results.takeError();
  for (auto [p, r, data] : llvm::zip(outs, *results, outputs)) {
    for (int64_t i = 0; i < r.numel(); ++i) {
      if (p.element.isF32())
        static_cast<float *>(data)[i] = static_cast<float>(r[i]);
      else
        static_cast<double *>(data)[i] = r[i];
    }
  }
  return llvm::Error::success();
}

llvm::Expected<Step> CpuProgram::Impl::bindHost(kn::HostOp host) {
  auto step = HostStep::create(host, hostModule);
  if (!step)
    return step.takeError();
  std::vector<unsigned> ins, outs;
  for (Value v : host.getInputs())
    ins.push_back(slot(v));
  for (Value v : host.getResults())
    outs.push_back(slot(v));
  std::vector<void *> *table = &slots;
  return Step([=, step = std::move(*step)]() -> llvm::Error {
    std::vector<const void *> in;
    std::vector<void *> out;
    for (unsigned s : ins)
      in.push_back((*table)[s]);
    for (unsigned s : outs)
      out.push_back((*table)[s]);
    return step.run(in, out);
  });
}

llvm::Expected<Step> CpuProgram::Impl::skipWhenDropped(Operation *op, int64_t layer, Step run) {
  if (keepSlot < 0) {
    func.walk([&](kn::DepthGateOp gate) {
      if (gate.getKeep() && keepSlot < 0) {
        keepSlot = static_cast<int>(slot(gate.getKeep()));
        keepIsDouble = gate.getKeep().getType().getElementType().isF64();
      }
    });
    if (keepSlot < 0)
      return fail(op, "is gated by a layer but the program has no depth gate");
  }
  // When the layer is dropped, the op's results are zero (a GEMM accumulating into `acc`
  // leaves acc's value): its block contributes 0 * block forward and gets a 0 cotangent.
  struct Out {
    unsigned slot;
    int64_t bytes;
    int accSlot;
  };
  std::vector<Out> outs;
  for (Value r : op->getResults()) {
    auto t = cast<RankedTensorType>(r.getType());
    int acc = -1;
    if (auto g = dyn_cast<kn::GemmOp>(op); g && g.getAcc())
      acc = static_cast<int>(slot(g.getAcc()));
    outs.push_back({slot(r), t.getNumElements() * (t.getElementType().isF64() ? 8 : 4), acc});
  }
  std::vector<void *> *table = &slots;
  unsigned keep = keepSlot;
  bool f64 = keepIsDouble;
  return Step([=]() -> llvm::Error {
    const void *k = (*table)[keep];
    double gamma =
        f64 ? static_cast<const double *>(k)[layer] : static_cast<const float *>(k)[layer];
    if (gamma != 0.0)
      return run();
    for (const Out &o : outs) {
      void *dst = (*table)[o.slot];
      if (o.accSlot >= 0) {
        if ((*table)[o.accSlot] != dst)
          std::memcpy(dst, (*table)[o.accSlot], o.bytes);
      } else {
        std::memset(dst, 0, o.bytes);
      }
    }
    return llvm::Error::success();
  });
}

CpuProgram::CpuProgram(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
CpuProgram::~CpuProgram() = default;

llvm::Expected<std::unique_ptr<CpuProgram>> CpuProgram::create(func::FuncOp func) {
  auto impl = std::make_unique<Impl>();
  impl->func = func;
  auto arenaAttr = func->getAttrOfType<IntegerAttr>("kernel.arena_bytes");
  if (!arenaAttr)
    return llvm::createStringError("@%s has no memory plan (run kernel-plan-memory first)",
                                   func.getSymName().str().c_str());
  impl->arenaBytes = arenaAttr.getInt();
  // Page-aligned, touched once here so that no step pays for first-touch page faults.
  int64_t bytes = std::max<int64_t>(4096, (impl->arenaBytes + 4095) / 4096 * 4096);
  impl->arena.reset(std::aligned_alloc(4096, bytes));
  if (!impl->arena)
    return llvm::createStringError("cannot allocate the %lld-byte arena",
                                   static_cast<long long>(bytes));
  std::memset(impl->arena.get(), 0, bytes);
  char *base = static_cast<char *>(impl->arena.get());

  for (Value arg : func.getArguments())
    impl->argSlots.push_back(impl->slot(arg));
  for (Operation &op : func.front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      for (Value v : ret.getOperands())
        impl->resultSlots.push_back(impl->slot(v));
      continue;
    }
    if (auto cst = dyn_cast<arith::ConstantOp>(op)) {
      auto dense = dyn_cast<DenseElementsAttr>(cst.getValue());
      auto type = dyn_cast<RankedTensorType>(cst.getType());
      if (!dense || !type || !isa<FloatType>(type.getElementType()))
        return impl->fail(&op, "only float tensor constants are supported");
      int64_t n = type.getNumElements();
      bool f64 = type.getElementType().isF64();
      char *data = static_cast<char *>(impl->scratch(n * (f64 ? 8 : 4)));
      int64_t i = 0;
      for (APFloat v : dense.getValues<APFloat>()) {
        if (f64)
          reinterpret_cast<double *>(data)[i++] = v.convertToDouble();
        else
          reinterpret_cast<float *>(data)[i++] = static_cast<float>(v.convertToDouble());
      }
      impl->slots[impl->slot(cst)] = data;
      continue;
    }
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>("kernel.offsets");
    if (op.getNumResults() > 0) {
      if (!offsets || offsets.size() != static_cast<int64_t>(op.getNumResults()))
        return impl->fail(&op, "has no memory plan offsets");
      for (auto [r, offset] : llvm::zip(op.getResults(), offsets.asArrayRef()))
        impl->slots[impl->slot(r)] = base + offset;
    }
    llvm::Expected<Step> step = isa<kn::HostOp>(op)     ? impl->bindHost(cast<kn::HostOp>(op))
                                : computesInDouble(&op) ? impl->bind<double>(&op)
                                                        : impl->bind<float>(&op);
    if (!step)
      return step.takeError();
    if (auto layer = op.getAttrOfType<IntegerAttr>("kernel.layer")) {
      auto skippable = impl->skipWhenDropped(&op, layer.getInt(), std::move(*step));
      if (!skippable)
        return skippable.takeError();
      step = std::move(*skippable);
    }
    impl->steps.push_back(std::move(*step));
    impl->stepNames.push_back(op.getName().getStringRef().str());
    impl->stepOps.push_back(&op);
  }
  impl->stepTimes.assign(impl->steps.size(), 0.0);
  return std::unique_ptr<CpuProgram>(new CpuProgram(std::move(impl)));
}

llvm::Error CpuProgram::run(llvm::ArrayRef<const void *> args) {
  if (args.size() != impl->argSlots.size())
    return llvm::createStringError("@%s takes %zu arguments, got %zu",
                                   impl->func.getSymName().str().c_str(), impl->argSlots.size(),
                                   args.size());
  for (auto [slot, arg] : llvm::zip(impl->argSlots, args))
    impl->slots[slot] = const_cast<void *>(arg);
  for (size_t i = 0; i < impl->steps.size(); ++i) {
    auto start = std::chrono::steady_clock::now();
    if (llvm::Error err = impl->steps[i]())
      return err;
    if (impl->observer)
      impl->observer(impl->stepOps[i]);
    if (impl->profiling)
      impl->stepTimes[i] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return llvm::Error::success();
}

const void *CpuProgram::result(unsigned i) const { return impl->slots[impl->resultSlots[i]]; }
unsigned CpuProgram::numResults() const { return impl->resultSlots.size(); }
int64_t CpuProgram::arenaBytes() const { return impl->arenaBytes; }
void CpuProgram::setProfiling(bool enabled) { impl->profiling = enabled; }
double CpuProgram::gemmFlops() const { return impl->gemmFlops; }
void CpuProgram::setObserver(std::function<void(Operation *)> observer) {
  impl->observer = std::move(observer);
}
const void *CpuProgram::buffer(Value value) const {
  auto it = impl->slotOf.find(value);
  return it == impl->slotOf.end() ? nullptr : impl->slots[it->second];
}
void CpuProgram::resetCounters() { impl->gemmFlops = 0; }

std::vector<std::pair<std::string, double>> CpuProgram::profile() const {
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < impl->steps.size(); ++i)
    out.push_back({impl->stepNames[i], impl->stepTimes[i]});
  return out;
}
