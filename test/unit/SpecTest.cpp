//===- SpecTest.cpp - Spec parsing and validation --------------------------===//
//
// Every validation rule has a case: a valid spec with one thing broken, and the error must name
// the file and the offending field. Parse errors carry file:line:col.
//
//===----------------------------------------------------------------------===//
#include "nestor/Spec.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

using namespace nestor::spec;

namespace {

std::string srcRoot() {
  const char *src = std::getenv("NESTOR_SRC");
  return src ? src : ".";
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ModelSpec tinySpec() {
  auto spec = loadSpecFile(srcRoot() + "/examples/specs/tiny-hybrid.pbtxt");
  EXPECT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  return spec ? *spec : ModelSpec();
}

std::string validationError(const ModelSpec &spec) {
  llvm::Error err = validateSpec(spec, "test.pbtxt");
  return err ? llvm::toString(std::move(err)) : std::string();
}

TEST(SpecTest, ExampleSpecsLoad) {
  for (const char *name :
       {"tiny-hybrid.pbtxt", "nemotron-nano-12b-v2.pbtxt", "nemotron-nano-9b-v2.pbtxt"}) {
    auto spec = loadSpecFile(srcRoot() + "/examples/specs/" + name);
    EXPECT_TRUE(static_cast<bool>(spec)) << name << ": " << llvm::toString(spec.takeError());
  }
}

TEST(SpecTest, DenseSpecIsValid) {
  ModelSpec spec = tinySpec();
  spec.clear_elastic();
  spec.mutable_training()->mutable_stages(1)->clear_budget_weights();
  EXPECT_EQ(validationError(spec), "");
  // Budget weights need budgets.
  spec.mutable_training()->mutable_stages(1)->add_budget_weights(1.0);
  EXPECT_NE(validationError(spec).find("training.stages[1].budget_weights: a dense spec"),
            std::string::npos);
}

TEST(SpecTest, ParseErrorHasFileLineColumn) {
  auto spec = parseSpecText("name: \"x\"\narchitecture {\n  hidden_size: oops\n}\n", "bad.pbtxt");
  ASSERT_FALSE(static_cast<bool>(spec));
  std::string message = llvm::toString(spec.takeError());
  EXPECT_EQ(message.rfind("bad.pbtxt:3:16:", 0), 0u) << message;
}

TEST(SpecTest, UnknownFieldIsAParseError) {
  auto spec = parseSpecText("name: \"x\"\narchitecture { hiden_size: 4 }\n", "typo.pbtxt");
  ASSERT_FALSE(static_cast<bool>(spec));
  std::string message = llvm::toString(spec.takeError());
  EXPECT_EQ(message.rfind("typo.pbtxt:2:", 0), 0u) << message;
  EXPECT_NE(message.find("hiden_size"), std::string::npos) << message;
}

TEST(SpecTest, EmptyFileIsAnError) {
  auto spec = parseSpecText("  \n\n", "empty.pbtxt");
  ASSERT_FALSE(static_cast<bool>(spec));
  EXPECT_EQ(llvm::toString(spec.takeError()), "empty.pbtxt: the spec file is empty");
}

TEST(SpecTest, BinaryFileIsAnError) {
  std::string binary("\x08\x96\x01\x00\xff\xfe", 6);
  auto spec = parseSpecText(binary, "model.bin");
  ASSERT_FALSE(static_cast<bool>(spec));
  EXPECT_NE(llvm::toString(spec.takeError()).find("model.bin: not a text spec"), std::string::npos);
}

TEST(SpecTest, MissingFileIsAnError) {
  auto spec = loadSpecFile("/nonexistent/dir/spec.pbtxt");
  ASSERT_FALSE(static_cast<bool>(spec));
  EXPECT_NE(llvm::toString(spec.takeError()).find("/nonexistent/dir/spec.pbtxt: cannot read"),
            std::string::npos);
}

TEST(SpecTest, LoadValidatesAndNamesTheFile) {
  llvm::SmallString<128> path;
  ASSERT_FALSE(llvm::sys::fs::createTemporaryFile("nestor-spec", "pbtxt", path));
  std::string text = readFile(srcRoot() + "/examples/specs/tiny-hybrid.pbtxt");
  size_t at = text.find("n_groups: 2");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 11, "n_groups: 3");
  {
    std::ofstream out(path.c_str());
    out << text;
  }
  auto spec = loadSpecFile(path);
  llvm::sys::fs::remove(path);
  ASSERT_FALSE(static_cast<bool>(spec));
  std::string message = llvm::toString(spec.takeError());
  EXPECT_EQ(message.rfind(std::string(path.str()) + ": architecture.mamba_num_heads", 0), 0u)
      << message;
}

/// One broken spec: what to break, and the field path and text the error must contain.
struct Rule {
  const char *name;
  std::function<void(ModelSpec &)> mutate;
  const char *field;
  const char *text;
};

void PrintTo(const Rule &r, std::ostream *os) { *os << r.name; }

class ValidationRuleTest : public ::testing::TestWithParam<Rule> {};

TEST_P(ValidationRuleTest, NamesTheField) {
  ModelSpec spec = tinySpec();
  ASSERT_EQ(validationError(spec), "");
  GetParam().mutate(spec);
  std::string message = validationError(spec);
  EXPECT_EQ(message.rfind(std::string("test.pbtxt: ") + GetParam().field + ":", 0), 0u)
      << "got: " << message;
  EXPECT_NE(message.find(GetParam().text), std::string::npos) << "got: " << message;
}

Architecture *arch(ModelSpec &s) { return s.mutable_architecture(); }
Elastic *elastic(ModelSpec &s) { return s.mutable_elastic(); }

const Rule kRules[] = {
    {"missing_architecture", [](ModelSpec &s) { s.clear_architecture(); }, "architecture",
     "is missing"},
    {"empty_pattern", [](ModelSpec &s) { arch(s)->set_hybrid_override_pattern(""); },
     "architecture.hybrid_override_pattern", "empty"},
    {"bad_pattern_char", [](ModelSpec &s) { arch(s)->set_hybrid_override_pattern("M-X*"); },
     "architecture.hybrid_override_pattern", "'X' at position 2"},
    {"zero_hidden", [](ModelSpec &s) { arch(s)->set_hidden_size(0); }, "architecture.hidden_size",
     "must be positive"},
    {"negative_vocab", [](ModelSpec &s) { arch(s)->set_vocab_size(-5); }, "architecture.vocab_size",
     "must be positive"},
    {"huge_hidden", [](ModelSpec &s) { arch(s)->set_hidden_size(int64_t(1) << 40); },
     "architecture.hidden_size", "larger than the supported maximum 16777216"},
    {"zero_ffn", [](ModelSpec &s) { arch(s)->set_intermediate_size(0); },
     "architecture.intermediate_size", "must be positive"},
    {"zero_state", [](ModelSpec &s) { arch(s)->set_ssm_state_size(0); },
     "architecture.ssm_state_size", "must be positive"},
    {"negative_unused",
     [](ModelSpec &s) {
       arch(s)->set_hybrid_override_pattern("M-M-");
       elastic(s)->clear_num_attention_heads();
       arch(s)->set_head_dim(-1);
     },
     "architecture.head_dim", "must be positive"},
    {"mamba_heads_not_divisible_by_groups", [](ModelSpec &s) { arch(s)->set_n_groups(3); },
     "architecture.mamba_num_heads", "not divisible by n_groups (3)"},
    {"gqa_heads_not_divisible", [](ModelSpec &s) { arch(s)->set_num_key_value_heads(3); },
     "architecture.num_attention_heads", "not divisible by num_key_value_heads (3)"},
    {"bad_epsilon", [](ModelSpec &s) { arch(s)->set_layer_norm_epsilon(0.0); },
     "architecture.layer_norm_epsilon", "must be positive"},
    {"no_budgets", [](ModelSpec &s) { elastic(s)->clear_budgets(); }, "elastic.budgets",
     "at least one budget"},
    {"budget_out_of_range", [](ModelSpec &s) { elastic(s)->mutable_budgets(2)->set_fraction(0.0); },
     "elastic.budgets[2].fraction", "must be in (0, 1]"},
    {"budget_above_one", [](ModelSpec &s) { elastic(s)->mutable_budgets(1)->set_fraction(1.5); },
     "elastic.budgets[1].fraction", "must be in (0, 1]"},
    {"first_budget_not_full",
     [](ModelSpec &s) { elastic(s)->mutable_budgets(0)->set_fraction(0.9); },
     "elastic.budgets[0].fraction", "must be 1.0"},
    {"budgets_not_descending",
     [](ModelSpec &s) { elastic(s)->mutable_budgets(2)->set_fraction(0.8); },
     "elastic.budgets[2].fraction", "strictly descending"},
    {"duplicate_budget_name",
     [](ModelSpec &s) { elastic(s)->mutable_budgets(2)->set_name("full"); },
     "elastic.budgets[2].name", "used by two budgets"},
    {"empty_budget_name", [](ModelSpec &s) { elastic(s)->mutable_budgets(1)->set_name(""); },
     "elastic.budgets[1].name", "must not be empty"},
    {"choices_not_descending",
     [](ModelSpec &s) { elastic(s)->mutable_intermediate_size()->set_choices(2, 600); },
     "elastic.intermediate_size.choices[2]", "strictly descending"},
    {"choice_larger_than_parent",
     [](ModelSpec &s) { elastic(s)->mutable_hidden_size()->set_choices(1, 300); },
     "elastic.hidden_size.choices[1]", "larger than the parent's 256"},
    {"first_choice_not_parent",
     [](ModelSpec &s) { elastic(s)->mutable_hidden_size()->set_choices(0, 240); },
     "elastic.hidden_size.choices[0]", "must be the parent size 256"},
    {"non_positive_choice",
     [](ModelSpec &s) { elastic(s)->mutable_mamba_head_dim()->set_choices(2, 0); },
     "elastic.mamba_head_dim.choices[2]", "must be positive"},
    {"mamba_choice_not_multiple_of_groups",
     [](ModelSpec &s) { elastic(s)->mutable_mamba_num_heads()->set_choices(1, 5); },
     "elastic.mamba_num_heads.choices[1]", "not a multiple of n_groups (2)"},
    {"attention_choice_not_per_kv_group",
     [](ModelSpec &s) { elastic(s)->mutable_num_attention_heads()->set_choices(1, 7); },
     "elastic.num_attention_heads.choices[1]", "not a multiple of num_key_value_heads (2)"},
    {"heterogeneous_hidden",
     [](ModelSpec &s) { elastic(s)->mutable_hidden_size()->set_heterogeneous(true); },
     "elastic.hidden_size.heterogeneous", "cannot be heterogeneous"},
    {"axis_without_layers", [](ModelSpec &s) { arch(s)->set_hybrid_override_pattern("M-M-M-"); },
     "elastic.num_attention_heads", "no attention layers"},
    {"max_dropped_too_large", [](ModelSpec &s) { elastic(s)->set_max_dropped_layers(8); },
     "elastic.max_dropped_layers", "must be in [0, 8)"},
    {"max_dropped_negative", [](ModelSpec &s) { elastic(s)->set_max_dropped_layers(-1); },
     "elastic.max_dropped_layers", "must be in [0, 8)"},
    {"router_hidden", [](ModelSpec &s) { elastic(s)->mutable_router()->set_hidden_size(0); },
     "elastic.router.hidden_size", "must be positive"},
    {"router_tau", [](ModelSpec &s) { elastic(s)->mutable_router()->set_tau_final(2.0); },
     "elastic.router.tau_final", "(0, tau_initial]"},
    {"router_hard_fraction",
     [](ModelSpec &s) { elastic(s)->mutable_router()->set_hard_sample_fraction(1.5); },
     "elastic.router.hard_sample_fraction", "[0, 1]"},
    {"stage_steps", [](ModelSpec &s) { s.mutable_training()->mutable_stages(0)->set_steps(0); },
     "training.stages[0].steps", "must be positive"},
    {"stage_weights_count",
     [](ModelSpec &s) { s.mutable_training()->mutable_stages(1)->add_budget_weights(0.1); },
     "training.stages[1].budget_weights", "4 weights for 3 budgets"},
    {"stage_weights_negative",
     [](ModelSpec &s) { s.mutable_training()->mutable_stages(1)->set_budget_weights(2, -0.2); },
     "training.stages[1].budget_weights[2]", "must not be negative"},
    {"optimizer_beta",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_beta2(1.0); },
     "training.optimizer.beta2", "[0, 1)"},
    {"optimizer_lr",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_learning_rate(0); },
     "training.optimizer.learning_rate", "must be positive"},
    {"distillation_temperature",
     [](ModelSpec &s) { s.mutable_training()->mutable_distillation()->set_temperature(0); },
     "training.distillation.temperature", "must be positive"},
    {"dead_zone",
     [](ModelSpec &s) { s.mutable_training()->mutable_resource_loss()->set_dead_zone(-1); },
     "training.resource_loss.dead_zone", "must not be negative"},
    {"checkpoint_every", [](ModelSpec &s) { s.mutable_training()->set_checkpoint_every(0); },
     "training.checkpoint_every", "must be positive"},
    {"validation_fraction", [](ModelSpec &s) { s.mutable_data()->set_validation_fraction(1.0); },
     "data.validation_fraction", "(0, 1)"},
    {"byte_vocab_too_small", [](ModelSpec &s) { arch(s)->set_vocab_size(100); },
     "architecture.vocab_size", "at least 256"},
};

INSTANTIATE_TEST_SUITE_P(Rules, ValidationRuleTest, ::testing::ValuesIn(kRules),
                         [](const ::testing::TestParamInfo<Rule> &info) {
                           return std::string(info.param.name);
                         });

TEST(SpecTest, PatternParsing) {
  auto layers = parsePattern("M*-");
  ASSERT_TRUE(static_cast<bool>(layers));
  EXPECT_EQ(*layers,
            (std::vector<LayerKind>{LayerKind::Mamba, LayerKind::Attention, LayerKind::MLP}));
  for (LayerKind k : *layers) {
    auto again = parsePattern(std::string(1, layerKindChar(k)));
    ASSERT_TRUE(static_cast<bool>(again));
    EXPECT_EQ((*again)[0], k);
  }
  auto bad = parsePattern("M\x01");
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("\\x01"), std::string::npos);
}

TEST(SpecTest, Defaults) {
  ModelSpec spec = tinySpec();
  spec.mutable_architecture()->clear_layer_norm_epsilon();
  spec.mutable_elastic()->clear_router();
  EXPECT_EQ(layerNormEpsilon(spec.architecture()), 1e-5);
  EXPECT_EQ(routerHiddenSize(spec.elastic()), 256);
  EXPECT_EQ(routerLeakyReluSlope(spec.elastic()), 0.1);
}

} // namespace
