//===- GradientTest.cpp - elastic-autodiff against finite differences ------===//
//
// Runs elastic-autodiff, evaluates the train step with the float64 reference evaluator, and
// checks every parameter's gradient (router probabilities and keep gates included) against
// central finite differences of the forward loss, for soft and hard masks at odd sizes.
//
//===----------------------------------------------------------------------===//
#include "nestor/Import.h"
#include "nestor/Reference.h"
#include "nestor/Spec.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

using namespace mlir;
using namespace nestor;
using nestor::ref::Tensor;

namespace {

/// A small model with every op that has a gradient rule: masks from router probabilities
/// (`%pi_h`, `%pi_f` are parameters so their gradients are checked), a keep gate, the KD and
/// CE losses combined with arith.
constexpr const char *kModel = R"mlir(
func.func @f(%tok: tensor<?x?xi32> {elastic.input = "tokens"},
             %tgt: tensor<?x?xi32> {elastic.input = "targets"},
             %teacher: tensor<?x?x29xf64> {elastic.input = "teacher_logits"},
             %pi_h: tensor<3xf64> {elastic.param = "routers.hidden"},
             %pi_f: tensor<2x2xf64> {elastic.param = "routers.ffn"},
             %keep: tensor<3xf64> {elastic.param = "keep"},
             %emb: tensor<29x7xf64> {elastic.param = "emb"},
             %n0: tensor<7xf64> {elastic.param = "norm0"},
             %up0: tensor<11x7xf64> {elastic.param = "up0"},
             %down0: tensor<7x11xf64> {elastic.param = "down0"},
             %n1: tensor<7xf64> {elastic.param = "norm1"},
             %up1: tensor<11x7xf64> {elastic.param = "up1"},
             %down1: tensor<7x11xf64> {elastic.param = "down1"},
             %nf: tensor<7xf64> {elastic.param = "norm_f"},
             %head: tensor<29x7xf64> {elastic.param = "head"})
    -> (tensor<?x?x29xf64>, tensor<f64>) {
  %mh = elastic.prefix_mask %pi_h {choices = array<i64: 7, 5, 3>, mode = #elastic.mask_mode<MODE>}
      : tensor<3xf64> -> !elastic.mask<hidden, 7>
  %mf0 = elastic.prefix_mask %pi_f {choices = array<i64: 11, 6>, mode = #elastic.mask_mode<MODE>, row = 0 : i64}
      : tensor<2x2xf64> -> !elastic.mask<ffn, 11>
  %mf1 = elastic.prefix_mask %pi_f {choices = array<i64: 11, 6>, mode = #elastic.mask_mode<MODE>, row = 1 : i64}
      : tensor<2x2xf64> -> !elastic.mask<ffn, 11>
  %h0 = elastic.embed %tok, %emb hidden(%mh : !elastic.mask<hidden, 7>)
      : (tensor<?x?xi32>, tensor<29x7xf64>) -> tensor<?x?x7xf64>
  %x0 = elastic.rmsnorm %h0, %n0 hidden(%mh : !elastic.mask<hidden, 7>) {epsilon = 0.05 : f64}
      : (tensor<?x?x7xf64>, tensor<7xf64>) -> tensor<?x?x7xf64>
  %y0 = elastic.mlp %x0, %up0, %down0 ffn(%mf0 : !elastic.mask<ffn, 11>) hidden(%mh : !elastic.mask<hidden, 7>)
      : (tensor<?x?x7xf64>, tensor<11x7xf64>, tensor<7x11xf64>) -> tensor<?x?x7xf64>
  %h1 = elastic.depth_gate %h0, %y0 keep(%keep : tensor<3xf64>) {layer = 0 : i64} : tensor<?x?x7xf64>
  %x1 = elastic.rmsnorm %h1, %n1 hidden(%mh : !elastic.mask<hidden, 7>) {epsilon = 0.05 : f64}
      : (tensor<?x?x7xf64>, tensor<7xf64>) -> tensor<?x?x7xf64>
  %y1 = elastic.mlp %x1, %up1, %down1 ffn(%mf1 : !elastic.mask<ffn, 11>) hidden(%mh : !elastic.mask<hidden, 7>)
      : (tensor<?x?x7xf64>, tensor<11x7xf64>, tensor<7x11xf64>) -> tensor<?x?x7xf64>
  %h2 = elastic.depth_gate %h1, %y1 keep(%keep : tensor<3xf64>) {layer = 2 : i64} : tensor<?x?x7xf64>
  %xf = elastic.rmsnorm %h2, %nf hidden(%mh : !elastic.mask<hidden, 7>) {epsilon = 0.05 : f64}
      : (tensor<?x?x7xf64>, tensor<7xf64>) -> tensor<?x?x7xf64>
  %logits = elastic.lm_head %xf, %head : (tensor<?x?x7xf64>, tensor<29x7xf64>) -> tensor<?x?x29xf64>
  %ce = elastic.cross_entropy %logits, %tgt {ignore_index = 3 : i64}
      : (tensor<?x?x29xf64>, tensor<?x?xi32>) -> tensor<f64>
  %kd = elastic.kl_distill %logits, %teacher {temperature = 1.5 : f64}
      : (tensor<?x?x29xf64>, tensor<?x?x29xf64>) -> tensor<f64>
  %alpha = arith.constant dense<0.7> : tensor<f64>
  %wce = arith.mulf %alpha, %ce : tensor<f64>
  %loss = arith.addf %kd, %wce : tensor<f64>
  return %logits, %loss : tensor<?x?x29xf64>, tensor<f64>
}
)mlir";

struct Harness {
  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  func::FuncOp forward, step;

  /// Parses `text` and differentiates @name.
  Harness(const std::string &text, StringRef name, unsigned lossIndex) {
    loadImportDialects(context);
    module = parseSourceString<ModuleOp>(text, &context);
    EXPECT_TRUE(module);
    differentiate(name, lossIndex);
  }

  /// Imports `spec` in float64 and differentiates @name.
  Harness(const spec::ModelSpec &spec, StringRef name, unsigned lossIndex) {
    ImportOptions options;
    options.float64 = true;
    auto imported = importSpec(context, spec, options);
    EXPECT_TRUE(static_cast<bool>(imported)) << llvm::toString(imported.takeError());
    if (!imported)
      return;
    module = std::move(*imported);
    differentiate(name, lossIndex);
  }

  void differentiate(StringRef name, unsigned lossIndex) {
    if (!module)
      return;
    PassManager pm(&context);
    pm.addPass(createElasticAutodiffPass({name.str(), lossIndex}));
    EXPECT_TRUE(succeeded(pm.run(*module)));
    forward = module->lookupSymbol<func::FuncOp>(name);
    step = module->lookupSymbol<func::FuncOp>((name + "_train_step").str());
    EXPECT_TRUE(forward && step);
  }

  /// The argument of @forward (and of the step) that is run-time input `name`.
  Tensor &input(std::vector<Tensor> &args, StringRef name) {
    for (unsigned i = 0; i < forward.getNumArguments(); ++i)
      if (auto n = forward.getArgAttrOfType<StringAttr>(i, "elastic.input"); n && n == name)
        return args[i];
    ADD_FAILURE() << "no input " << name.str();
    return args[0];
  }
};

double lossOf(func::FuncOp f, const std::vector<Tensor> &args, unsigned lossIndex) {
  auto r = ref::evaluate(f, args);
  EXPECT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
  return r ? (*r)[lossIndex][0] : NAN;
}

/// Checks the gradient results of the train step against central differences (every entry, or
/// `sample` random entries per parameter when given). Returns the number of entries checked.
int checkGradients(Harness &h, std::vector<Tensor> args, unsigned lossIndex, double tol,
                   int sample = 0) {
  std::mt19937_64 pick(123);
  auto results = ref::evaluate(h.step, args);
  EXPECT_TRUE(static_cast<bool>(results)) << llvm::toString(results.takeError());
  if (!results)
    return 0;
  unsigned numForward = h.forward.getNumResults();
  int checked = 0;
  for (unsigned r = numForward; r < h.step.getNumResults(); ++r) {
    auto name = h.step.getResultAttrOfType<StringAttr>(r, "elastic.grad_of");
    EXPECT_TRUE(name);
    unsigned argIndex = 0;
    for (; argIndex < h.step.getNumArguments(); ++argIndex)
      if (h.step.getArgAttr(argIndex, "elastic.param") == name)
        break;
    const Tensor &grad = (*results)[r];
    EXPECT_EQ(grad.shape, args[argIndex].shape) << name.str();
    std::vector<int64_t> entries;
    for (int64_t i = 0; i < grad.numel(); ++i)
      entries.push_back(i);
    if (sample > 0 && grad.numel() > sample) {
      std::shuffle(entries.begin(), entries.end(), pick);
      entries.resize(sample);
    }
    for (int64_t i : entries) {
      double saved = args[argIndex][i], eps = 1e-6;
      args[argIndex][i] = saved + eps;
      double plus = lossOf(h.forward, args, lossIndex);
      args[argIndex][i] = saved - eps;
      double minus = lossOf(h.forward, args, lossIndex);
      args[argIndex][i] = saved;
      double fd = (plus - minus) / (2 * eps);
      EXPECT_NEAR(grad[i], fd, tol * std::max(1.0, std::abs(fd))) << name.str() << "[" << i << "]";
      ++checked;
    }
  }
  return checked;
}

std::vector<Tensor> randomArgs(func::FuncOp f, std::mt19937_64 &rng, int64_t batch,
                               int64_t length) {
  std::normal_distribution<double> normal(0.0, 0.5);
  std::vector<Tensor> args;
  for (unsigned i = 0; i < f.getNumArguments(); ++i) {
    auto type = cast<RankedTensorType>(f.getArgument(i).getType());
    std::vector<int64_t> shape;
    for (int64_t d : type.getShape())
      shape.push_back(ShapedType::isDynamic(d) ? (shape.empty() ? batch : length) : d);
    if (type.getRank() == 3 && ShapedType::isDynamic(type.getDimSize(0)))
      shape = {batch, length, type.getDimSize(2)};
    Tensor t(shape);
    if (type.getElementType().isInteger(32)) {
      std::uniform_int_distribution<int> tok(0, 28);
      for (double &v : t.data)
        v = tok(rng);
    } else {
      for (double &v : t.data)
        v = normal(rng);
    }
    args.push_back(std::move(t));
  }
  return args;
}

class SmallModelGradientTest : public ::testing::TestWithParam<const char *> {};

TEST_P(SmallModelGradientTest, MatchesFiniteDifferences) {
  std::string text = kModel;
  for (size_t at; (at = text.find("MODE")) != std::string::npos;)
    text.replace(at, 4, GetParam());
  Harness h(text, "f", 1);
  ASSERT_TRUE(h.step);
  std::mt19937_64 rng(99);
  std::vector<Tensor> args = randomArgs(h.forward, rng, 2, 5);
  // Router probabilities: positive rows summing to 1, with a clear argmax for hard masks.
  args[3] = Tensor({3}, {0.2, 0.5, 0.3});
  args[4] = Tensor({2, 2}, {0.3, 0.7, 0.8, 0.2});
  args[5] = Tensor({3}, {0.9, 0.4, 0.6});
  int checked = checkGradients(h, args, 1, 1e-7);
  EXPECT_GT(checked, 500);
}

INSTANTIATE_TEST_SUITE_P(Masks, SmallModelGradientTest, ::testing::Values("soft", "hard"));

TEST(GradientTest, DenseImportedModelMatchesFiniteDifferences) {
  spec::ModelSpec spec;
  spec.set_name("dense-mlp");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("--");
  a->set_hidden_size(6);
  a->set_intermediate_size(9);
  a->set_vocab_size(256);
  a->set_tie_word_embeddings(true);
  Harness h(spec, "model", 1);
  ASSERT_TRUE(h.step);
  // Tied embeddings: one parameter with two uses, its cotangents summed. Results: logits,
  // loss, then the embedding, 2 x (norm, up, down) and the final norm.
  EXPECT_EQ(h.step.getNumResults(), 2u + 1u + 2u * 3u + 1u);
  std::mt19937_64 rng(5);
  std::vector<Tensor> args = randomArgs(h.forward, rng, 2, 3);
  EXPECT_GT(checkGradients(h, args, 1, 1e-7), 200);
}

TEST(GradientTest, OpWithoutGradientRuleIsAnError) {
  MLIRContext context;
  loadImportDialects(context);
  auto module = parseSourceString<ModuleOp>(R"mlir(
func.func @f(%x: tensor<3xf32> {elastic.param = "x"}, %y: tensor<3xf32>) -> tensor<f32> {
  %d = arith.subf %x, %y : tensor<3xf32>
  %e = elastic.expected_size %d {choices = array<i64: 3, 2, 1>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> tensor<f32>
  return %e : tensor<f32>
}
)mlir",
                                            &context);
  ASSERT_TRUE(module);
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
    diagnostics += d.str();
    return success();
  });
  PassManager pm(&context);
  pm.addPass(createElasticAutodiffPass({"f", 0}));
  EXPECT_TRUE(failed(pm.run(*module)));
  EXPECT_NE(diagnostics.find("has no gradient rule"), std::string::npos) << diagnostics;
}

} // namespace

namespace {

/// The whole imported elastic model of a Mamba2 + MLP + attention hybrid (2 Mamba groups, head
/// dim 3, state 2, conv width 3; GQA with head dim 3): routers,
/// Gumbel-softmax, masks (homogeneous and heterogeneous), keep gates, KD, CE and the resource
/// loss with its anchor.
struct ElasticCase {
  const char *name;
  nestor::spec::MaskMode mode;
  int budget;
  int dropLayers = -1; // >= 0: bias the depth router to drop this many layers
};

void PrintTo(const ElasticCase &c, std::ostream *os) { *os << c.name; }

class ElasticModelGradientTest : public ::testing::TestWithParam<ElasticCase> {};

TEST_P(ElasticModelGradientTest, MatchesFiniteDifferences) {
  spec::ModelSpec spec;
  spec.set_name("hybrid-elastic");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-*M");
  a->set_hidden_size(6);
  a->set_intermediate_size(9);
  a->set_num_attention_heads(4);
  a->set_num_key_value_heads(2);
  a->set_head_dim(3);
  a->set_mamba_num_heads(4);
  a->set_mamba_head_dim(3);
  a->set_n_groups(2);
  a->set_ssm_state_size(2);
  a->set_conv_kernel(3);
  // A large epsilon, so that the masked-norm correction's d phi terms are well above the
  // finite-difference tolerance.
  a->set_layer_norm_epsilon(0.05);
  a->set_vocab_size(256);
  spec::Elastic *e = spec.mutable_elastic();
  for (auto [n, f] : {std::pair{"full", 1.0}, {"mid", 0.8}, {"small", 0.6}}) {
    auto *b = e->add_budgets();
    b->set_name(n);
    b->set_fraction(f);
  }
  for (int64_t k : {6, 4, 3})
    e->mutable_hidden_size()->add_choices(k);
  for (int64_t k : {9, 5})
    e->mutable_intermediate_size()->add_choices(k);
  e->mutable_intermediate_size()->set_heterogeneous(true);
  for (int64_t k : {4, 2})
    e->mutable_num_attention_heads()->add_choices(k);
  e->mutable_num_attention_heads()->set_heterogeneous(GetParam().mode == spec::SOFT);
  for (int64_t k : {4, 2})
    e->mutable_mamba_num_heads()->add_choices(k);
  for (int64_t k : {3, 2})
    e->mutable_mamba_head_dim()->add_choices(k);
  e->mutable_mamba_head_dim()->set_heterogeneous(GetParam().mode == spec::SOFT);
  e->set_max_dropped_layers(2);
  e->set_mask_mode(GetParam().mode);
  e->mutable_router()->set_hidden_size(5);
  spec.mutable_training()->mutable_distillation()->set_trainable_teacher(true);

  Harness h(spec, "elastic_model", 1);
  ASSERT_TRUE(h.step);
  std::mt19937_64 rng(17);
  std::vector<Tensor> args = randomArgs(h.forward, rng, 2, 3);
  h.input(args, "budget") = Tensor::scalar(GetParam().budget);
  h.input(args, "tau") = Tensor::scalar(1.3);
  h.input(args, "logit_scale") = Tensor::scalar(2.0);
  h.input(args, "hard_sample") = Tensor::scalar(0);
  h.input(args, "seed") = Tensor::scalar(11);
  if (GetParam().dropLayers >= 0) {
    for (unsigned i = 0; i < h.forward.getNumArguments(); ++i)
      if (auto n = h.forward.getArgAttrOfType<StringAttr>(i, "elastic.param");
          n && n.getValue() == "routers.depth.fc2.bias")
        args[i][GetParam().dropLayers] += 8.0;
  }
  EXPECT_GT(checkGradients(h, args, 1, 1e-7), 1000);
}

INSTANTIATE_TEST_SUITE_P(
    Routers, ElasticModelGradientTest,
    ::testing::Values(ElasticCase{"soft_budget1", spec::SOFT, 1},
                      ElasticCase{"soft_full_anchor", spec::SOFT, 0},
                      ElasticCase{"hard_budget2", spec::HARD, 2},
                      ElasticCase{"hard_two_layers_dropped", spec::HARD, 1, 2},
                      ElasticCase{"soft_mostly_one_dropped", spec::SOFT, 2, 1}),
    [](const ::testing::TestParamInfo<ElasticCase> &info) { return std::string(info.param.name); });

} // namespace

namespace {

/// The real tiny example spec (2.5M parameters): three sampled entries of every one of its 77
/// parameter tensors, model and routers, against finite differences.
TEST(GradientTest, TinySpecSampledGradientsMatchFiniteDifferences) {
  auto spec =
      spec::loadSpecFile(std::string(std::getenv("NESTOR_SRC") ? std::getenv("NESTOR_SRC") : ".") +
                         "/examples/specs/tiny-hybrid.pbtxt");
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  spec->mutable_elastic()->set_mask_mode(spec::SOFT);
  Harness h(*spec, "elastic_model", 1);
  ASSERT_TRUE(h.step);
  std::mt19937_64 rng(31);
  std::vector<Tensor> args = randomArgs(h.forward, rng, 1, 5);
  h.input(args, "budget") = Tensor::scalar(1);
  h.input(args, "tau") = Tensor::scalar(1.0);
  h.input(args, "logit_scale") = Tensor::scalar(1.5);
  h.input(args, "hard_sample") = Tensor::scalar(0);
  h.input(args, "seed") = Tensor::scalar(4);
  // Weights at a realistic scale, so activations stay O(1) through 8 layers of width 256.
  for (unsigned i = 0; i < h.forward.getNumArguments(); ++i)
    if (h.forward.getArgAttr(i, "elastic.param"))
      for (double &v : args[i].data)
        v *= 0.1;
  EXPECT_EQ(checkGradients(h, args, 1, 1e-6, /*sample=*/3), 77 * 3);
}

} // namespace
