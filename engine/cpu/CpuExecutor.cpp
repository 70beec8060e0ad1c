//===- CpuExecutor.cpp - Run a program function on the CPU -----------------===//
//
// create() binds every step once: a table maps each step kind to a binder that reads the
// step's value types and attributes and returns a closure over buffer slots. Slots hold the
// arena addresses of the memory plan, constants, and the caller's argument pointers (refreshed
// by each run). The table is the CPU runtime's op coverage: a step without a binder, or missing
// an operand or attribute its kernel needs, is an error naming it at create() time.
//
//===----------------------------------------------------------------------===//
#include "engine/cpu/CpuExecutor.h"

#include "lib/codegen/cpu/Kernels.h"
#include "nestor/HostOps.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

using namespace nestor;
using namespace nestor::engine;
namespace pg = nestor::program;

namespace {

using StepFn = std::function<Status()>;

struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};

/// Active entries per group of a hard prefix mask: one past the last nonzero of group 0.
template <typename T> int64_t activeOf(const T *mask, int64_t entries, int64_t groups) {
  int64_t per = entries / groups, active = 0;
  for (int64_t i = 0; i < per; ++i)
    if (mask[i] != T(0))
      active = i + 1;
  return active;
}

/// Contiguous [start, length) runs of a GEMM dimension.
using Runs = cpu::IndexRuns;

/// The maximal runs of nonzero entries of a selection vector of `n` entries.
template <typename T> Runs selectedRuns(const T *select, int64_t n) {
  Runs out;
  for (int64_t i = 0; i < n; ++i) {
    if (select[i] == T(0))
      continue;
    if (!out.empty() && out.back().first + out.back().second == i)
      ++out.back().second;
    else
      out.push_back({i, 1});
  }
  return out;
}

/// A step being bound: typed access to its operands, results and attributes, with errors that
/// name the step.
struct Binding {
  const pg::Function &fn;
  const pg::Step &step;
  std::vector<void *> *slots;
  std::string error;

  std::string where() const { return step.kind() + " at " + step.location(); }
  void fail(const std::string &message) {
    if (error.empty())
      error = where() + ": " + message;
  }
  int32_t operandId(const char *name, bool required) {
    auto it = step.operands().find(name);
    if (it != step.operands().end())
      return it->second;
    if (required)
      fail(std::string("has no operand '") + name + "'");
    return -1;
  }
  int32_t resultId(const char *name, bool required) {
    auto it = step.results().find(name);
    if (it != step.results().end())
      return it->second;
    if (required)
      fail(std::string("has no result '") + name + "'");
    return -1;
  }
  const pg::TensorType &type(int32_t id) const { return fn.values(id).type(); }
  int64_t numel(int32_t id) const { return id < 0 ? 0 : numElements(type(id)); }
  int64_t dim(int32_t id, int i) {
    if (id < 0 || i >= type(id).shape_size()) {
      fail("a value has fewer dimensions than its kernel needs");
      return 1;
    }
    return type(id).shape(i);
  }
  /// [rows, last dim] view of a value. Callers unpack it with std::tie, not a structured
  /// binding, because the kernel lambdas capture the sizes (C++17 forbids capturing bindings).
  std::pair<int64_t, int64_t> matrix(int32_t id) {
    if (id < 0)
      return {0, 0};
    const pg::TensorType &t = type(id);
    if (t.shape_size() == 0)
      return {1, 1};
    int64_t last = t.shape(t.shape_size() - 1);
    return {last == 0 ? 0 : numElements(t) / last, last};
  }
  int64_t intAttr(const char *name, std::optional<int64_t> fallback = std::nullopt) {
    auto it = step.attributes().ints().find(name);
    if (it != step.attributes().ints().end())
      return it->second;
    if (!fallback)
      fail(std::string("has no attribute '") + name + "'");
    return fallback.value_or(0);
  }
  bool flag(const char *name) { return intAttr(name, 0) != 0; }
  double floatAttr(const char *name) {
    auto it = step.attributes().floats().find(name);
    if (it != step.attributes().floats().end())
      return it->second;
    fail(std::string("has no attribute '") + name + "'");
    return 0;
  }
  /// A positive integer attribute (a size the kernel divides by).
  int64_t sizeAttr(const char *name) {
    int64_t v = intAttr(name);
    if (v <= 0)
      fail(std::string("attribute '") + name + "' must be positive");
    return std::max<int64_t>(v, 1);
  }
};

/// Typed access to a value's buffer at run time.
template <typename T> struct Ref {
  std::vector<void *> *slots = nullptr;
  int32_t index = -1;
  bool present() const { return index >= 0; }
  T *get() const { return index >= 0 ? static_cast<T *>((*slots)[index]) : nullptr; }
};

/// A GEMM dimension of `size` and its optional prefix-dense extent mask: `entries` entries in
/// `groups` groups, each covering size / entries consecutive indices.
template <typename T> struct Extent {
  Ref<T> mask;
  int64_t entries = 0, groups = 1, size = 0;
  Runs runs() const {
    if (!mask.present())
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

int64_t nestor::engine::activePrefix(const void *mask, pg::DType dtype, int64_t entries,
                                     int64_t groups) {
  return dtype == pg::F64 ? activeOf(static_cast<const double *>(mask), entries, groups)
                          : activeOf(static_cast<const float *>(mask), entries, groups);
}

struct CpuExecutor::Impl {
  pg::Function fn;
  std::unique_ptr<void, FreeDeleter> arena;
  std::vector<std::unique_ptr<char[]>> owned; // constants and kernel scratch
  std::vector<void *> slots;                  // one per value of fn
  std::vector<StepFn> steps;
  std::vector<double> stepTimes;
  bool profiling = false;
  std::function<void(int)> observer;
  double gemmFlops = 0;

  void *scratch(int64_t bytes) {
    int64_t n = std::max<int64_t>(bytes, 1);
    owned.push_back(std::make_unique<char[]>(n));
    std::memset(owned.back().get(), 0, n);
    return owned.back().get();
  }
  template <typename T> StepFn bind(Binding &b);
  StepFn bindHost(Binding &b);
  StepFn gate(const pg::Step &step, StepFn run);
};

template <typename T> StepFn CpuExecutor::Impl::bind(Binding &b) {
  const std::string &kind = b.step.kind();
  auto ref = [&](const char *name, bool required = true) {
    return Ref<T>{&slots, b.operandId(name, required)};
  };
  auto opt = [&](const char *name) { return ref(name, false); };
  auto out = [&](const char *name, bool required = true) {
    return Ref<T>{&slots, b.resultId(name, required)};
  };
  auto tokens = [&](const char *name) { return Ref<int32_t>{&slots, b.operandId(name, true)}; };
  auto entriesOf = [&](const Ref<T> &mask) { return mask.present() ? b.numel(mask.index) - 2 : 0; };
  auto wrap = [&](auto f) -> StepFn {
    return [f]() {
      f();
      return Status();
    };
  };

  if (kind == "kernel.gemm") {
    auto a = ref("a"), bm = ref("b"), acc = opt("acc"), mask = opt("mask"), c = out("result");
    int64_t ar, ac;
    std::tie(ar, ac) = b.matrix(a.index);
    int64_t br, bc;
    std::tie(br, bc) = b.matrix(bm.index);
    bool ta = b.flag("transpose_a"), tb = b.flag("transpose_b");
    int64_t m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
    int64_t block = b.sizeAttr("mask_block");
    auto mext = opt("m_extent"), next = opt("n_extent"), kext = opt("k_extent");
    Extent<T> em{mext, entriesOf(mext), b.sizeAttr("m_groups"), m};
    Extent<T> en{next, entriesOf(next), b.sizeAttr("n_groups"), n};
    Extent<T> ek{kext, entriesOf(kext), b.sizeAttr("k_groups"), k};
    auto nsel = opt("n_select"), ksel = opt("k_select");
    if (b.numel(c.index) != m * n)
      b.fail("the result does not hold the [M, N] product");
    if ((nsel.present() && b.numel(nsel.index) != n) ||
        (ksel.present() && b.numel(ksel.index) != k))
      b.fail("a selection does not have one entry per index of its dimension");
    double *flops = &gemmFlops;
    return wrap([=]() {
      T *o = c.get();
      const T *pa = a.get(), *pb = bm.get();
      Runs rm = em.runs();
      Runs rn = nsel.present() ? selectedRuns(nsel.get(), n) : en.runs();
      Runs rk = ksel.present() ? selectedRuns(ksel.get(), k) : ek.runs();
      bool restricted = rm.size() != 1 || rn.size() != 1 || rm[0].second != m || rn[0].second != n;
      if (acc.present()) {
        if (acc.get() != o)
          std::memcpy(o, acc.get(), sizeof(T) * m * n);
      } else if (restricted) {
        std::memset(o, 0, sizeof(T) * m * n);
      }
      // One row through the rows of a transposed B with runs on either axis (a decode step's
      // projection at a budget whose heads are no prefix): the row kernel reads each weight
      // row once across its runs, where a BLAS call per run would sweep the rows once per run.
      if (m == 1 && tb && !ta && (rn.size() > 1 || rk.size() > 1)) {
        cpu::gemvRuns<T>(pb, bc, rn, rk, pa, acc.present(), o);
        int64_t nl = 0, kl = 0;
        for (auto r : rn)
          nl += r.second;
        for (auto r : rk)
          kl += r.second;
        *flops += 2.0 * nl * kl;
        if (mask.present())
          cpu::maskForward<T>(o, m, n, block, mask.get(), 1, n / block, o);
        return;
      }
      // One BLAS call per block of active rows x active columns, summed over active K runs.
      for (auto [m0, ml] : rm)
        for (auto [n0, nl] : rn) {
          bool first = !acc.present();
          for (auto [k0, kl] : rk) {
            const T *sa = ta ? pa + k0 * ac + m0 : pa + m0 * ac + k0;
            const T *sb = tb ? pb + n0 * bc + k0 : pb + k0 * bc + n0;
            cpu::gemm<T>(ta, tb, ml, nl, kl, T(1), sa, ac, sb, bc, first ? T(0) : T(1),
                         o + m0 * n + n0, n);
            *flops += 2.0 * ml * nl * kl;
            first = false;
          }
          if (rk.empty() && !acc.present())
            for (int64_t i = 0; i < ml; ++i)
              std::fill_n(o + (m0 + i) * n + n0, nl, T(0));
        }
      if (mask.present())
        cpu::maskForward<T>(o, m, n, block, mask.get(), 1, n / block, o);
    });
  }
  if (kind == "kernel.embed") {
    auto tok = tokens("tokens");
    auto table = ref("table"), mask = opt("mask"), y = out("result");
    int64_t vocab, d;
    std::tie(vocab, d) = b.matrix(table.index);
    int64_t rows = b.numel(tok.index);
    bool dense = b.flag("prefix_dense");
    return [=]() -> Status {
      int64_t active = dense && mask.present() ? activeOf(mask.get(), d, 1) : d;
      int64_t bad =
          cpu::embedForward<T>(tok.get(), rows, table.get(), vocab, d, mask.get(), active, y.get());
      if (bad >= 0)
        return Status::error("kernel.embed: token " + std::to_string(tok.get()[bad]) +
                             " at position " + std::to_string(bad) +
                             " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
      return Status();
    };
  }
  if (kind == "kernel.embed_grad") {
    auto tok = tokens("tokens");
    auto table = ref("table"), mask = opt("mask"), dy = ref("result_grad");
    auto dt = out("table_grad"), dm = out("mask_grad", false);
    int64_t vocab, d;
    std::tie(vocab, d) = b.matrix(table.index);
    int64_t rows = b.numel(tok.index);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense && mask.present() ? activeOf(mask.get(), d, 1) : d;
      cpu::embedBackward<T>(tok.get(), rows, table.get(), vocab, d, mask.get(), active, dy.get(),
                            dt.get(), dm.get());
    });
  }
  if (kind == "kernel.rmsnorm") {
    auto x = ref("input"), w = ref("weight"), mask = opt("mask"), y = out("result");
    int64_t rows, d;
    std::tie(rows, d) = b.matrix(x.index);
    double eps = b.floatAttr("epsilon");
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense && mask.present() ? activeOf(mask.get(), d, 1) : d;
      cpu::rmsnormForward<T>(x.get(), rows, d, w.get(), eps, mask.get(), active, y.get());
    });
  }
  if (kind == "kernel.rmsnorm_grad") {
    auto x = ref("input"), w = ref("weight"), mask = opt("mask"), dy = ref("result_grad");
    auto dx = out("input_grad"), dw = out("weight_grad"), dm = out("mask_grad", false);
    int64_t rows, d;
    std::tie(rows, d) = b.matrix(x.index);
    double eps = b.floatAttr("epsilon");
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense && mask.present() ? activeOf(mask.get(), d, 1) : d;
      cpu::rmsnormBackward<T>(x.get(), rows, d, w.get(), eps, mask.get(), active, dy.get(),
                              dx.get(), dw.get(), dm.get());
    });
  }
  if (kind == "kernel.mask") {
    auto x = ref("input"), mask = ref("mask"), y = out("result");
    int64_t rows, width;
    std::tie(rows, width) = b.matrix(x.index);
    int64_t block = b.sizeAttr("block"), groups = b.sizeAttr("groups"), entries = entriesOf(mask);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense ? activeOf(mask.get(), entries, groups) : entries / groups;
      cpu::maskForward<T>(x.get(), rows, width, block, mask.get(), groups, active, y.get());
    });
  }
  if (kind == "kernel.mask_grad") {
    auto x = ref("input"), mask = ref("mask"), dy = ref("result_grad");
    auto dx = out("input_grad"), dm = out("mask_grad");
    int64_t rows, width;
    std::tie(rows, width) = b.matrix(x.index);
    int64_t block = b.sizeAttr("block"), groups = b.sizeAttr("groups"), entries = entriesOf(mask);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense ? activeOf(mask.get(), entries, groups) : entries / groups;
      cpu::maskBackward<T>(x.get(), dy.get(), rows, width, block, mask.get(), groups, active,
                           dx.get(), dm.get());
    });
  }
  if (kind == "kernel.relu2") {
    auto u = ref("input"), mask = opt("mask"), a = out("result");
    int64_t rows, f;
    std::tie(rows, f) = b.matrix(u.index);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense && mask.present() ? activeOf(mask.get(), f, 1) : f;
      cpu::relu2Forward<T>(u.get(), rows, f, mask.get(), active, a.get());
    });
  }
  if (kind == "kernel.relu2_grad") {
    auto u = ref("input"), mask = opt("mask"), da = ref("result_grad");
    auto du = out("input_grad"), dm = out("mask_grad", false);
    int64_t rows, f;
    std::tie(rows, f) = b.matrix(u.index);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      int64_t active = dense && mask.present() ? activeOf(mask.get(), f, 1) : f;
      cpu::relu2Backward<T>(u.get(), rows, f, mask.get(), active, da.get(), du.get(), dm.get());
    });
  }
  if (kind == "kernel.depth_gate") {
    auto h = ref("residual"), blk = ref("block"), keep = opt("keep"), y = out("result");
    int64_t n = b.numel(y.index), layer = b.intAttr("layer", 0);
    if (keep.present() && (layer < 0 || layer >= b.numel(keep.index)))
      b.fail("layer " + std::to_string(layer) + " is outside the keep vector");
    return wrap([=]() {
      T gamma = keep.present() ? keep.get()[layer] : T(1);
      cpu::depthGateForward<T>(h.get(), blk.get(), n, gamma, y.get());
    });
  }
  if (kind == "kernel.depth_gate_grad") {
    auto blk = ref("block"), dy = ref("result_grad"), keep = opt("keep");
    auto db = out("block_grad"), dk = out("keep_grad", false);
    int64_t n = b.numel(blk.index), layer = b.intAttr("layer", 0);
    int64_t layers = keep.present() ? b.numel(keep.index) : 0;
    if (keep.present() && (layer < 0 || layer >= layers))
      b.fail("layer " + std::to_string(layer) + " is outside the keep vector");
    return wrap([=]() {
      T gamma = keep.present() ? keep.get()[layer] : T(1), dgamma = 0;
      cpu::depthGateBackward<T>(blk.get(), dy.get(), n, gamma, db.get(), &dgamma);
      if (dk.present()) {
        std::fill(dk.get(), dk.get() + layers, T(0));
        dk.get()[layer] = dgamma;
      }
    });
  }
  if (kind == "kernel.cross_entropy") {
    auto logits = ref("logits"), y = out("result");
    auto tgt = tokens("targets");
    int64_t rows, vocab;
    std::tie(rows, vocab) = b.matrix(logits.index);
    int64_t ignore = b.intAttr("ignore_index");
    return wrap([=]() {
      *y.get() = cpu::crossEntropyForward<T>(logits.get(), rows, vocab, tgt.get(), ignore);
    });
  }
  if (kind == "kernel.cross_entropy_grad") {
    auto logits = ref("logits"), dl = ref("result_grad"), g = out("logits_grad");
    auto tgt = tokens("targets");
    int64_t rows, vocab;
    std::tie(rows, vocab) = b.matrix(logits.index);
    int64_t ignore = b.intAttr("ignore_index");
    return wrap([=]() {
      cpu::crossEntropyBackward<T>(logits.get(), rows, vocab, tgt.get(), ignore, *dl.get(),
                                   g.get());
    });
  }
  if (kind == "kernel.kl") {
    auto s = ref("student"), t = ref("teacher"), y = out("result");
    int64_t rows, vocab;
    std::tie(rows, vocab) = b.matrix(s.index);
    double temp = b.floatAttr("temperature");
    return wrap([=]() { *y.get() = cpu::klForward<T>(s.get(), t.get(), rows, vocab, temp); });
  }
  if (kind == "kernel.kl_grad") {
    auto s = ref("student"), t = ref("teacher"), dl = ref("result_grad");
    auto g = out("student_grad");
    int64_t rows, vocab;
    std::tie(rows, vocab) = b.matrix(s.index);
    double temp = b.floatAttr("temperature");
    return wrap(
        [=]() { cpu::klBackward<T>(s.get(), t.get(), rows, vocab, temp, *dl.get(), g.get()); });
  }
  if (kind == "kernel.add") {
    std::vector<Ref<T>> ins;
    for (int32_t id : b.step.inputs())
      ins.push_back(Ref<T>{&slots, id});
    auto y = out("result");
    int64_t n = b.numel(y.index);
    if (ins.size() < 2)
      b.fail("needs at least two inputs");
    return wrap([=]() {
      cpu::add<T>(ins[0].get(), ins[1].get(), n, y.get());
      for (size_t i = 2; i < ins.size(); ++i)
        cpu::add<T>(y.get(), ins[i].get(), n, y.get());
    });
  }
  if (kind == "kernel.mul") {
    auto l = ref("lhs"), r = ref("rhs"), y = out("result");
    int64_t n = b.numel(y.index);
    return wrap([=]() {
      for (int64_t i = 0; i < n; ++i)
        y.get()[i] = l.get()[i] * r.get()[i];
    });
  }
  if (kind == "kernel.squared_norm") {
    std::vector<std::pair<Ref<T>, int64_t>> ins;
    for (int32_t id : b.step.inputs())
      ins.push_back({Ref<T>{&slots, id}, b.numel(id)});
    Ref<double> y{&slots, b.resultId("result", true)};
    return wrap([=]() {
      // Fixed-size blocks summed in order: the same total whatever the thread count.
      double total = 0;
      for (auto &in : ins) {
        const T *p = in.first.get();
        int64_t n = in.second;
        constexpr int64_t block = 4096;
        int64_t blocks = (n + block - 1) / block;
        std::vector<double> parts(blocks, 0.0);
#pragma omp parallel for schedule(static)
        for (int64_t bi = 0; bi < blocks; ++bi) {
          double acc = 0;
          for (int64_t i = bi * block; i < std::min(n, (bi + 1) * block); ++i)
            acc += double(p[i]) * double(p[i]);
          parts[bi] = acc;
        }
        for (double v : parts)
          total += v;
      }
      *y.get() = total;
    });
  }
  if (kind == "kernel.adamw") {
    auto p = ref("param"), g = ref("grad"), m = ref("exp_avg"), v = ref("exp_avg_sq");
    Ref<double> hyper{&slots, b.operandId("hyper", true)};
    int64_t n = b.numel(p.index);
    double b1 = b.floatAttr("beta1"), b2 = b.floatAttr("beta2");
    double eps = b.floatAttr("epsilon"), wd = b.floatAttr("weight_decay");
    return wrap([=]() {
      const double *h = hyper.get();
      cpu::adamw<T>(p.get(), g.get(), m.get(), v.get(), n, h[0], b1, b2, eps, wd,
                    static_cast<int64_t>(h[1]), h[2]);
    });
  }

  // Mamba2.
  auto mambaShape = [&](int32_t activation) {
    cpu::MambaShape s;
    s.batch = b.dim(activation, 0);
    s.length = b.dim(activation, 1);
    s.heads = b.sizeAttr("num_heads");
    s.headDim = b.sizeAttr("head_dim");
    s.groups = b.sizeAttr("n_groups");
    s.stateSize = b.sizeAttr("state_size");
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
  // The extents from the expanded multiplier mzx: a head is active when any channel is.
  auto mambaExtentsOfMultiplier = [](cpu::MambaShape s, const T *z) {
    int64_t P = s.headDim, per = s.heads / s.groups, ha = 0;
    s.pActive = activeOf(z, P, 1);
    for (int64_t h = 0; h < per; ++h)
      if (z[h * P] != T(0))
        ha = h + 1;
    s.hActive = ha;
    return s;
  };
  if (kind == "kernel.mamba_mask" || kind == "kernel.mamba_proj_select") {
    cpu::MambaShape s0;
    s0.heads = b.sizeAttr("num_heads");
    s0.headDim = b.sizeAttr("head_dim");
    s0.groups = b.sizeAttr("n_groups");
    s0.stateSize = b.sizeAttr("state_size");
    s0.hActive = s0.heads / s0.groups;
    s0.pActive = s0.headDim;
    auto heads = opt("heads"), chans = opt("channels"), y = out("result");
    bool dense = b.flag("prefix_dense"), select = kind == "kernel.mamba_proj_select";
    if (b.numel(y.index) != (select ? s0.projWidth() : s0.hp()))
      b.fail("the result does not have one entry per " +
             std::string(select ? "in_proj row" : "z/x channel"));
    return wrap([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), chans.get());
      if (select)
        cpu::mambaProjSelect<T>(s, heads.get(), chans.get(), y.get());
      else
        cpu::mambaMaskExpand<T>(s, heads.get(), chans.get(), y.get());
    });
  }
  if (kind == "kernel.mamba_conv") {
    auto proj = ref("proj"), w = ref("conv_weight"), bias = ref("conv_bias");
    auto mzx = opt("mzx"), y = out("result");
    cpu::MambaShape s0 = mambaShape(proj.index);
    s0.convKernel = b.dim(w.index, 1);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      cpu::MambaShape s = s0;
      if (dense && mzx.present())
        s = mambaExtentsOfMultiplier(s, mzx.get());
      cpu::mambaConvForward<T>(s, proj.get(), w.get(), bias.get(), mzx.get(), y.get());
    });
  }
  if (kind == "kernel.mamba_scan") {
    auto proj = ref("proj"), xbc = ref("xbc"), dtb = ref("dt_bias"), alog = ref("a_log");
    auto d = ref("d_skip"), heads = opt("heads"), y = out("result");
    cpu::MambaShape s0 = mambaShape(proj.index);
    int64_t chunk = b.sizeAttr("chunk");
    bool dense = b.flag("prefix_dense");
    // The channel extent is not visible here; the scan computes all channels of active heads
    // (inactive channels have x = 0, so their outputs are exactly 0).
    return wrap([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), nullptr);
      cpu::mambaScanForward<T>(s, proj.get(), xbc.get(), dtb.get(), alog.get(), d.get(),
                               heads.get(), chunk, y.get());
    });
  }
  if (kind == "kernel.mamba_conv_step") {
    auto proj = ref("proj"), w = ref("conv_weight"), bias = ref("conv_bias");
    auto mzx = opt("mzx"), state = ref("state"), y = out("result");
    cpu::MambaShape s0 = mambaShape(proj.index);
    s0.convKernel = b.dim(w.index, 1);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      cpu::MambaShape s = s0;
      if (dense && mzx.present())
        s = mambaExtentsOfMultiplier(s, mzx.get());
      cpu::mambaConvStep<T>(s, proj.get(), w.get(), bias.get(), mzx.get(), state.get(), y.get());
    });
  }
  if (kind == "kernel.mamba_scan_step") {
    auto proj = ref("proj"), xbc = ref("xbc"), dtb = ref("dt_bias"), alog = ref("a_log");
    auto d = ref("d_skip"), heads = opt("heads"), state = ref("state"), y = out("result");
    cpu::MambaShape s0 = mambaShape(proj.index);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), nullptr);
      cpu::mambaScanStep<T>(s, proj.get(), xbc.get(), dtb.get(), alog.get(), d.get(), heads.get(),
                            state.get(), y.get());
    });
  }
  if (kind == "kernel.mamba_gate_norm") {
    auto y = ref("y"), proj = ref("proj"), w = ref("norm_weight"), mzx = opt("mzx");
    auto heads = opt("heads"), chans = opt("channels"), o = out("result");
    cpu::MambaShape s0 = mambaShape(proj.index);
    double eps = b.floatAttr("epsilon");
    bool dense = b.flag("prefix_dense");
    int64_t H = s0.heads, P = s0.headDim;
    return wrap([=]() {
      cpu::MambaShape s = mambaExtents(s0, dense, heads.get(), chans.get());
      T phi = (heads.present() ? heads.get()[H] : T(1)) * (chans.present() ? chans.get()[P] : T(1));
      T sigma = (heads.present() ? heads.get()[H + 1] : T(1)) *
                (chans.present() ? chans.get()[P + 1] : T(1));
      cpu::mambaGateNormForward<T>(s, y.get(), proj.get(), mzx.get(), w.get(), eps, phi, sigma,
                                   o.get());
    });
  }
  if (kind == "kernel.mamba_inner_grad") {
    auto proj = ref("proj"), xbc = ref("xbc"), y = ref("y"), cw = ref("conv_weight");
    auto cb = ref("conv_bias"), dtb = ref("dt_bias"), alog = ref("a_log"), dsk = ref("d_skip");
    auto nw = ref("norm_weight"), dout = ref("result_grad");
    auto heads = opt("heads"), chans = opt("channels");
    auto dproj = out("proj_grad"), dcw = out("conv_weight_grad"), dcb = out("conv_bias_grad");
    auto ddtb = out("dt_bias_grad"), dalog = out("a_log_grad"), dd = out("d_skip_grad");
    auto dnw = out("norm_weight_grad"), dh = out("heads_grad", false);
    auto dc = out("channels_grad", false);
    cpu::MambaShape s0 = mambaShape(proj.index);
    s0.convKernel = b.dim(cw.index, 1);
    double eps = b.floatAttr("epsilon");
    int64_t chunk = b.sizeAttr("chunk");
    bool dense = b.flag("prefix_dense"), masked = heads.present() || chans.present();
    int64_t rows = s0.rows(), H = s0.heads, P = s0.headDim, HP = s0.hp();
    // Kernel-private intermediates: the cotangents of y, of the conv output, and of the
    // multipliers (the expanded mzx itself is recomputed here).
    T *dY = static_cast<T *>(scratch(sizeof(T) * rows * HP));
    T *dXbc = static_cast<T *>(scratch(sizeof(T) * rows * s0.convChannels()));
    T *mzx = masked ? static_cast<T *>(scratch(sizeof(T) * HP)) : nullptr;
    T *dMzx = masked ? static_cast<T *>(scratch(sizeof(T) * HP)) : nullptr;
    T *dHeadM = static_cast<T *>(scratch(sizeof(T) * H));
    return wrap([=]() {
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
        if (dh.present())
          for (int64_t h = 0; h < H; ++h)
            dh.get()[h] += dHeadM[h];
      }
    });
  }

  // Attention.
  auto attentionShape = [&](int32_t q) {
    cpu::AttentionShape s{b.dim(q, 0),
                          b.dim(q, 1),
                          b.sizeAttr("num_heads"),
                          b.sizeAttr("num_kv_heads"),
                          b.sizeAttr("head_dim"),
                          0};
    s.qActive = s.heads / s.kvHeads;
    return s;
  };
  if (kind == "kernel.attention") {
    auto q = ref("q"), k = ref("k"), v = ref("v"), heads = opt("heads");
    auto o = out("result"), lse = out("lse");
    cpu::AttentionShape s0 = attentionShape(q.index);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      cpu::AttentionShape s = s0;
      if (dense && heads.present())
        s.qActive = activeOf(heads.get(), s.heads, s.kvHeads);
      cpu::attentionForward<T>(s, q.get(), k.get(), v.get(), o.get(), lse.get());
    });
  }
  if (kind == "kernel.attention_step") {
    auto q = ref("q"), k = ref("k"), v = ref("v"), kc = ref("k_cache"), vc = ref("v_cache");
    auto pos = Ref<int64_t>{&slots, b.operandId("position", true)};
    auto heads = opt("heads"), o = out("result");
    cpu::AttentionShape s0 = attentionShape(q.index);
    int64_t context = b.dim(kc.index, 1);
    bool dense = b.flag("prefix_dense");
    return [=]() -> Status {
      cpu::AttentionShape s = s0;
      if (dense && heads.present())
        s.qActive = activeOf(heads.get(), s.heads, s.kvHeads);
      int64_t at = *pos.get();
      if (at < 0 || at + s.length > context)
        return Status::error("kernel.attention_step: position " + std::to_string(at) + " + " +
                             std::to_string(s.length) + " new tokens exceeds the " +
                             std::to_string(context) + "-token context of the KV cache");
      cpu::attentionStep<T>(s, context, at, q.get(), k.get(), v.get(), kc.get(), vc.get(), o.get());
      return Status();
    };
  }
  if (kind == "kernel.attention_grad") {
    auto q = ref("q"), k = ref("k"), v = ref("v"), o = ref("out"), lse = ref("lse");
    auto da = ref("result_grad"), heads = opt("heads");
    auto dq = out("q_grad"), dk = out("k_grad"), dv = out("v_grad");
    cpu::AttentionShape s0 = attentionShape(q.index);
    bool dense = b.flag("prefix_dense");
    return wrap([=]() {
      cpu::AttentionShape s = s0;
      if (dense && heads.present())
        s.qActive = activeOf(heads.get(), s.heads, s.kvHeads);
      cpu::attentionBackward<T>(s, q.get(), k.get(), v.get(), o.get(), lse.get(), da.get(),
                                dq.get(), dk.get(), dv.get());
    });
  }
  b.fail("has no CPU kernel in this runtime");
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Host steps
//===----------------------------------------------------------------------===//

namespace {

enum class HostKind {
  OneHot,
  Router,
  GumbelNoise,
  GumbelSoftmax,
  PrefixMask,
  LayerKeep,
  ExpectedSize,
  ParamCount,
  ResourceLoss,
  RouterGrad,
  GumbelSoftmaxGrad,
  PrefixMaskGrad,
  LayerKeepGrad,
  ExpectedSizeGrad,
  ParamCountGrad,
  ResourceLossGrad,
};

const std::map<std::string, HostKind> &hostKinds() {
  static const std::map<std::string, HostKind> kinds = {
      {"elastic.one_hot", HostKind::OneHot},
      {"elastic.router", HostKind::Router},
      {"elastic.gumbel_noise", HostKind::GumbelNoise},
      {"elastic.gumbel_softmax", HostKind::GumbelSoftmax},
      {"elastic.prefix_mask", HostKind::PrefixMask},
      {"elastic.layer_keep", HostKind::LayerKeep},
      {"elastic.expected_size", HostKind::ExpectedSize},
      {"elastic.param_count", HostKind::ParamCount},
      {"elastic.resource_loss", HostKind::ResourceLoss},
      {"elastic.router_grad", HostKind::RouterGrad},
      {"elastic.gumbel_softmax_grad", HostKind::GumbelSoftmaxGrad},
      {"elastic.prefix_mask_grad", HostKind::PrefixMaskGrad},
      {"elastic.layer_keep_grad", HostKind::LayerKeepGrad},
      {"elastic.expected_size_grad", HostKind::ExpectedSizeGrad},
      {"elastic.param_count_grad", HostKind::ParamCountGrad},
      {"elastic.resource_loss_grad", HostKind::ResourceLossGrad},
  };
  return kinds;
}

/// One host op with its attributes decoded at create() time.
struct HostCall {
  HostKind kind;
  std::string name;
  std::vector<int32_t> operands, results;
  std::vector<std::vector<int64_t>> resultShapes;
  std::vector<int64_t> list; // choices or order
  bool soft = false;
  double slope = 0.1;
  int64_t stream = 0;
  ref::host::PrefixMaskAttrs mask;
  ref::host::ResourceAttrs resource;
  spec::FixedSizes fixed;
};

/// Decodes `op`; returns an error message or "".
std::string decodeHostOp(const pg::HostOp &op, HostCall &call) {
  auto kind = hostKinds().find(op.kind());
  if (kind == hostKinds().end())
    return "host op " + op.kind() + " has no host semantics in this runtime";
  call.kind = kind->second;
  call.name = op.kind();
  call.operands.assign(op.operands().begin(), op.operands().end());
  call.results.assign(op.results().begin(), op.results().end());
  for (const pg::TensorType &t : op.result_types())
    call.resultShapes.emplace_back(t.shape().begin(), t.shape().end());
  const pg::Attributes &a = op.attributes();
  std::string missing;
  auto i64 = [&](const char *name) -> int64_t {
    auto it = a.ints().find(name);
    if (it == a.ints().end()) {
      missing = name;
      return 0;
    }
    return it->second;
  };
  auto f64 = [&](const char *name) -> double {
    auto it = a.floats().find(name);
    if (it == a.floats().end()) {
      missing = name;
      return 0;
    }
    return it->second;
  };
  auto ints = [&](const char *name) {
    auto it = a.arrays().find(name);
    if (it == a.arrays().end()) {
      missing = name;
      return std::vector<int64_t>();
    }
    return std::vector<int64_t>(it->second.values().begin(), it->second.values().end());
  };
  auto soft = [&]() {
    auto it = a.strings().find("mode");
    if (it == a.strings().end()) {
      missing = "mode";
      return false;
    }
    return it->second == "soft";
  };
  size_t wantOperands = 0, wantResults = 1;
  bool variadic = false;
  switch (call.kind) {
  case HostKind::OneHot:
    wantOperands = 1;
    break;
  case HostKind::Router:
    wantOperands = 5;
    call.slope = f64("negative_slope");
    break;
  case HostKind::RouterGrad:
    wantOperands = 6, wantResults = 4;
    call.slope = f64("negative_slope");
    break;
  case HostKind::GumbelNoise:
    wantOperands = 1;
    call.stream = i64("stream");
    break;
  case HostKind::GumbelSoftmax:
    wantOperands = 5;
    break;
  case HostKind::GumbelSoftmaxGrad:
    wantOperands = 6;
    break;
  case HostKind::PrefixMask:
  case HostKind::PrefixMaskGrad: {
    bool grad = call.kind == HostKind::PrefixMaskGrad;
    wantOperands = grad ? 2 : 1;
    call.mask.choices = ints("choices");
    call.mask.soft = soft();
    auto row = a.ints().find("row");
    call.mask.row = row == a.ints().end() ? -1 : row->second;
    call.mask.size = i64(grad ? "mask_size" : "result_size");
    call.mask.groups = i64(grad ? "mask_groups" : "result_groups");
    break;
  }
  case HostKind::LayerKeep:
  case HostKind::LayerKeepGrad:
    wantOperands = call.kind == HostKind::LayerKeep ? 1 : 2;
    call.list = ints("order");
    call.soft = soft();
    break;
  case HostKind::ExpectedSize:
  case HostKind::ExpectedSizeGrad:
    wantOperands = call.kind == HostKind::ExpectedSize ? 1 : 2;
    call.list = ints("choices");
    call.soft = soft();
    break;
  case HostKind::ParamCount:
  case HostKind::ParamCountGrad: {
    bool grad = call.kind == HostKind::ParamCountGrad;
    wantOperands = grad ? 7 : 6, wantResults = grad ? 6 : 1;
    auto pattern = a.strings().find("pattern");
    if (pattern == a.strings().end())
      missing = "pattern";
    else if (int64_t bad = spec::layerKindsOf(pattern->second, call.fixed.layers); bad >= 0)
      return op.kind() + ": the layer pattern has an unknown layer kind at position " +
             std::to_string(bad);
    call.fixed.mambaGroups = i64("mamba_groups");
    call.fixed.ssmStateSize = i64("ssm_state_size");
    call.fixed.convKernel = i64("conv_kernel");
    call.fixed.numKeyValueHeads = i64("num_kv_heads");
    call.fixed.attnHeadDim = i64("head_dim");
    call.fixed.vocabSize = i64("vocab_size");
    call.fixed.tiedEmbeddings = i64("tied_embeddings") != 0;
    break;
  }
  case HostKind::ResourceLoss:
  case HostKind::ResourceLossGrad: {
    bool grad = call.kind == HostKind::ResourceLossGrad;
    wantOperands = grad ? 3 : 2, variadic = true;
    auto fr = a.float_arrays().find("fractions");
    if (fr == a.float_arrays().end())
      missing = "fractions";
    else
      call.resource.fractions.assign(fr->second.values().begin(), fr->second.values().end());
    call.resource.fullParams = f64("full_params");
    call.resource.deadZone = f64("dead_zone");
    call.resource.anchorWeight = f64("anchor_weight");
    size_t anchors = call.operands.size() >= wantOperands ? call.operands.size() - wantOperands : 0;
    wantResults = grad ? 1 + anchors : 1;
    break;
  }
  }
  if (!missing.empty())
    return op.kind() + " has no attribute '" + missing + "'";
  if (variadic ? call.operands.size() < wantOperands : call.operands.size() != wantOperands)
    return op.kind() + " has " + std::to_string(call.operands.size()) + " operands, expected " +
           (variadic ? "at least " : "") + std::to_string(wantOperands);
  if (call.results.size() != wantResults)
    return op.kind() + " has " + std::to_string(call.results.size()) + " results, expected " +
           std::to_string(wantResults);
  return "";
}

/// Evaluates one host op on its float64 locals; returns an error message or "".
std::string evalHostOp(const HostCall &c, std::vector<ref::Tensor> &locals) {
  namespace h = ref::host;
  auto in = [&](size_t i) -> const ref::Tensor & { return locals[c.operands[i]]; };
  auto set = [&](size_t i, ref::Tensor t) {
    t.shape = c.resultShapes[i];
    locals[c.results[i]] = std::move(t);
  };
  std::string err;
  switch (c.kind) {
  case HostKind::OneHot: {
    ref::Tensor t;
    int64_t n = c.resultShapes[0].empty() ? 1 : c.resultShapes[0][0];
    err = h::oneHot(n, static_cast<int64_t>(in(0)[0]), t);
    if (err.empty())
      set(0, std::move(t));
    break;
  }
  case HostKind::Router:
    set(0, h::router(in(0), in(1), in(2), in(3), in(4), c.slope, c.resultShapes[0]));
    break;
  case HostKind::RouterGrad: {
    h::RouterGrads g = h::routerGrad(in(0), in(1), in(2), in(3), in(5), c.slope);
    set(0, std::move(g.w1)), set(1, std::move(g.b1)), set(2, std::move(g.w2));
    set(3, std::move(g.b2));
    break;
  }
  case HostKind::GumbelNoise: {
    auto seed = static_cast<uint64_t>(static_cast<int64_t>(in(0)[0]));
    set(0, h::gumbelNoiseTensor(c.resultShapes[0], seed, static_cast<uint64_t>(c.stream)));
    break;
  }
  case HostKind::GumbelSoftmax:
    set(0, h::gumbelSoftmax(in(0), in(1), in(2)[0], in(3)[0], in(4)[0] != 0.0));
    break;
  case HostKind::GumbelSoftmaxGrad:
    set(0, h::gumbelSoftmaxGrad(in(0), in(1), in(2)[0], in(3)[0], in(5)));
    break;
  case HostKind::PrefixMask:
    set(0, h::prefixMask(in(0), c.mask).packed());
    break;
  case HostKind::PrefixMaskGrad:
    set(0, h::prefixMaskGrad(in(0), in(1), c.mask));
    break;
  case HostKind::LayerKeep:
    set(0, h::layerKeep(in(0), c.list, c.soft));
    break;
  case HostKind::LayerKeepGrad:
    set(0, h::layerKeepGrad(in(0), in(1), c.list, c.soft));
    break;
  case HostKind::ExpectedSize:
    set(0, h::expectedSize(in(0), c.list, c.soft));
    break;
  case HostKind::ExpectedSizeGrad:
    set(0, h::expectedSizeGrad(in(0), in(1), c.list, c.soft));
    break;
  case HostKind::ParamCount:
    set(0, h::paramCount(c.fixed, {&in(0), &in(1), &in(2), &in(3), &in(4), &in(5)}));
    break;
  case HostKind::ParamCountGrad: {
    auto grads =
        h::paramCountGrad(c.fixed, {&in(0), &in(1), &in(2), &in(3), &in(4), &in(5)}, in(6)[0]);
    for (size_t i = 0; i < 6; ++i)
      set(i, std::move(grads[i]));
    break;
  }
  case HostKind::ResourceLoss: {
    std::vector<const ref::Tensor *> anchors;
    for (size_t i = 2; i < c.operands.size(); ++i)
      anchors.push_back(&in(i));
    ref::Tensor t;
    err = h::resourceLoss(in(0), in(1), anchors, c.resource, t);
    if (err.empty())
      set(0, std::move(t));
    break;
  }
  case HostKind::ResourceLossGrad: {
    std::vector<const ref::Tensor *> anchors;
    for (size_t i = 3; i < c.operands.size(); ++i)
      anchors.push_back(&in(i));
    ref::Tensor dp;
    std::vector<ref::Tensor> da;
    err = h::resourceLossGrad(in(0), in(1), in(2)[0], anchors, c.resource, dp, da);
    if (err.empty()) {
      set(0, std::move(dp));
      for (size_t i = 0; i < da.size() && i + 1 < c.results.size(); ++i)
        set(i + 1, std::move(da[i]));
    }
    break;
  }
  }
  return err.empty() ? err : c.name + ": " + err;
}

} // namespace

StepFn CpuExecutor::Impl::bindHost(Binding &b) {
  const pg::HostBlock &block = b.step.host();
  std::vector<HostCall> calls(block.ops_size());
  for (int i = 0; i < block.ops_size(); ++i)
    if (std::string err = decodeHostOp(block.ops(i), calls[i]); !err.empty()) {
      b.fail(err);
      return nullptr;
    }
  struct Port {
    int32_t value;
    pg::DType dtype;
    int64_t n;
    std::vector<int64_t> shape;
  };
  std::vector<Port> ins, outs;
  for (int i = 0; i < b.step.inputs_size(); ++i) {
    int32_t id = b.step.inputs(i);
    const pg::TensorType &local = block.local_types(i);
    ins.push_back(
        {id, b.type(id).dtype(), b.numel(id), {local.shape().begin(), local.shape().end()}});
  }
  for (int32_t id : b.step.outputs()) {
    pg::DType d = b.type(id).dtype();
    if (d != pg::F32 && d != pg::F64)
      b.fail("a host step output is not a float tensor");
    outs.push_back({id, d, b.numel(id), {}});
  }
  std::vector<int32_t> yields(block.yields().begin(), block.yields().end());
  int numLocals = block.local_types_size();
  std::vector<void *> *table = &slots;
  std::string where = b.where();
  return [=]() -> Status {
    std::vector<ref::Tensor> locals(numLocals);
    for (size_t i = 0; i < ins.size(); ++i) {
      const Port &p = ins[i];
      ref::Tensor t(p.shape);
      const void *data = (*table)[p.value];
      for (int64_t j = 0; j < p.n; ++j) {
        switch (p.dtype) {
        case pg::F32:
          t[j] = static_cast<const float *>(data)[j];
          break;
        case pg::F64:
          t[j] = static_cast<const double *>(data)[j];
          break;
        case pg::I32:
          t[j] = static_cast<const int32_t *>(data)[j];
          break;
        case pg::I64:
          t[j] = static_cast<double>(static_cast<const int64_t *>(data)[j]);
          break;
        default:
          t[j] = static_cast<const uint8_t *>(data)[j] != 0;
        }
      }
      locals[i] = std::move(t);
    }
    for (const HostCall &c : calls)
      if (std::string err = evalHostOp(c, locals); !err.empty())
        return Status::error(where + ": " + err);
    for (size_t i = 0; i < outs.size(); ++i) {
      const ref::Tensor &r = locals[yields[i]];
      void *data = (*table)[outs[i].value];
      int64_t n = std::min<int64_t>(outs[i].n, r.numel());
      for (int64_t j = 0; j < n; ++j) {
        if (outs[i].dtype == pg::F32)
          static_cast<float *>(data)[j] = static_cast<float>(r[j]);
        else
          static_cast<double *>(data)[j] = r[j];
      }
    }
    return Status();
  };
}

StepFn CpuExecutor::Impl::gate(const pg::Step &step, StepFn run) {
  // When the layer is dropped, the step's results are zero (a GEMM accumulating into `acc`
  // leaves acc's value): its block contributes 0 * block forward and gets a 0 cotangent.
  struct Out {
    int32_t value;
    int64_t bytes;
    int32_t acc;
  };
  std::vector<Out> outs;
  int32_t acc = -1;
  if (step.kind() == "kernel.gemm")
    if (auto it = step.operands().find("acc"); it != step.operands().end())
      acc = it->second;
  auto add = [&](int32_t id) { outs.push_back({id, tensorBytes(fn.values(id).type()), acc}); };
  for (const auto &kv : step.results())
    add(kv.second);
  for (int32_t id : step.outputs())
    add(id);
  std::vector<void *> *table = &slots;
  int32_t keep = fn.keep_value();
  bool f64 = fn.values(keep).type().dtype() == pg::F64;
  int64_t layer = step.layer();
  return [=]() -> Status {
    const void *k = (*table)[keep];
    double gamma =
        f64 ? static_cast<const double *>(k)[layer] : static_cast<const float *>(k)[layer];
    if (gamma != 0.0)
      return run();
    for (const Out &o : outs) {
      void *dst = (*table)[o.value];
      if (o.acc >= 0) {
        if ((*table)[o.acc] != dst)
          std::memcpy(dst, (*table)[o.acc], o.bytes);
      } else {
        std::memset(dst, 0, o.bytes);
      }
    }
    return Status();
  };
}

CpuExecutor::CpuExecutor(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
CpuExecutor::~CpuExecutor() = default;

Result<std::unique_ptr<CpuExecutor>> CpuExecutor::create(const pg::Function &function) {
  pg::Program single;
  *single.add_functions() = function;
  if (Status s = validateProgram(single))
    return s;
  auto impl = std::make_unique<Impl>();
  impl->fn = function;
  const pg::Function &fn = impl->fn;
  // Page-aligned, touched once here so that no step pays for first-touch page faults.
  int64_t bytes = std::max<int64_t>(4096, (fn.arena_bytes() + 4095) / 4096 * 4096);
  impl->arena.reset(std::aligned_alloc(4096, bytes));
  if (!impl->arena)
    return Status::error("@" + fn.name() + ": cannot allocate the " + std::to_string(bytes) +
                         "-byte arena");
  std::memset(impl->arena.get(), 0, bytes);
  char *base = static_cast<char *>(impl->arena.get());

  impl->slots.assign(fn.values_size(), nullptr);
  for (int i = 0; i < fn.values_size(); ++i) {
    const pg::Value &v = fn.values(i);
    if (v.storage_case() == pg::Value::kArenaOffset) {
      impl->slots[i] = base + v.arena_offset();
    } else if (v.storage_case() == pg::Value::kConstant) {
      // Copied into aligned storage (the kernels read it like any buffer).
      void *data = impl->scratch(static_cast<int64_t>(v.constant().size()));
      std::memcpy(data, v.constant().data(), v.constant().size());
      impl->slots[i] = data;
    }
  }
  for (const pg::Step &step : fn.steps()) {
    Binding b{fn, step, &impl->slots, {}};
    StepFn run;
    if (step.kind() == "kernel.host")
      run = impl->bindHost(b);
    else if (step.compute() == pg::F64)
      run = impl->bind<double>(b);
    else if (step.compute() == pg::F32)
      run = impl->bind<float>(b);
    else
      b.fail("computes in " + std::string(dtypeName(step.compute())) + ", not float32 or float64");
    if (!b.error.empty())
      return Status::error("@" + fn.name() + ": " + b.error);
    if (step.gated())
      run = impl->gate(step, std::move(run));
    impl->steps.push_back(std::move(run));
  }
  impl->stepTimes.assign(impl->steps.size(), 0.0);
  return std::unique_ptr<CpuExecutor>(new CpuExecutor(std::move(impl)));
}

Status CpuExecutor::run(const void *const *args, size_t count) {
  const pg::Function &fn = impl->fn;
  if (count != static_cast<size_t>(fn.arguments_size()))
    return Status::error("@" + fn.name() + " takes " + std::to_string(fn.arguments_size()) +
                         " arguments, got " + std::to_string(count));
  for (size_t i = 0; i < count; ++i)
    impl->slots[fn.arguments(static_cast<int>(i)).value()] = const_cast<void *>(args[i]);
  for (size_t i = 0; i < impl->steps.size(); ++i) {
    auto start = std::chrono::steady_clock::now();
    if (Status s = impl->steps[i](); !s.ok())
      return s;
    if (impl->observer)
      impl->observer(static_cast<int>(i));
    if (impl->profiling)
      impl->stepTimes[i] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return Status();
}

const void *CpuExecutor::result(unsigned i) const {
  return impl->slots[impl->fn.results(static_cast<int>(i)).value()];
}
unsigned CpuExecutor::numResults() const { return impl->fn.results_size(); }
int64_t CpuExecutor::arenaBytes() const { return impl->fn.arena_bytes(); }
const pg::Function &CpuExecutor::function() const { return impl->fn; }
int CpuExecutor::argumentIndex(const std::string &name) const {
  for (int i = 0; i < impl->fn.arguments_size(); ++i)
    if (impl->fn.arguments(i).name() == name)
      return i;
  return -1;
}
void CpuExecutor::setProfiling(bool enabled) { impl->profiling = enabled; }
double CpuExecutor::gemmFlops() const { return impl->gemmFlops; }
void CpuExecutor::resetCounters() { impl->gemmFlops = 0; }
void CpuExecutor::setObserver(std::function<void(int)> observer) {
  impl->observer = std::move(observer);
}
const void *CpuExecutor::value(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl->slots.size() ? impl->slots[id] : nullptr;
}

std::vector<std::pair<std::string, double>> CpuExecutor::profile() const {
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < impl->steps.size(); ++i)
    out.push_back({impl->fn.steps(static_cast<int>(i)).kind(), impl->stepTimes[i]});
  return out;
}
