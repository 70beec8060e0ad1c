//===- ParamCountTest.cpp - The closed-form parameter count ---------------===//
//
// Exact parent counts of the two reference models, the per-layer formulas against a count of
// every weight tensor by hand, and derivatives: the same template instantiated with a dual
// number gives the derivative the resource loss needs, checked against finite differences.
//
//===----------------------------------------------------------------------===//
#include "nestor/ParamCount.h"
#include "nestor/Spec.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <limits>

using namespace nestor::spec;

namespace {

std::string specPath(const std::string &name) {
  const char *src = std::getenv("NESTOR_SRC");
  return std::string(src ? src : ".") + "/examples/specs/" + name;
}

ModelSpec load(const std::string &name) {
  auto spec = loadSpecFile(specPath(name));
  EXPECT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  return spec ? *spec : ModelSpec();
}

TEST(ParamCountTest, NemotronNano12BV2IsExact) {
  ModelSpec spec = load("nemotron-nano-12b-v2.pbtxt");
  EXPECT_EQ(countParams(fixedSizes(spec), parentSizes(spec)).total(), 12310001152.0);
}

TEST(ParamCountTest, NemotronNano9BV2IsExact) {
  ModelSpec spec = load("nemotron-nano-9b-v2.pbtxt");
  EXPECT_EQ(countParams(fixedSizes(spec), parentSizes(spec)).total(), 8888227328.0);
}

TEST(ParamCountTest, LayerFormulasMatchTheWeightTensors) {
  FixedSizes f;
  f.mambaGroups = 2, f.ssmStateSize = 3, f.convKernel = 4;
  f.numKeyValueHeads = 2, f.attnHeadDim = 5, f.vocabSize = 11;
  double d = 7, H = 4, P = 3, F = 9, nh = 6;
  double hp = H * P, gn = 2 * 3;
  // Mamba: norm, in_proj, conv weight + bias, dt_bias + A_log + D, gated-norm weight, out_proj.
  double mamba =
      d + (2 * hp + 2 * gn + H) * d + (hp + 2 * gn) * 4 + (hp + 2 * gn) + 3 * H + hp + d * hp;
  EXPECT_EQ(mambaLayerParams(f, d, H, P), mamba);
  // The same three counts worked out by hand, so a slip shared by formula and test shows:
  // Mamba 7 + 7*40 + 24*4 + 24 + 12 + 12 + 84, attention 7 + 210 + 140 + 210, MLP 7 + 63 + 63.
  EXPECT_EQ(mamba, 515.0);
  EXPECT_EQ(attentionLayerParams(f, d, nh), 567.0);
  EXPECT_EQ(mlpLayerParams(f, d, F), 133.0);
  // Attention: norm, q, k, v, o.
  EXPECT_EQ(attentionLayerParams(f, d, nh), d + nh * 5 * d + 2 * (2 * 5 * d) + d * nh * 5);
  // MLP: norm, up, down.
  EXPECT_EQ(mlpLayerParams(f, d, F), d + F * d + d * F);

  f.layers = {LayerKind::Mamba, LayerKind::MLP};
  ModelSizes<double> s;
  s.hidden = d;
  s.layers.resize(2);
  s.layers[0].mambaHeads = H, s.layers[0].mambaHeadDim = P;
  s.layers[1].ffn = F;
  auto b = countParams(f, s);
  EXPECT_EQ(b.total(), 2 * 11 * d + d + mamba + mlpLayerParams(f, d, F));
  f.tiedEmbeddings = true;
  EXPECT_EQ(countParams(f, s).total(), 11 * d + d + mamba + mlpLayerParams(f, d, F));
  // A dropped layer counts nothing; a half-kept one half.
  s.layers[1].keep = 0.0;
  EXPECT_EQ(countParams(f, s).mlp, 0.0);
  s.layers[1].keep = 0.5;
  EXPECT_EQ(countParams(f, s).mlp, 0.5 * mlpLayerParams(f, d, F));
}

/// A forward-mode dual number: value and derivative.
struct Dual {
  double v = 0, d = 0;
  Dual() = default;
  Dual(double v) : v(v) {} // NOLINT: constants convert implicitly, as in the template
  Dual(double v, double d) : v(v), d(d) {}
};
Dual operator+(Dual a, Dual b) { return {a.v + b.v, a.d + b.d}; }
Dual operator*(Dual a, Dual b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }

TEST(ParamCountTest, DualNumberDerivativeMatchesFiniteDifferences) {
  ModelSpec spec = load("tiny-hybrid.pbtxt");
  FixedSizes f = fixedSizes(spec);
  ModelSizes<double> base = parentSizes(spec);
  // Fractional sizes, as the resource loss sees them.
  base.hidden = 231.4;
  for (auto &l : base.layers)
    l.ffn = 517.3, l.attnHeads = 6.6, l.mambaHeads = 5.2, l.mambaHeadDim = 41.7, l.keep = 0.8;

  // One direction per axis: hidden, every layer's FFN, and layer 3's keep probability.
  auto lift = [&](int axis) {
    ModelSizes<Dual> s;
    s.hidden = Dual(base.hidden, axis == 0 ? 1.0 : 0.0);
    for (size_t i = 0; i < base.layers.size(); ++i) {
      LayerSizes<Dual> l;
      const auto &b = base.layers[i];
      l.ffn = Dual(b.ffn, axis == 1 ? 1.0 : 0.0);
      l.attnHeads = Dual(b.attnHeads, axis == 2 ? 1.0 : 0.0);
      l.mambaHeads = Dual(b.mambaHeads, axis == 3 ? 1.0 : 0.0);
      l.mambaHeadDim = Dual(b.mambaHeadDim, axis == 4 ? 1.0 : 0.0);
      l.keep = Dual(b.keep, axis == 5 && i == 3 ? 1.0 : 0.0);
      s.layers.push_back(l);
    }
    return s;
  };
  auto perturbed = [&](int axis, double h) {
    ModelSizes<double> s = base;
    if (axis == 0)
      s.hidden += h;
    for (size_t i = 0; i < s.layers.size(); ++i) {
      auto &l = s.layers[i];
      l.ffn += axis == 1 ? h : 0.0;
      l.attnHeads += axis == 2 ? h : 0.0;
      l.mambaHeads += axis == 3 ? h : 0.0;
      l.mambaHeadDim += axis == 4 ? h : 0.0;
      l.keep += axis == 5 && i == 3 ? h : 0.0;
    }
    return countParams(f, s).total();
  };
  for (int axis = 0; axis < 6; ++axis) {
    Dual count = countParams(f, lift(axis)).total();
    EXPECT_DOUBLE_EQ(count.v, countParams(f, base).total());
    double h = 1e-3;
    double fd = (perturbed(axis, h) - perturbed(axis, -h)) / (2 * h);
    EXPECT_NEAR(count.d, fd, 1e-6 * std::max(1.0, std::abs(fd))) << "axis " << axis;
    EXPECT_GT(count.d, 0.0) << "the count grows with every axis (" << axis << ")";
  }
}

/// Every axis of every example spec: each smaller choice (and each further dropped layer) gives a
/// strictly smaller count, so the nesting of METHOD.md §2 is also a nesting of sizes.
TEST(ParamCountTest, CountIsMonotonicInEveryAxis) {
  for (const char *name :
       {"tiny-hybrid.pbtxt", "nemotron-nano-12b-v2.pbtxt", "nemotron-nano-9b-v2.pbtxt"}) {
    ModelSpec spec = load(name);
    FixedSizes f = fixedSizes(spec);
    const Elastic &e = spec.elastic();
    struct Axis {
      const AxisChoices &choices;
      double LayerSizes<double>::*field; // nullptr: hidden
    } axes[] = {{e.hidden_size(), nullptr},
                {e.intermediate_size(), &LayerSizes<double>::ffn},
                {e.num_attention_heads(), &LayerSizes<double>::attnHeads},
                {e.mamba_num_heads(), &LayerSizes<double>::mambaHeads},
                {e.mamba_head_dim(), &LayerSizes<double>::mambaHeadDim}};
    for (const Axis &axis : axes) {
      ASSERT_GE(axis.choices.choices_size(), 2) << name << ": every example axis is elastic";
      double previous = std::numeric_limits<double>::infinity();
      for (int64_t k : axis.choices.choices()) {
        ModelSizes<double> s = parentSizes(spec);
        if (!axis.field)
          s.hidden = double(k);
        for (auto &l : s.layers)
          if (axis.field)
            l.*axis.field = double(k);
        double n = countParams(f, s).total();
        EXPECT_LT(n, previous) << name << " choice " << k;
        previous = n;
      }
    }
    ModelSizes<double> s = parentSizes(spec);
    double previous = countParams(f, s).total();
    for (size_t i = 0; i < s.layers.size(); ++i) {
      s.layers[i].keep = 0.0;
      double n = countParams(f, s).total();
      EXPECT_LT(n, previous) << name << " dropping layer " << i;
      previous = n;
    }
    // With every layer dropped only the embedding, head and final norm remain.
    auto b = countParams(f, s);
    EXPECT_EQ(b.total(), b.embedding + b.lmHead + b.finalNorm);
  }
}

} // namespace
