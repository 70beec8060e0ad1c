//===- PermuteTest.cpp - Permutations that leave the function unchanged ----===//
//
// Random permutations of hidden channels, FFN neurons, attention heads within KV groups, Mamba
// heads within groups and Mamba head channels, with every weight moved accordingly, leave the
// parent's logits unchanged (float64 reference); head orders that cross groups are rejected.
//
//===----------------------------------------------------------------------===//
#include "nestor/Permute.h"
#include "nestor/EmitProgram.h"
#include "nestor/Import.h"
#include "nestor/Reference.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

using namespace mlir;
using namespace nestor;
using nestor::ref::Tensor;

namespace {

spec::ModelSpec hybridSpec() {
  spec::ModelSpec spec;
  spec.set_name("perm");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M*-M-");
  a->set_hidden_size(10);
  a->set_intermediate_size(13);
  a->set_mamba_num_heads(6);
  a->set_mamba_head_dim(5);
  a->set_n_groups(3);
  a->set_ssm_state_size(3);
  a->set_conv_kernel(3);
  a->set_num_attention_heads(6);
  a->set_num_key_value_heads(2);
  a->set_head_dim(4);
  a->set_vocab_size(256);
  return spec;
}

std::vector<int64_t> shuffled(int64_t n, std::mt19937_64 &rng) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

/// A random order that keeps each element within its block of `perGroup`.
std::vector<int64_t> shuffledWithinGroups(int64_t n, int64_t perGroup, std::mt19937_64 &rng) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  for (int64_t g = 0; g < n; g += perGroup)
    std::shuffle(v.begin() + g, v.begin() + g + perGroup, rng);
  return v;
}

struct Fixture {
  spec::ModelSpec spec = hybridSpec();
  MLIRContext context;
  OwningOpRef<ModuleOp> module;
  func::FuncOp model;
  ParamMap params;
  Tensor tokens{{2, 6}};

  Fixture() {
    ImportOptions options;
    options.float64 = true;
    auto m = importSpec(context, spec, options);
    EXPECT_TRUE(static_cast<bool>(m)) << llvm::toString(m.takeError());
    module = std::move(*m);
    model = module->lookupSymbol<func::FuncOp>("model");
    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal(0.0, 0.4);
    for (unsigned i = 0; i < model.getNumArguments(); ++i) {
      auto name = model.getArgAttrOfType<StringAttr>(i, "elastic.param");
      if (!name)
        continue;
      auto type = cast<RankedTensorType>(model.getArgument(i).getType());
      Tensor t(std::vector<int64_t>(type.getShape().begin(), type.getShape().end()));
      for (double &v : t.data)
        v = normal(rng);
      params[name.str()] = t;
    }
    for (int64_t i = 0; i < tokens.numel(); ++i)
      tokens[i] = (i * 37 + 11) % 256;
  }

  Tensor logits(const ParamMap &p) {
    std::vector<Tensor> args;
    for (unsigned i = 0; i < model.getNumArguments(); ++i) {
      if (auto name = model.getArgAttrOfType<StringAttr>(i, "elastic.param"))
        args.push_back(p.at(name.str()));
      else
        args.push_back(tokens); // tokens and targets
    }
    auto r = ref::evaluate(model, args);
    EXPECT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
    return r ? (*r)[0] : Tensor();
  }
};

double maxAbsDiff(const Tensor &a, const Tensor &b) {
  double m = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(PermuteTest, EveryAxisPermutedLeavesLogitsUnchanged) {
  Fixture f;
  Tensor before = f.logits(f.params);
  std::mt19937_64 rng(21);
  ModelPermutation perm;
  const spec::Architecture &a = f.spec.architecture();
  perm.hidden = shuffled(a.hidden_size(), rng);
  size_t layers = a.hybrid_override_pattern().size();
  perm.ffn.resize(layers), perm.attnHeads.resize(layers), perm.mambaHeads.resize(layers);
  perm.mambaChannels.resize(layers);
  for (size_t l = 0; l < layers; ++l) {
    switch (a.hybrid_override_pattern()[l]) {
    case '-':
      perm.ffn[l] = shuffled(a.intermediate_size(), rng);
      break;
    case '*':
      perm.attnHeads[l] = shuffledWithinGroups(
          a.num_attention_heads(), a.num_attention_heads() / a.num_key_value_heads(), rng);
      break;
    case 'M':
      perm.mambaHeads[l] =
          shuffledWithinGroups(a.mamba_num_heads(), a.mamba_num_heads() / a.n_groups(), rng);
      perm.mambaChannels[l] = shuffled(a.mamba_head_dim(), rng);
      break;
    }
  }
  ParamMap permuted = f.params;
  ASSERT_FALSE(static_cast<bool>(permuteParams(f.spec, perm, permuted)));
  // The weights really moved...
  EXPECT_GT(maxAbsDiff(permuted.at("backbone.layers.0.mixer.in_proj.weight"),
                       f.params.at("backbone.layers.0.mixer.in_proj.weight")),
            0.1);
  // ...and the function did not.
  EXPECT_LE(maxAbsDiff(f.logits(permuted), before), 1e-10);
}

TEST(PermuteTest, EachAxisAloneLeavesLogitsUnchanged) {
  Fixture f;
  Tensor before = f.logits(f.params);
  std::mt19937_64 rng(8);
  const spec::Architecture &a = f.spec.architecture();
  size_t layers = a.hybrid_override_pattern().size();
  for (int axis = 0; axis < 5; ++axis) {
    ModelPermutation perm;
    perm.ffn.resize(layers), perm.attnHeads.resize(layers), perm.mambaHeads.resize(layers);
    perm.mambaChannels.resize(layers);
    if (axis == 0)
      perm.hidden = shuffled(a.hidden_size(), rng);
    if (axis == 1)
      perm.ffn[2] = shuffled(a.intermediate_size(), rng);
    if (axis == 2)
      perm.attnHeads[1] = shuffledWithinGroups(6, 3, rng);
    if (axis == 3)
      perm.mambaHeads[3] = shuffledWithinGroups(6, 2, rng);
    if (axis == 4)
      perm.mambaChannels[0] = shuffled(a.mamba_head_dim(), rng);
    ParamMap permuted = f.params;
    ASSERT_FALSE(static_cast<bool>(permuteParams(f.spec, perm, permuted))) << axis;
    EXPECT_LE(maxAbsDiff(f.logits(permuted), before), 1e-10) << "axis " << axis;
  }
}

/// The same permutation check on the CPU backend in float32 (the kernels the importance step
/// will run): the permuted model's logits agree within 1e-5.
TEST(PermuteTest, Float32KernelLogitsUnchanged) {
  spec::ModelSpec spec = hybridSpec();
  MLIRContext context;
  auto imported = importSpec(context, spec, {});
  ASSERT_TRUE(static_cast<bool>(imported)) << llvm::toString(imported.takeError());
  OwningOpRef<ModuleOp> module = std::move(*imported);
  PassManager pm(&context);
  KernelPipelineOptions options;
  options.batch = 2;
  options.seqLen = 6;
  buildKernelPipeline(pm, options);
  ASSERT_TRUE(succeeded(pm.run(*module)));
  auto model = module->lookupSymbol<func::FuncOp>("model");
  auto program = prepareCpu(model);
  ASSERT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());

  Fixture f; // float64 parameters and tokens of the same spec
  auto logits = [&](const ParamMap &params) {
    std::vector<std::vector<float>> floats;
    std::vector<int32_t> tokens(f.tokens.data.begin(), f.tokens.data.end());
    std::vector<const void *> args;
    floats.reserve(model.getNumArguments());
    for (unsigned i = 0; i < model.getNumArguments(); ++i) {
      if (auto name = model.getArgAttrOfType<StringAttr>(i, "elastic.param")) {
        const Tensor &t = params.at(name.str());
        floats.emplace_back(t.data.begin(), t.data.end());
        args.push_back(floats.back().data());
      } else {
        args.push_back(tokens.data()); // tokens and targets
      }
    }
    llvm::Error err = toError((*program)->run(args));
    EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
    auto type = cast<RankedTensorType>(model.getResultTypes()[0]);
    const float *p = static_cast<const float *>((*program)->result(0));
    return std::vector<float>(p, p + type.getNumElements());
  };
  std::vector<float> before = logits(f.params);
  std::mt19937_64 rng(5);
  const spec::Architecture &a = spec.architecture();
  ModelPermutation perm;
  perm.hidden = shuffled(a.hidden_size(), rng);
  size_t layers = a.hybrid_override_pattern().size();
  perm.ffn.resize(layers), perm.attnHeads.resize(layers), perm.mambaHeads.resize(layers);
  perm.mambaChannels.resize(layers);
  perm.ffn[2] = shuffled(a.intermediate_size(), rng);
  perm.attnHeads[1] = shuffledWithinGroups(6, 3, rng);
  perm.mambaHeads[0] = shuffledWithinGroups(6, 2, rng);
  perm.mambaChannels[3] = shuffled(a.mamba_head_dim(), rng);
  ParamMap permuted = f.params;
  ASSERT_FALSE(static_cast<bool>(permuteParams(spec, perm, permuted)));
  std::vector<float> after = logits(permuted);
  ASSERT_EQ(after.size(), before.size());
  double maxDiff = 0, scale = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    maxDiff = std::max(maxDiff, std::abs(double(after[i]) - before[i]));
    scale = std::max(scale, std::abs(double(before[i])));
  }
  EXPECT_GT(scale, 0.1); // the logits are not trivially zero
  EXPECT_LE(maxDiff, 1e-5);
}

TEST(PermuteTest, HeadsCrossingGroupsAreRejected) {
  Fixture f;
  ModelPermutation perm;
  perm.mambaHeads.resize(5);
  perm.mambaHeads[0] = {2, 1, 0, 3, 4, 5}; // head 2 (group 1) into group 0
  ParamMap permuted = f.params;
  llvm::Error err = permuteParams(f.spec, perm, permuted);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err))
                .find("layer 0: Mamba heads must be permuted within "
                      "their group"),
            std::string::npos);
  ModelPermutation attn;
  attn.attnHeads.resize(5);
  attn.attnHeads[1] = {3, 1, 2, 0, 4, 5};
  err = permuteParams(f.spec, attn, permuted);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err))
                .find("layer 1: attention heads must be permuted "
                      "within their KV group"),
            std::string::npos);
}

} // namespace
