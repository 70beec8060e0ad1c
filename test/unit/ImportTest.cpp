//===- ImportTest.cpp - Spec -> elastic IR ---------------------------------===//
//
// The importer's IR agrees with the spec: its parameter tensors add up to the closed-form
// parent count, every mask matches the dimension it masks, and bad options are errors.
//
//===----------------------------------------------------------------------===//
#include "nestor/Import.h"
#include "dialects/elastic/ElasticOps.h"
#include "nestor/ParamCount.h"
#include "nestor/Spec.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <string>

using namespace mlir;
using namespace nestor;

namespace {

std::string specPath(const std::string &name) {
  const char *src = std::getenv("NESTOR_SRC");
  return std::string(src ? src : ".") + "/examples/specs/" + name;
}

spec::ModelSpec loadOrDie(const std::string &name) {
  auto spec = spec::loadSpecFile(specPath(name));
  if (!spec) {
    ADD_FAILURE() << llvm::toString(spec.takeError());
    return {};
  }
  return *spec;
}

/// Runs elastic-count-params on every function and returns @name's model parameter count.
int64_t countIRParams(ModuleOp module, StringRef name) {
  PassManager pm(module.getContext());
  pm.addNestedPass<func::FuncOp>(createElasticCountParamsPass());
  EXPECT_TRUE(succeeded(pm.run(module)));
  auto func = module.lookupSymbol<func::FuncOp>(name);
  EXPECT_TRUE(func) << "no function @" << name.str();
  auto attr = func->getAttrOfType<IntegerAttr>("elastic.num_params");
  EXPECT_TRUE(attr);
  return attr ? attr.getInt() : -1;
}

class ImportExampleTest : public ::testing::TestWithParam<const char *> {};

TEST_P(ImportExampleTest, ParameterTensorsMatchClosedFormCount) {
  spec::ModelSpec spec = loadOrDie(GetParam());
  MLIRContext context;
  auto module = importSpec(context, spec);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto expected = spec::countParams(spec::fixedSizes(spec), spec::parentSizes(spec)).total();
  StringRef fn = spec.has_elastic() ? "elastic_model" : "model";
  EXPECT_EQ(countIRParams(**module, fn), static_cast<int64_t>(expected));
  if (spec.has_elastic()) {
    EXPECT_EQ(countIRParams(**module, "parent"), static_cast<int64_t>(expected));
  }
}

TEST_P(ImportExampleTest, EveryMaskMatchesWhatItMasks) {
  spec::ModelSpec spec = loadOrDie(GetParam());
  MLIRContext context;
  auto module = importSpec(context, spec);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  int masked = 0;
  (*module)->walk([&](elastic::MaskedOpInterface op) {
    SmallVector<elastic::MaskUse> uses;
    ASSERT_TRUE(succeeded(op.getMaskUses(uses)));
    for (const elastic::MaskUse &use : uses) {
      auto type = cast<elastic::MaskType>(op->getOperand(use.operandIndex).getType());
      EXPECT_EQ(type.getAxis(), use.axis);
      EXPECT_EQ(type.getSize(), use.size);
      EXPECT_EQ(type.getGroups(), use.groups);
      // Both ways: the mask comes from a prefix_mask whose first choice is the full size.
      auto producer = op->getOperand(use.operandIndex).getDefiningOp<elastic::PrefixMaskOp>();
      ASSERT_TRUE(producer);
      EXPECT_EQ(producer.getChoices().front(), use.size);
      ++masked;
    }
  });
  if (spec.has_elastic()) {
    EXPECT_GT(masked, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Examples, ImportExampleTest,
                         ::testing::Values("tiny-hybrid.pbtxt", "nemotron-nano-12b-v2.pbtxt",
                                           "nemotron-nano-9b-v2.pbtxt"));

TEST(ImportTest, Nano12BIRHoldsTheExactParentCount) {
  spec::ModelSpec spec = loadOrDie("nemotron-nano-12b-v2.pbtxt");
  MLIRContext context;
  auto module = importSpec(context, spec);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  EXPECT_EQ(countIRParams(**module, "parent"), 12310001152LL);
}

TEST(ImportTest, Float64ProgramUsesF64Everywhere) {
  spec::ModelSpec spec = loadOrDie("tiny-hybrid.pbtxt");
  MLIRContext context;
  ImportOptions options;
  options.float64 = true;
  auto module = importSpec(context, spec, options);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  (*module)->walk([&](elastic::RMSNormOp op) {
    EXPECT_TRUE(cast<RankedTensorType>(op.getType()).getElementType().isF64());
  });
}

TEST(ImportTest, DenseSpecHasOneModelFunctionWithoutRouters) {
  spec::ModelSpec spec = loadOrDie("tiny-hybrid.pbtxt");
  spec.clear_elastic();
  MLIRContext context;
  auto module = importSpec(context, spec);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  EXPECT_TRUE((*module).get().lookupSymbol<func::FuncOp>("model"));
  EXPECT_FALSE((*module).get().lookupSymbol<func::FuncOp>("elastic_model"));
  int routers = 0;
  (*module)->walk([&](elastic::RouterOp) { ++routers; });
  EXPECT_EQ(routers, 0);
}

TEST(ImportTest, DepthOrderIsCarriedIntoLayerKeep) {
  spec::ModelSpec spec = loadOrDie("tiny-hybrid.pbtxt");
  ASSERT_GT(spec.elastic().max_dropped_layers(), 0);
  int64_t layers = spec.architecture().hybrid_override_pattern().size();
  ImportOptions options;
  for (int64_t i = 0; i < layers; ++i)
    options.depthOrder.push_back(i);
  MLIRContext context;
  auto module = importSpec(context, spec, options);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  // Two layer_keeps read the depth router: the hard gates of the model and the soft keep
  // probabilities of the resource loss (METHOD.md §6); both follow the order.
  std::vector<elastic::MaskMode> modes;
  (*module)->walk([&](elastic::LayerKeepOp op) {
    EXPECT_EQ(op.getOrder(), ArrayRef<int64_t>(options.depthOrder));
    modes.push_back(op.getMode());
  });
  EXPECT_EQ(modes,
            (std::vector<elastic::MaskMode>{elastic::MaskMode::Hard, elastic::MaskMode::Soft}));
}

TEST(ImportTest, BadDepthOrderIsAnError) {
  spec::ModelSpec spec = loadOrDie("tiny-hybrid.pbtxt");
  MLIRContext context;
  ImportOptions options;
  options.depthOrder = {0, 0};
  auto module = importSpec(context, spec, options);
  ASSERT_FALSE(static_cast<bool>(module));
  EXPECT_NE(llvm::toString(module.takeError()).find("permutation"), std::string::npos);
}

TEST(ImportTest, HeterogeneousAxisGetsOneMaskRowPerLayer) {
  spec::ModelSpec spec = loadOrDie("tiny-hybrid.pbtxt");
  ASSERT_GT(spec.elastic().intermediate_size().choices_size(), 0);
  spec.mutable_elastic()->mutable_intermediate_size()->set_heterogeneous(true);
  MLIRContext context;
  auto module = importSpec(context, spec);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  std::vector<int64_t> rows;
  (*module)->walk([&](elastic::PrefixMaskOp op) {
    if (op.getType().getAxis() == elastic::AxisKind::FFN) {
      ASSERT_TRUE(op.getRow().has_value());
      rows.push_back(static_cast<int64_t>(*op.getRow()));
    }
  });
  int64_t mlpLayers = 0;
  for (char c : spec.architecture().hybrid_override_pattern())
    mlpLayers += c == '-';
  ASSERT_EQ(static_cast<int64_t>(rows.size()), mlpLayers);
  for (int64_t i = 0; i < mlpLayers; ++i)
    EXPECT_EQ(rows[i], i);
}

} // namespace

namespace {

/// Random valid specs of every shape the rules allow import into verified IR whose parameter
/// tensors add up to the closed-form count.
TEST(ImportTest, RandomValidSpecsImport) {
  std::mt19937 rng(2026);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int trial = 0; trial < 60; ++trial) {
    spec::ModelSpec s;
    s.set_name("random");
    spec::Architecture *a = s.mutable_architecture();
    std::string pattern;
    int layers = pick(1, 9);
    for (int i = 0; i < layers; ++i)
      pattern += "M*-"[pick(0, 2)];
    a->set_hybrid_override_pattern(pattern);
    int groups = pick(1, 3), kv = pick(1, 3);
    a->set_hidden_size(pick(3, 40));
    a->set_intermediate_size(pick(1, 50));
    a->set_n_groups(groups);
    a->set_mamba_num_heads(groups * pick(1, 4));
    a->set_mamba_head_dim(pick(1, 14));
    a->set_ssm_state_size(pick(1, 8));
    a->set_conv_kernel(pick(1, 5));
    a->set_num_key_value_heads(kv);
    a->set_num_attention_heads(kv * pick(1, 4));
    a->set_head_dim(pick(1, 10));
    a->set_vocab_size(256 + pick(0, 40));
    a->set_tie_word_embeddings(pick(0, 1));
    bool elastic = pick(0, 3) != 0;
    if (elastic) {
      spec::Elastic *e = s.mutable_elastic();
      int budgets = pick(1, 4);
      for (int b = 0; b < budgets; ++b) {
        auto *budget = e->add_budgets();
        budget->set_name("b" + std::to_string(b));
        budget->set_fraction(1.0 - 0.2 * b);
      }
      auto choices = [&](spec::AxisChoices *axis, int64_t parent, int64_t step, bool hetero,
                         bool present) {
        if (!present)
          return;
        for (int64_t k = parent; k > 0 && axis->choices_size() < 3; k -= step * pick(1, 2))
          axis->add_choices(k);
        axis->set_heterogeneous(hetero && pick(0, 1));
      };
      auto has = [&](char c) { return pattern.find(c) != std::string::npos; };
      choices(e->mutable_hidden_size(), a->hidden_size(), 1, false, pick(0, 1));
      choices(e->mutable_intermediate_size(), a->intermediate_size(), 1, true, has('-'));
      choices(e->mutable_num_attention_heads(), a->num_attention_heads(), kv, true, has('*'));
      choices(e->mutable_mamba_num_heads(), a->mamba_num_heads(), groups, true, has('M'));
      choices(e->mutable_mamba_head_dim(), a->mamba_head_dim(), 1, true, has('M'));
      e->set_max_dropped_layers(pick(0, layers - 1));
      e->set_mask_mode(pick(0, 1) ? spec::SOFT : spec::HARD);
      e->mutable_router()->set_hidden_size(pick(1, 16));
    }
    llvm::Error valid = spec::validateSpec(s, "random.pbtxt");
    ASSERT_FALSE(static_cast<bool>(valid)) << llvm::toString(std::move(valid)) << "\n"
                                           << s.DebugString();
    MLIRContext context;
    auto module = importSpec(context, s);
    ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError()) << "\n"
                                           << s.DebugString();
    auto expected = spec::countParams(spec::fixedSizes(s), spec::parentSizes(s)).total();
    EXPECT_EQ(countIRParams(**module, elastic ? "elastic_model" : "model"),
              static_cast<int64_t>(expected))
        << s.DebugString();
  }
}

} // namespace
