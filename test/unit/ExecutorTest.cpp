//===- ExecutorTest.cpp - Kernel programs on the CPU against the reference -===//
//
// The train step of an elastic hybrid model, lowered to kernels (nestor-kernels) and run by the
// CPU executor, must return what the float64 reference evaluator returns for the elastic train
// step: the losses and every parameter's gradient. The reference's gradients are checked
// against finite differences (GradientTest), so this checks every forward and backward kernel
// against finite differences too. Also: float32 against float64, and prefix-dense execution
// under hard masks against full-width execution.
//
//===----------------------------------------------------------------------===//
#include "dialects/kernel/KernelOps.h"
#include "nestor/Compile.h"
#include "nestor/EmitProgram.h"
#include "nestor/Import.h"
#include "nestor/Reference.h"
#include "nestor/Spec.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace mlir;
using namespace nestor;
using nestor::ref::Tensor;

namespace {

struct ModelCase {
  const char *name;
  spec::MaskMode mode;
  int budget;
  int dropLayers = -1;            // >= 0: bias the depth router to drop this many layers
  int64_t batch = 2, length = 70; // 70: one full scan chunk / attention tile and a partial one
};

void PrintTo(const ModelCase &c, std::ostream *os) { *os << c.name; }

/// An odd-shaped hybrid spec: 3 Mamba groups of 2 heads, head sizes 10 and 14, 3 KV groups.
spec::ModelSpec oddSpec(spec::MaskMode mode) {
  spec::ModelSpec spec;
  spec.set_name("odd-hybrid");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-*M*");
  a->set_hidden_size(18);
  a->set_intermediate_size(22);
  a->set_num_attention_heads(6);
  a->set_num_key_value_heads(3);
  a->set_head_dim(10);
  a->set_mamba_num_heads(6);
  a->set_mamba_head_dim(14);
  a->set_n_groups(3);
  a->set_ssm_state_size(5);
  a->set_conv_kernel(4);
  a->set_layer_norm_epsilon(0.05);
  a->set_vocab_size(37);
  spec::Elastic *e = spec.mutable_elastic();
  for (auto [n, f] : {std::pair{"full", 1.0}, {"mid", 0.75}, {"small", 0.5}}) {
    auto *b = e->add_budgets();
    b->set_name(n);
    b->set_fraction(f);
  }
  for (int64_t k : {18, 12, 9})
    e->mutable_hidden_size()->add_choices(k);
  for (int64_t k : {22, 13, 7})
    e->mutable_intermediate_size()->add_choices(k);
  e->mutable_intermediate_size()->set_heterogeneous(true);
  for (int64_t k : {6, 3})
    e->mutable_num_attention_heads()->add_choices(k);
  for (int64_t k : {6, 3})
    e->mutable_mamba_num_heads()->add_choices(k);
  e->mutable_mamba_num_heads()->set_heterogeneous(true);
  for (int64_t k : {14, 9, 5})
    e->mutable_mamba_head_dim()->add_choices(k);
  e->set_max_dropped_layers(2);
  e->set_mask_mode(mode);
  e->mutable_router()->set_hidden_size(5);
  spec.mutable_training()->mutable_distillation()->set_trainable_teacher(true);
  return spec;
}

/// An imported, differentiated module; kernel programs are built from clones of it.
struct Model {
  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  func::FuncOp forward, step;

  Model(const spec::ModelSpec &spec, bool float64) {
    loadImportDialects(context);
    ImportOptions options;
    options.float64 = float64;
    auto imported = importSpec(context, spec, options);
    EXPECT_TRUE(static_cast<bool>(imported)) << llvm::toString(imported.takeError());
    if (!imported)
      return;
    module = std::move(*imported);
    PassManager pm(&context);
    pm.addPass(createElasticAutodiffPass({"elastic_model", 1}));
    EXPECT_TRUE(succeeded(pm.run(*module)));
    forward = module->lookupSymbol<func::FuncOp>("elastic_model");
    step = module->lookupSymbol<func::FuncOp>("elastic_model_train_step");
  }

  /// A planned kernel module of the whole program (its @elastic_model_train_step).
  OwningOpRef<ModuleOp> kernels(int64_t batch, int64_t length, bool prefixDense) {
    OwningOpRef<ModuleOp> k = module->clone();
    PassManager pm(&context);
    KernelPipelineOptions options;
    options.batch = batch;
    options.seqLen = length;
    options.prefixDense = prefixDense;
    buildKernelPipeline(pm, options);
    EXPECT_TRUE(succeeded(pm.run(*k)));
    return k;
  }

  int inputIndex(StringRef name) {
    for (unsigned i = 0; i < step.getNumArguments(); ++i)
      if (auto n = step.getArgAttrOfType<StringAttr>(i, "elastic.input"); n && n == name)
        return i;
    return -1;
  }
};

std::vector<Tensor> randomArgs(func::FuncOp f, std::mt19937_64 &rng, int64_t batch, int64_t length,
                               int64_t vocab) {
  std::normal_distribution<double> normal(0.0, 0.5);
  std::uniform_int_distribution<int> tok(0, static_cast<int>(vocab) - 1);
  std::vector<Tensor> args;
  for (unsigned i = 0; i < f.getNumArguments(); ++i) {
    auto type = cast<RankedTensorType>(f.getArgument(i).getType());
    std::vector<int64_t> shape;
    for (int64_t d : type.getShape())
      shape.push_back(ShapedType::isDynamic(d) ? (shape.empty() ? batch : length) : d);
    Tensor t(shape);
    for (double &v : t.data)
      v = type.getElementType().isInteger(32) ? tok(rng) : normal(rng);
    args.push_back(std::move(t));
  }
  return args;
}

/// The arguments in the executor's layout: each in its argument's element type.
struct TypedArgs {
  std::vector<std::vector<char>> storage;
  std::vector<const void *> pointers;
  TypedArgs(func::FuncOp f, const std::vector<Tensor> &args) {
    for (unsigned i = 0; i < f.getNumArguments(); ++i) {
      Type elem = cast<RankedTensorType>(f.getArgument(i).getType()).getElementType();
      const Tensor &t = args[i];
      std::vector<char> bytes;
      auto put = [&](auto v) {
        const char *p = reinterpret_cast<const char *>(&v);
        bytes.insert(bytes.end(), p, p + sizeof(v));
      };
      for (double v : t.data) {
        if (elem.isF32())
          put(static_cast<float>(v));
        else if (elem.isF64())
          put(v);
        else if (elem.isInteger(32))
          put(static_cast<int32_t>(v));
        else if (elem.isInteger(64))
          put(static_cast<int64_t>(v));
        else
          put(static_cast<uint8_t>(v != 0));
      }
      storage.push_back(std::move(bytes));
    }
    for (auto &s : storage)
      pointers.push_back(s.data());
  }
};

/// Runs the planned train step of `kernels` on `args`; results as doubles.
std::vector<std::vector<double>> runKernels(ModuleOp kernels, const std::vector<Tensor> &args) {
  auto step = kernels.lookupSymbol<func::FuncOp>("elastic_model_train_step");
  auto program = prepareCpu(step);
  EXPECT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());
  if (!program)
    return {};
  TypedArgs typed(step, args);
  llvm::Error err = toError((*program)->run(typed.pointers));
  EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  std::vector<std::vector<double>> out;
  for (unsigned r = 0; r < step.getNumResults(); ++r) {
    auto type = cast<RankedTensorType>(step.getResultTypes()[r]);
    int64_t n = type.getNumElements();
    std::vector<double> v(n);
    const void *p = (*program)->result(r);
    for (int64_t i = 0; i < n; ++i)
      v[i] = type.getElementType().isF64() ? static_cast<const double *>(p)[i]
                                           : static_cast<const float *>(p)[i];
    out.push_back(std::move(v));
  }
  return out;
}

void setInputs(Model &m, std::vector<Tensor> &args, const ModelCase &c) {
  args[m.inputIndex("budget")] = Tensor::scalar(c.budget);
  args[m.inputIndex("tau")] = Tensor::scalar(1.3);
  args[m.inputIndex("logit_scale")] = Tensor::scalar(2.0);
  args[m.inputIndex("hard_sample")] = Tensor::scalar(0);
  args[m.inputIndex("seed")] = Tensor::scalar(11);
  for (unsigned i = 0; i < m.step.getNumArguments(); ++i) {
    auto n = m.step.getArgAttrOfType<StringAttr>(i, "elastic.param");
    if (!n)
      continue;
    if (!n.getValue().starts_with("routers."))
      for (double &v : args[i].data)
        v *= 0.4; // weights at a scale where activations stay O(1)
    if (c.dropLayers >= 0 && n.getValue() == "routers.depth.fc2.bias")
      args[i][c.dropLayers] += 8.0;
  }
}

/// Name of result r of the train step (a gradient's parameter, or the forward result index).
std::string resultName(func::FuncOp step, unsigned r) {
  if (auto n = step.getResultAttrOfType<StringAttr>(r, "elastic.grad_of"))
    return "grad " + n.getValue().str();
  return "result " + std::to_string(r);
}

class KernelProgramTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(KernelProgramTest, Float64MatchesReferenceTrainStep) {
  const ModelCase &c = GetParam();
  Model m(oddSpec(c.mode), /*float64=*/true);
  ASSERT_TRUE(m.step);
  std::mt19937_64 rng(5);
  std::vector<Tensor> args = randomArgs(m.step, rng, c.batch, c.length, 37);
  setInputs(m, args, c);
  auto expected = ref::evaluate(m.step, args);
  ASSERT_TRUE(static_cast<bool>(expected)) << llvm::toString(expected.takeError());
  OwningOpRef<ModuleOp> k = m.kernels(c.batch, c.length, /*prefixDense=*/true);
  auto got = runKernels(*k, args);
  ASSERT_EQ(got.size(), expected->size());
  for (unsigned r = 0; r < got.size(); ++r) {
    const Tensor &e = (*expected)[r];
    ASSERT_EQ(static_cast<int64_t>(got[r].size()), e.numel()) << resultName(m.step, r);
    double scale = 1e-30;
    for (double v : e.data)
      scale = std::max(scale, std::abs(v));
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < e.numel(); ++i)
      if (!(std::abs(got[r][i] - e[i]) <= 1e-9 * std::max(1.0, scale))) {
        if (first < 0)
          first = i;
        ++bad;
      }
    EXPECT_EQ(bad, 0) << resultName(m.step, r) << ": first [" << first
                      << "] = " << (first >= 0 ? got[r][first] : 0.0) << ", expected "
                      << (first >= 0 ? e[first] : 0.0) << " (scale " << scale << ")";
  }
}

TEST_P(KernelProgramTest, Float32MatchesFloat64) {
  const ModelCase &c = GetParam();
  Model m64(oddSpec(c.mode), true), m32(oddSpec(c.mode), false);
  ASSERT_TRUE(m64.step && m32.step);
  std::mt19937_64 rng(9);
  std::vector<Tensor> args = randomArgs(m64.step, rng, c.batch, c.length, 37);
  setInputs(m64, args, c);
  OwningOpRef<ModuleOp> k64 = m64.kernels(c.batch, c.length, true);
  OwningOpRef<ModuleOp> k32 = m32.kernels(c.batch, c.length, true);
  auto a = runKernels(*k64, args), b = runKernels(*k32, args);
  ASSERT_EQ(a.size(), b.size());
  for (unsigned r = 0; r < a.size(); ++r) {
    double scale = 1e-30, err = 0;
    for (size_t i = 0; i < a[r].size(); ++i) {
      scale = std::max(scale, std::abs(a[r][i]));
      err = std::max(err, std::abs(a[r][i] - b[r][i]));
    }
    EXPECT_LE(err, 2e-4 * std::max(scale, 1e-3)) << resultName(m64.step, r);
  }
}

/// The odd-shaped spec's whole train step on the float64 kernels, directly against central
/// finite differences of its own loss: the middle entry of every parameter tensor, model and
/// routers, at a length that fills no scan chunk or attention tile.
TEST_P(KernelProgramTest, Float64GradientsMatchFiniteDifferences) {
  const ModelCase &c = GetParam();
  Model m(oddSpec(c.mode), /*float64=*/true);
  ASSERT_TRUE(m.step);
  std::mt19937_64 rng(21);
  std::vector<Tensor> args = randomArgs(m.step, rng, c.batch, c.length, 37);
  setInputs(m, args, c);
  OwningOpRef<ModuleOp> k = m.kernels(c.batch, c.length, /*prefixDense=*/true);
  auto step = k->lookupSymbol<func::FuncOp>("elastic_model_train_step");
  auto program = prepareCpu(step);
  ASSERT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());
  auto loss = [&](const std::vector<Tensor> &a) {
    TypedArgs typed(step, a);
    llvm::Error err = toError((*program)->run(typed.pointers));
    EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
    return *static_cast<const double *>((*program)->result(1));
  };
  auto grads = runKernels(*k, args);
  ASSERT_EQ(grads.size(), step.getNumResults());
  int checked = 0;
  for (unsigned r = 0; r < step.getNumResults(); ++r) {
    auto name = step.getResultAttrOfType<StringAttr>(r, "elastic.grad_of");
    if (!name)
      continue;
    int arg = -1;
    for (unsigned i = 0; i < step.getNumArguments(); ++i)
      if (auto n = step.getArgAttrOfType<StringAttr>(i, "elastic.param"); n && n == name)
        arg = static_cast<int>(i);
    ASSERT_GE(arg, 0) << name.str();
    int64_t n = args[arg].numel();
    {
      int64_t j = n / 2;
      constexpr double h = 1e-6;
      double saved = args[arg][j];
      args[arg][j] = saved + h;
      double up = loss(args);
      args[arg][j] = saved - h;
      double down = loss(args);
      args[arg][j] = saved;
      double fd = (up - down) / (2 * h), g = grads[r][j];
      EXPECT_NEAR(g, fd, 1e-6 * std::max(1.0, std::abs(fd))) << name.str() << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

INSTANTIATE_TEST_SUITE_P(Masks, KernelProgramTest,
                         ::testing::Values(ModelCase{"soft_budget1", spec::SOFT, 1},
                                           ModelCase{"soft_full_anchor", spec::SOFT, 0},
                                           ModelCase{"hard_budget2", spec::HARD, 2},
                                           ModelCase{"hard_two_layers_dropped", spec::HARD, 1, 2},
                                           ModelCase{"hard_length_one", spec::HARD, 2, -1, 3, 1}),
                         [](const ::testing::TestParamInfo<ModelCase> &info) {
                           return std::string(info.param.name);
                         });

/// The real tiny example spec (2.5M parameters, every layer kind, 8 layers): the kernel train
/// step in float64 equals the reference's, soft and hard, at a length that fills no chunk/tile.
TEST(KernelProgramTest, TinySpecMatchesReference) {
  auto spec =
      spec::loadSpecFile(std::string(std::getenv("NESTOR_SRC") ? std::getenv("NESTOR_SRC") : ".") +
                         "/examples/specs/tiny-hybrid.pbtxt");
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  for (auto mode : {spec::SOFT, spec::HARD}) {
    spec->mutable_elastic()->set_mask_mode(mode);
    Model m(*spec, true);
    ASSERT_TRUE(m.step);
    std::mt19937_64 rng(3);
    std::vector<Tensor> args = randomArgs(m.step, rng, 1, 67, 256);
    setInputs(m, args, ModelCase{"", mode, 2, mode == spec::HARD ? 2 : -1});
    for (unsigned i = 0; i < m.step.getNumArguments(); ++i)
      if (auto n = m.step.getArgAttrOfType<StringAttr>(i, "elastic.param");
          n && !n.getValue().starts_with("routers."))
        for (double &v : args[i].data)
          v *= 0.25; // width 256: keep activations O(1)
    auto expected = ref::evaluate(m.step, args);
    ASSERT_TRUE(static_cast<bool>(expected)) << llvm::toString(expected.takeError());
    OwningOpRef<ModuleOp> k = m.kernels(1, 67, true);
    auto got = runKernels(*k, args);
    ASSERT_EQ(got.size(), expected->size());
    for (unsigned r = 0; r < got.size(); ++r) {
      const Tensor &e = (*expected)[r];
      double scale = 1e-30, err = 0;
      for (int64_t i = 0; i < e.numel(); ++i) {
        scale = std::max(scale, std::abs(e[i]));
        err = std::max(err, std::abs(got[r][i] - e[i]));
      }
      EXPECT_LE(err, 1e-9 * std::max(1.0, scale))
          << (mode == spec::HARD ? "hard " : "soft ") << resultName(m.step, r);
    }
  }
}

/// Prefix-dense execution (hard masks: only the active prefix of each axis is computed, the
/// blocks of dropped layers are skipped) returns exactly what full-width masked execution
/// returns: losses and every parameter gradient.
TEST(KernelProgramTest, PrefixDenseEqualsFullWidth) {
  for (int budget : {0, 1, 2})
    for (int drop : {-1, 2}) {
      Model m(oddSpec(spec::HARD), true);
      ASSERT_TRUE(m.step);
      std::mt19937_64 rng(21 + budget);
      std::vector<Tensor> args = randomArgs(m.step, rng, 2, 33, 37);
      setInputs(m, args, ModelCase{"", spec::HARD, budget, drop});
      OwningOpRef<ModuleOp> dense = m.kernels(2, 33, true), full = m.kernels(2, 33, false);
      // The dense program must really be prefix-dense, with skippable layer blocks; the full
      // one neither.
      int marked = 0, gated = 0, fullMarked = 0;
      dense->walk([&](Operation *op) {
        marked += op->hasAttr("prefix_dense");
        gated += op->hasAttr("kernel.layer");
      });
      full->walk([&](Operation *op) {
        auto gemm = dyn_cast<kernel::GemmOp>(op);
        fullMarked += op->hasAttr("prefix_dense") || op->hasAttr("kernel.layer") ||
                      (gemm && (gemm.getMExtent() || gemm.getNExtent() || gemm.getKExtent()));
      });
      EXPECT_GT(marked, 10);
      EXPECT_GT(gated, 10);
      EXPECT_EQ(fullMarked, 0);
      auto a = runKernels(*dense, args), b = runKernels(*full, args);
      ASSERT_EQ(a.size(), b.size());
      for (unsigned r = 0; r < a.size(); ++r)
        for (size_t i = 0; i < a[r].size(); ++i)
          ASSERT_NEAR(a[r][i], b[r][i], 1e-11 * std::max(1.0, std::abs(b[r][i])))
              << "budget " << budget << " drop " << drop << " " << resultName(m.step, r) << "[" << i
              << "]";
    }
}

} // namespace

namespace {

/// The optimizer kernel programs against AdamW written out in double: three steps with
/// warmup-like learning rates, clipping scale, a router parameter at its own rate, and no
/// weight decay on vectors; the update is in place in the caller's buffers.
TEST(OptimizerProgramTest, MatchesPlainAdamW) {
  MLIRContext context;
  spec::Optimizer opt;
  opt.set_beta1(0.8);
  opt.set_beta2(0.9);
  opt.set_epsilon(1e-6);
  opt.set_weight_decay(0.05);
  std::vector<StepArg> params(2);
  params[0].name = "backbone.layers.0.mixer.up_proj.weight";
  params[0].shape = {3, 5};
  params[0].elementType = Float32Type::get(&context);
  params[1].name = "routers.depth.fc1.bias";
  params[1].shape = {7};
  params[1].elementType = Float32Type::get(&context);
  auto programs = compileOptimizer(context, params, opt);
  ASSERT_TRUE(static_cast<bool>(programs)) << llvm::toString(programs.takeError());

  std::mt19937_64 rng(2);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<std::vector<float>> p(2), g(2), m(2), v(2);
  std::vector<std::vector<double>> rp(2), rm(2), rv(2);
  for (int i = 0; i < 2; ++i) {
    int64_t n = params[i].numel();
    for (int64_t j = 0; j < n; ++j)
      p[i].push_back(static_cast<float>(normal(rng)));
    m[i].assign(n, 0.0f);
    v[i].assign(n, 0.0f);
    rp[i].assign(p[i].begin(), p[i].end());
    rm[i].assign(n, 0.0);
    rv[i].assign(n, 0.0);
  }
  for (int t = 1; t <= 3; ++t) {
    double lr = 0.01 * t, routerLr = 10 * lr;
    for (int i = 0; i < 2; ++i) {
      g[i].clear();
      for (int64_t j = 0; j < params[i].numel(); ++j)
        g[i].push_back(static_cast<float>(normal(rng)));
    }
    // The squared norm, then a clip scale from it.
    std::vector<const void *> normArgs = {g[0].data(), g[1].data()};
    ASSERT_FALSE(static_cast<bool>((*programs)->gradNorm->run(normArgs)));
    double sq = *static_cast<const double *>((*programs)->gradNorm->result(0)), expected = 0;
    for (auto &gi : g)
      for (float x : gi)
        expected += double(x) * x;
    EXPECT_NEAR(sq, expected, 1e-9 * expected);
    double scale = std::min(1.0, 1.5 / std::sqrt(sq));
    double hyperModel[3] = {lr, double(t), scale}, hyperRouter[3] = {routerLr, double(t), scale};
    std::vector<const void *> args = {p[0].data(), p[1].data(), g[0].data(), g[1].data(),
                                      m[0].data(), m[1].data(), v[0].data(), v[1].data(),
                                      hyperModel,  hyperRouter};
    ASSERT_FALSE(static_cast<bool>((*programs)->step->run(args)));
    for (int i = 0; i < 2; ++i) {
      double rate = i == 1 ? routerLr : lr, wd = i == 0 ? 0.05 : 0.0;
      for (int64_t j = 0; j < params[i].numel(); ++j) {
        double gj = g[i][j] * scale;
        rm[i][j] = 0.8 * rm[i][j] + 0.2 * gj;
        rv[i][j] = 0.9 * rv[i][j] + 0.1 * gj * gj;
        double mh = rm[i][j] / (1 - std::pow(0.8, t)), vh = rv[i][j] / (1 - std::pow(0.9, t));
        rp[i][j] -= rate * (mh / (std::sqrt(vh) + 1e-6) + wd * rp[i][j]);
      }
    }
  }
  for (int i = 0; i < 2; ++i)
    for (int64_t j = 0; j < params[i].numel(); ++j) {
      EXPECT_NEAR(p[i][j], rp[i][j], 1e-5) << i << "," << j;
      EXPECT_NEAR(m[i][j], rm[i][j], 1e-5) << i << "," << j;
    }
}

} // namespace
