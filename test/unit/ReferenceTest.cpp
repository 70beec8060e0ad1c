//===- ReferenceTest.cpp - Semantics of the elastic dialect, checked -------===//
//
// Runs imported programs through the float64 reference evaluator and checks the identities the
// method rests on: a masked model at a hard choice equals the dense model with the prefix sizes
// (the masked-norm correction, per-group head trimming, dropped layers), for homogeneous and
// heterogeneous choices at odd sizes; Gumbel noise is Gumbel-distributed and reproducible.
//
//===----------------------------------------------------------------------===//
#include "nestor/Reference.h"
#include "nestor/Import.h"
#include "nestor/Spec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>
#include <random>

using namespace mlir;
using namespace nestor;
using nestor::ref::Tensor;
namespace pb = nestor::spec;

namespace {

/// An odd-shaped hybrid: 3 Mamba groups, head dim 10, 3 KV groups, vocabulary 37.
pb::ModelSpec oddSpec() {
  pb::ModelSpec spec;
  spec.set_name("odd");
  pb::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M*-M-*M");
  a->set_hidden_size(30);
  a->set_intermediate_size(44);
  a->set_mamba_num_heads(6);
  a->set_mamba_head_dim(10);
  a->set_n_groups(3);
  a->set_ssm_state_size(4);
  a->set_conv_kernel(4);
  a->set_num_attention_heads(6);
  a->set_num_key_value_heads(3);
  a->set_head_dim(6);
  a->set_vocab_size(37);
  pb::Elastic *e = spec.mutable_elastic();
  for (auto [name, fraction] : {std::pair{"full", 1.0}, {"mid", 0.7}, {"small", 0.5}}) {
    pb::Budget *b = e->add_budgets();
    b->set_name(name);
    b->set_fraction(fraction);
  }
  for (int64_t k : {30, 24, 18})
    e->mutable_hidden_size()->add_choices(k);
  for (int64_t k : {44, 30, 20})
    e->mutable_intermediate_size()->add_choices(k);
  for (int64_t k : {6, 3})
    e->mutable_num_attention_heads()->add_choices(k);
  for (int64_t k : {6, 3})
    e->mutable_mamba_num_heads()->add_choices(k);
  for (int64_t k : {10, 8, 6})
    e->mutable_mamba_head_dim()->add_choices(k);
  e->set_max_dropped_layers(2);
  e->set_mask_mode(pb::HARD);
  e->mutable_router()->set_hidden_size(8);
  return spec;
}

using Params = std::map<std::string, Tensor>;

/// Arguments of `func`: run-time inputs from `inputs`, parameters from `params`.
std::vector<Tensor> arguments(func::FuncOp func, const std::map<std::string, Tensor> &inputs,
                              const Params &params) {
  std::vector<Tensor> args;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    if (auto input = func.getArgAttrOfType<StringAttr>(i, "elastic.input"))
      args.push_back(inputs.at(input.str()));
    else
      args.push_back(params.at(func.getArgAttrOfType<StringAttr>(i, "elastic.param").str()));
  }
  return args;
}

/// Random parameters for every `elastic.param` argument of `func`.
Params randomParams(func::FuncOp func, std::mt19937_64 &rng) {
  std::normal_distribution<double> normal(0.0, 0.3);
  Params params;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    auto name = func.getArgAttrOfType<StringAttr>(i, "elastic.param");
    if (!name)
      continue;
    auto type = cast<RankedTensorType>(func.getArgument(i).getType());
    Tensor t(std::vector<int64_t>(type.getShape().begin(), type.getShape().end()));
    for (double &v : t.data)
      v = normal(rng);
    params[name.str()] = std::move(t);
  }
  return params;
}

std::vector<int64_t> range(int64_t n) {
  std::vector<int64_t> r(n);
  std::iota(r.begin(), r.end(), 0);
  return r;
}

/// `t` restricted to `rows` (dimension 0) and, for matrices, `cols` (dimension 1).
Tensor gather(const Tensor &t, const std::vector<int64_t> &rows,
              const std::vector<int64_t> &cols = {}) {
  if (t.shape.size() == 1) {
    Tensor r({static_cast<int64_t>(rows.size())});
    for (size_t i = 0; i < rows.size(); ++i)
      r[i] = t[rows[i]];
    return r;
  }
  int64_t width = t.dim(1);
  Tensor r({static_cast<int64_t>(rows.size()), static_cast<int64_t>(cols.size())});
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < cols.size(); ++j)
      r[i * cols.size() + j] = t[rows[i] * width + cols[j]];
  return r;
}

std::vector<int64_t> concat(std::initializer_list<std::vector<int64_t>> parts) {
  std::vector<int64_t> r;
  for (const auto &p : parts)
    r.insert(r.end(), p.begin(), p.end());
  return r;
}

std::vector<int64_t> offset(std::vector<int64_t> v, int64_t by) {
  for (int64_t &x : v)
    x += by;
  return v;
}

/// The chosen sizes of one layer.
struct LayerChoice {
  int64_t ffn, attnHeads, mambaHeads, mambaHeadDim;
};

/// Slices the parent's parameters by hand to the dense model with the given prefix sizes,
/// keeping `kept` layers (parent indices, in order): the weight map `elastic-slice` will apply.
Params sliceParams(const pb::ModelSpec &spec, const Params &parent, int64_t hidden,
                   const std::vector<LayerChoice> &choices, const std::vector<int64_t> &kept) {
  const pb::Architecture &a = spec.architecture();
  int64_t H = a.mamba_num_heads(), P = a.mamba_head_dim(), G = a.n_groups();
  int64_t GN = G * a.ssm_state_size(), HP = H * P;
  int64_t nh = a.num_attention_heads(), nkv = a.num_key_value_heads(), hd = a.head_dim();
  std::vector<int64_t> d = range(hidden);
  Params out;
  out["backbone.embeddings.weight"] =
      gather(parent.at("backbone.embeddings.weight"), range(a.vocab_size()), d);
  out["backbone.norm_f.weight"] = gather(parent.at("backbone.norm_f.weight"), d);
  out["lm_head.weight"] = gather(parent.at("lm_head.weight"), range(a.vocab_size()), d);
  for (size_t j = 0; j < kept.size(); ++j) {
    int64_t layer = kept[j];
    auto src = [&](const std::string &s) {
      return parent.at("backbone.layers." + std::to_string(layer) + "." + s);
    };
    auto dst = [&](const std::string &s) -> Tensor & {
      return out["backbone.layers." + std::to_string(j) + "." + s];
    };
    const LayerChoice &c = choices[layer];
    dst("norm.weight") = gather(src("norm.weight"), d);
    switch (a.hybrid_override_pattern()[layer]) {
    case 'M': {
      std::vector<int64_t> heads, chans;
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < c.mambaHeads / G; ++i)
          heads.push_back(g * (H / G) + i);
      for (int64_t h : heads)
        for (int64_t p = 0; p < c.mambaHeadDim; ++p)
          chans.push_back(h * P + p);
      std::vector<int64_t> bc = range(2 * GN);
      dst("mixer.in_proj.weight") = gather(
          src("mixer.in_proj.weight"),
          concat({chans, offset(chans, HP), offset(bc, 2 * HP), offset(heads, 2 * HP + 2 * GN)}),
          d);
      std::vector<int64_t> convRows = concat({chans, offset(bc, HP)});
      dst("mixer.conv1d.weight") =
          gather(src("mixer.conv1d.weight"), convRows, range(a.conv_kernel()));
      dst("mixer.conv1d.bias") = gather(src("mixer.conv1d.bias"), convRows);
      for (const char *name : {"mixer.dt_bias", "mixer.A_log", "mixer.D"})
        dst(name) = gather(src(name), heads);
      dst("mixer.norm.weight") = gather(src("mixer.norm.weight"), chans);
      dst("mixer.out_proj.weight") = gather(src("mixer.out_proj.weight"), d, chans);
      break;
    }
    case '*': {
      std::vector<int64_t> q;
      for (int64_t kv = 0; kv < nkv; ++kv)
        for (int64_t i = 0; i < c.attnHeads / nkv; ++i)
          for (int64_t e = 0; e < hd; ++e)
            q.push_back((kv * (nh / nkv) + i) * hd + e);
      dst("mixer.q_proj.weight") = gather(src("mixer.q_proj.weight"), q, d);
      dst("mixer.k_proj.weight") = gather(src("mixer.k_proj.weight"), range(nkv * hd), d);
      dst("mixer.v_proj.weight") = gather(src("mixer.v_proj.weight"), range(nkv * hd), d);
      dst("mixer.o_proj.weight") = gather(src("mixer.o_proj.weight"), d, q);
      break;
    }
    default:
      dst("mixer.up_proj.weight") = gather(src("mixer.up_proj.weight"), range(c.ffn), d);
      dst("mixer.down_proj.weight") = gather(src("mixer.down_proj.weight"), d, range(c.ffn));
      break;
    }
  }
  return out;
}

/// Makes the routers pick `choice[axis][row]` with probability 1 (in float64): zero weights and
/// a bias of 1000 on the chosen logit.
void forceRouters(Params &params, const std::map<std::string, std::vector<int64_t>> &choice) {
  for (const auto &[axis, rows] : choice) {
    std::string prefix = "routers." + axis;
    for (const char *w : {".fc1.weight", ".fc1.bias", ".fc2.weight"})
      std::fill(params.at(prefix + w).data.begin(), params.at(prefix + w).data.end(), 0.0);
    Tensor &bias = params.at(prefix + ".fc2.bias");
    int64_t n = bias.numel() / static_cast<int64_t>(rows.size());
    std::fill(bias.data.begin(), bias.data.end(), 0.0);
    for (size_t r = 0; r < rows.size(); ++r)
      bias[r * n + rows[r]] = 1000.0;
  }
}

double maxAbsDiff(const Tensor &a, const Tensor &b) {
  EXPECT_EQ(a.shape, b.shape);
  double m = 0.0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

struct Case {
  const char *name;
  bool heterogeneous;
  std::map<std::string, std::vector<int64_t>> choice; // axis -> chosen index per row
};

void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

class MaskedEqualsSlicedTest : public ::testing::TestWithParam<Case> {};

TEST_P(MaskedEqualsSlicedTest, LogitsAgree) {
  const Case &c = GetParam();
  pb::ModelSpec spec = oddSpec();
  if (c.heterogeneous) {
    pb::Elastic *e = spec.mutable_elastic();
    e->mutable_intermediate_size()->set_heterogeneous(true);
    e->mutable_num_attention_heads()->set_heterogeneous(true);
    e->mutable_mamba_num_heads()->set_heterogeneous(true);
    e->mutable_mamba_head_dim()->set_heterogeneous(true);
  }
  MLIRContext context;
  ImportOptions options;
  options.float64 = true;
  auto module = importSpec(context, spec, options);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto elastic = (*module)->lookupSymbol<func::FuncOp>("elastic_model");
  ASSERT_TRUE(elastic);

  std::mt19937_64 rng(1234);
  Params params = randomParams(elastic, rng);
  forceRouters(params, c.choice);

  const pb::Elastic &e = spec.elastic();
  const std::string pattern = spec.architecture().hybrid_override_pattern();
  int64_t layers = static_cast<int64_t>(pattern.size());
  // Resolve each layer's sizes from the chosen indices.
  auto pick = [&](const std::string &axis, const pb::AxisChoices &axisChoices, int64_t row) {
    const std::vector<int64_t> &rows = c.choice.at(axis);
    return axisChoices.choices(rows[rows.size() == 1 ? 0 : row]);
  };
  std::vector<LayerChoice> perLayer(layers);
  int64_t seen[3] = {0, 0, 0};
  for (int64_t i = 0; i < layers; ++i) {
    LayerChoice &l = perLayer[i];
    if (pattern[i] == 'M') {
      l.mambaHeads = pick("mamba_num_heads", e.mamba_num_heads(), seen[0]);
      l.mambaHeadDim = pick("mamba_head_dim", e.mamba_head_dim(), seen[0]++);
    } else if (pattern[i] == '*') {
      l.attnHeads = pick("num_attention_heads", e.num_attention_heads(), seen[1]++);
    } else {
      l.ffn = pick("intermediate_size", e.intermediate_size(), seen[2]++);
    }
  }
  int64_t hidden = pick("hidden_size", e.hidden_size(), 0);
  // Depth: dropping k layers removes the k least important, here (default order) the last k.
  int64_t dropped = c.choice.at("depth")[0];
  std::vector<int64_t> kept = range(layers - dropped);

  // Tokens and inputs.
  int64_t batch = 2, length = 7;
  Tensor tokens({batch, length}), targets({batch, length});
  std::uniform_int_distribution<int> tok(0, spec.architecture().vocab_size() - 1);
  for (int64_t i = 0; i < tokens.numel(); ++i)
    tokens[i] = tok(rng), targets[i] = tok(rng);
  std::map<std::string, Tensor> inputs = {
      {"tokens", tokens},
      {"targets", targets},
      {"teacher_logits", Tensor({batch, length, spec.architecture().vocab_size()})},
      {"budget", Tensor::scalar(1)},
      {"tau", Tensor::scalar(1.0)},
      {"logit_scale", Tensor::scalar(1.0)},
      {"hard_sample", Tensor::scalar(0)},
      {"seed", Tensor::scalar(7)}};
  auto masked = ref::evaluate(elastic, arguments(elastic, inputs, params));
  ASSERT_TRUE(static_cast<bool>(masked)) << llvm::toString(masked.takeError());

  bool uniformRows = true;
  for (const auto &entry : c.choice) {
    const auto &rows = entry.second;
    uniformRows = uniformRows &&
                  std::all_of(rows.begin(), rows.end(), [&](int64_t r) { return r == rows[0]; });
  }
  if (!uniformRows) {
    // Per-layer sizes that differ have no dense spec yet; for the FFN and attention axes
    // (no norm correction involved) the masked model equals the unmasked parent with every
    // weight outside each layer's prefix set to zero, which checks that each layer reads its
    // own row of the heterogeneous router.
    ASSERT_EQ(hidden, e.hidden_size().choices(0));
    ASSERT_EQ(dropped, 0);
    Params zeroed = params;
    const pb::Architecture &a = spec.architecture();
    int64_t d = a.hidden_size(), hd = a.head_dim(), nh = a.num_attention_heads();
    int64_t perGroup = nh / a.num_key_value_heads();
    for (int64_t i = 0; i < layers; ++i) {
      auto name = [&](const char *s) { return "backbone.layers." + std::to_string(i) + s; };
      const LayerChoice &l = perLayer[i];
      if (pattern[i] == '-') {
        Tensor &up = zeroed.at(name(".mixer.up_proj.weight"));
        Tensor &down = zeroed.at(name(".mixer.down_proj.weight"));
        int64_t f = up.dim(0);
        for (int64_t r = l.ffn; r < f; ++r)
          for (int64_t col = 0; col < d; ++col)
            up[r * d + col] = 0.0, down[col * f + r] = 0.0;
      } else if (pattern[i] == '*') {
        Tensor &o = zeroed.at(name(".mixer.o_proj.weight"));
        for (int64_t h = 0; h < nh; ++h)
          if (h % perGroup >= l.attnHeads / a.num_key_value_heads())
            for (int64_t row = 0; row < d; ++row)
              for (int64_t e2 = 0; e2 < hd; ++e2)
                o[row * nh * hd + h * hd + e2] = 0.0;
      } else {
        ASSERT_EQ(l.mambaHeads, a.mamba_num_heads());
        ASSERT_EQ(l.mambaHeadDim, a.mamba_head_dim());
      }
    }
    auto parent = (*module)->lookupSymbol<func::FuncOp>("parent");
    auto reference = ref::evaluate(parent, arguments(parent, inputs, zeroed));
    ASSERT_TRUE(static_cast<bool>(reference)) << llvm::toString(reference.takeError());
    EXPECT_LE(maxAbsDiff((*masked)[0], (*reference)[0]), 1e-10) << c.name;
    return;
  }

  // The dense model with the chosen sizes and the kept layers, weights sliced by hand.
  pb::ModelSpec dense = spec;
  dense.clear_elastic();
  pb::Architecture *a = dense.mutable_architecture();
  std::string densePattern;
  for (int64_t layer : kept)
    densePattern += pattern[layer];
  a->set_hybrid_override_pattern(densePattern);
  a->set_hidden_size(hidden);
  a->set_intermediate_size(perLayer[pattern.find('-')].ffn);
  a->set_num_attention_heads(perLayer[pattern.find('*')].attnHeads);
  a->set_mamba_num_heads(perLayer[pattern.find('M')].mambaHeads);
  a->set_mamba_head_dim(perLayer[pattern.find('M')].mambaHeadDim);
  Params sliced = sliceParams(spec, params, hidden, perLayer, kept);

  MLIRContext denseContext;
  auto denseModule = importSpec(denseContext, dense, options);
  ASSERT_TRUE(static_cast<bool>(denseModule)) << llvm::toString(denseModule.takeError());
  auto model = (*denseModule)->lookupSymbol<func::FuncOp>("model");
  ASSERT_TRUE(model);
  auto reference = ref::evaluate(model, arguments(model, inputs, sliced));
  ASSERT_TRUE(static_cast<bool>(reference)) << llvm::toString(reference.takeError());
  EXPECT_LE(maxAbsDiff((*masked)[0], (*reference)[0]), 1e-10) << c.name;
  // The masked model's cross-entropy is the dense model's too.
  EXPECT_NEAR((*masked)[3][0], (*reference)[1][0], 1e-10);
  // And a smaller choice really changes the function (the check above is not vacuous).
  if (hidden < spec.architecture().hidden_size()) {
    auto full = (*module)->lookupSymbol<func::FuncOp>("parent");
    auto parentLogits = ref::evaluate(full, arguments(full, inputs, params));
    ASSERT_TRUE(static_cast<bool>(parentLogits));
    EXPECT_GT(maxAbsDiff((*masked)[0], (*parentLogits)[0]), 1e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(HardChoices, MaskedEqualsSlicedTest,
                         ::testing::Values(Case{"full",
                                                false,
                                                {{"hidden_size", {0}},
                                                 {"intermediate_size", {0}},
                                                 {"num_attention_heads", {0}},
                                                 {"mamba_num_heads", {0}},
                                                 {"mamba_head_dim", {0}},
                                                 {"depth", {0}}}},
                                           Case{"smallest",
                                                false,
                                                {{"hidden_size", {2}},
                                                 {"intermediate_size", {2}},
                                                 {"num_attention_heads", {1}},
                                                 {"mamba_num_heads", {1}},
                                                 {"mamba_head_dim", {2}},
                                                 {"depth", {2}}}},
                                           Case{"mixed",
                                                false,
                                                {{"hidden_size", {1}},
                                                 {"intermediate_size", {2}},
                                                 {"num_attention_heads", {0}},
                                                 {"mamba_num_heads", {1}},
                                                 {"mamba_head_dim", {1}},
                                                 {"depth", {1}}}},
                                           Case{"heterogeneous_uniform_rows",
                                                true,
                                                {{"hidden_size", {1}},
                                                 {"intermediate_size", {2, 2}},
                                                 {"num_attention_heads", {1, 1}},
                                                 {"mamba_num_heads", {1, 1, 1}},
                                                 {"mamba_head_dim", {1, 1, 1}},
                                                 {"depth", {1}}}},
                                           Case{"heterogeneous_rows_differ",
                                                true,
                                                {{"hidden_size", {0}},
                                                 {"intermediate_size", {2, 1}},
                                                 {"num_attention_heads", {1, 0}},
                                                 {"mamba_num_heads", {0, 0, 0}},
                                                 {"mamba_head_dim", {0, 0, 0}},
                                                 {"depth", {0}}}}),
                         [](const ::testing::TestParamInfo<Case> &info) {
                           return std::string(info.param.name);
                         });

TEST(GumbelNoiseTest, IsGumbelDistributedAndReproducible) {
  const int n = 200000;
  double sum = 0.0, sumSq = 0.0;
  for (int i = 0; i < n; ++i) {
    double g = ref::gumbelNoise(42, 3, i);
    ASSERT_TRUE(std::isfinite(g));
    sum += g, sumSq += g * g;
  }
  double mean = sum / n, var = sumSq / n - mean * mean;
  // Gumbel(0, 1): mean = Euler-Mascheroni 0.5772, variance = pi^2 / 6.
  EXPECT_NEAR(mean, 0.5772156649, 0.01);
  EXPECT_NEAR(var, M_PI * M_PI / 6.0, 0.03);
  EXPECT_EQ(ref::gumbelNoise(42, 3, 17), ref::gumbelNoise(42, 3, 17));
  EXPECT_NE(ref::gumbelNoise(42, 3, 17), ref::gumbelNoise(42, 4, 17));
  EXPECT_NE(ref::gumbelNoise(42, 3, 17), ref::gumbelNoise(43, 3, 17));
}

} // namespace
