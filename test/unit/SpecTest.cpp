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

#include <cmath>
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

std::string parseError(llvm::StringRef text) {
  auto spec = parseSpecText(text, "p.pbtxt");
  return spec ? std::string() : llvm::toString(spec.takeError());
}

// Protobuf reports these errors at the token after the offending one; the position must still
// point at the offending token.
TEST(SpecTest, ParseErrorPointsAtTheOffendingToken) {
  EXPECT_EQ(parseError("name: \"x\"\narchitecture { hiden_size: 4 }\n"),
            "p.pbtxt:2:16: Message type \"nestor.spec.Architecture\" has no field named "
            "\"hiden_size\".");
  EXPECT_EQ(parseError("architecture {\n  hidden_size: 4\n  hidden_size: 5\n}\n")
                .rfind("p.pbtxt:3:3: Non-repeated field \"hidden_size\"", 0),
            0u);
  EXPECT_EQ(parseError("elastic { mask_mode: MEDIUM }\n")
                .rfind("p.pbtxt:1:22: Unknown enumeration value of \"MEDIUM\"", 0),
            0u);
  EXPECT_EQ(parseError("architecture {\n  tie_word_embeddings: maybe\n}\n")
                .rfind("p.pbtxt:2:24: Invalid value for boolean field", 0),
            0u);
  // Errors protobuf reports at the bad token itself stay there.
  EXPECT_EQ(parseError("architecture {\n  hidden_size: 64 64\n}\n")
                .rfind("p.pbtxt:2:19: Expected identifier, got: 64", 0),
            0u);
}

// Columns count bytes as editors and compilers do; protobuf expands tabs to 8 columns.
TEST(SpecTest, ParseErrorColumnsCountTabsAsOneColumn) {
  EXPECT_EQ(parseError("architecture {\n\thidden_size: oops\n}\n")
                .rfind("p.pbtxt:2:15: Expected integer, got: oops", 0),
            0u);
  EXPECT_EQ(parseError("architecture {\n\t\tx: 1\n}\n").rfind("p.pbtxt:2:3: Message type", 0), 0u);
}

TEST(SpecTest, ParseErrorAtEndOfFileNamesTheOpenBrace) {
  EXPECT_EQ(parseError("name: \"x\"\narchitecture {\n  hidden_size: 4\n  # not a { brace\n"),
            "p.pbtxt:5:1: Expected identifier, got: end of file (the '{' at 2:14 is never "
            "closed)");
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

TEST(SpecTest, ByteOrderMarkAndCRLFAreText) {
  std::string text = "\xEF\xBB\xBF" + readFile(srcRoot() + "/examples/specs/tiny-hybrid.pbtxt");
  auto spec = parseSpecText(text, "bom.pbtxt");
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  EXPECT_EQ(spec->name(), "tiny-hybrid");
  EXPECT_EQ(parseError("\xEF\xBB\xBFname: \"x\"\r\narchitecture {\r\n  hidden_size: oops\r\n}\r\n"),
            "p.pbtxt:3:16: Expected integer, got: oops");
}

TEST(SpecTest, ControlCharactersAreBinary) {
  // Valid UTF-8 without NUL bytes, but protobuf wire format, not text.
  std::string wire("\x0a\x04tiny\x12\x02\x10\x08", 10);
  auto spec = parseSpecText(wire, "model.pb");
  ASSERT_FALSE(static_cast<bool>(spec));
  EXPECT_NE(llvm::toString(spec.takeError()).find("model.pb: not a text spec"), std::string::npos);
}

TEST(SpecTest, CommentsOnlyFileHasNoArchitecture) {
  auto spec = parseSpecText("# nothing here yet\n", "c.pbtxt");
  ASSERT_TRUE(static_cast<bool>(spec));
  EXPECT_EQ(validationError(*spec), "test.pbtxt: architecture: is missing; every spec describes "
                                    "its parent model");
}

TEST(SpecTest, DirectoryIsAnError) {
  auto spec = loadSpecFile(srcRoot() + "/examples/specs");
  ASSERT_FALSE(static_cast<bool>(spec));
  EXPECT_NE(llvm::toString(spec.takeError()).find("examples/specs: cannot read"),
            std::string::npos);
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

// Sizes of layer types the pattern does not use may be left out.
TEST(SpecTest, UnusedSizesMayBeZero) {
  ModelSpec spec = tinySpec();
  Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-M-");
  a->clear_num_attention_heads(), a->clear_num_key_value_heads(), a->clear_head_dim();
  spec.mutable_elastic()->clear_num_attention_heads();
  EXPECT_EQ(validationError(spec), "");
}

// Text files are found relative to the spec's directory, and a missing one is named.
TEST(SpecTest, TextFilesAreRelativeToTheSpec) {
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-spec", dir));
  std::string specFile = (dir + "/spec.pbtxt").str();
  std::string text = readFile(srcRoot() + "/examples/specs/tiny-hybrid.pbtxt");
  auto write = [](const std::string &path, const std::string &body) {
    std::ofstream out(path);
    out << body;
  };
  size_t data = text.find("data {");
  ASSERT_NE(data, std::string::npos);
  text.insert(data + 6, " text_files: \"corpus.txt\"");
  write(specFile, text);
  auto missing = loadSpecFile(specFile);
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_EQ(llvm::toString(missing.takeError()),
            specFile + ": data.text_files[0]: '" + (dir + "/corpus.txt").str() +
                "' does not exist (relative to the spec's directory)");
  write((dir + "/corpus.txt").str(), "hello\n");
  auto found = loadSpecFile(specFile);
  EXPECT_TRUE(static_cast<bool>(found)) << llvm::toString(found.takeError());
  EXPECT_EQ(resolveSpecRelativePath(specFile, "/abs/x.txt"), "/abs/x.txt");
  llvm::sys::fs::remove((dir + "/corpus.txt").str());
  llvm::sys::fs::remove(specFile);
  llvm::sys::fs::remove(dir);
}

/// `s` as a dense spec with one (empty) layer override per layer.
void makeDense(ModelSpec &s) {
  s.clear_elastic();
  s.mutable_training()->clear_stages();
  for (size_t i = 0; i < s.architecture().hybrid_override_pattern().size(); ++i)
    s.mutable_architecture()->add_layer_overrides();
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
     "elastic.router.hidden_size", "must be in [1, 16777216], got 0"},
    {"router_hidden_huge",
     [](ModelSpec &s) { elastic(s)->mutable_router()->set_hidden_size(int64_t(1) << 40); },
     "elastic.router.hidden_size", "must be in [1, 16777216]"},
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
    {"zero_conv_kernel", [](ModelSpec &s) { arch(s)->set_conv_kernel(0); },
     "architecture.conv_kernel", "must be positive (the pattern has layers that use it)"},
    {"zero_groups", [](ModelSpec &s) { arch(s)->set_n_groups(0); }, "architecture.n_groups",
     "must be positive"},
    {"zero_mamba_heads", [](ModelSpec &s) { arch(s)->set_mamba_num_heads(0); },
     "architecture.mamba_num_heads", "must be positive"},
    {"zero_mamba_head_dim", [](ModelSpec &s) { arch(s)->set_mamba_head_dim(0); },
     "architecture.mamba_head_dim", "must be positive"},
    {"zero_attention_heads", [](ModelSpec &s) { arch(s)->set_num_attention_heads(0); },
     "architecture.num_attention_heads", "must be positive"},
    {"zero_kv_heads", [](ModelSpec &s) { arch(s)->set_num_key_value_heads(0); },
     "architecture.num_key_value_heads", "must be positive"},
    {"zero_head_dim", [](ModelSpec &s) { arch(s)->set_head_dim(0); }, "architecture.head_dim",
     "must be positive"},
    {"negative_epsilon", [](ModelSpec &s) { arch(s)->set_layer_norm_epsilon(-1e-5); },
     "architecture.layer_norm_epsilon", "must be positive"},
    {"nan_budget", [](ModelSpec &s) { elastic(s)->mutable_budgets(1)->set_fraction(NAN); },
     "elastic.budgets[1].fraction", "must be a finite number, got nan"},
    {"infinite_learning_rate",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_learning_rate(INFINITY); },
     "training.optimizer.learning_rate", "must be a finite number"},
    {"nan_budget_weight",
     [](ModelSpec &s) { s.mutable_training()->mutable_stages(1)->set_budget_weights(0, NAN); },
     "training.stages[1].budget_weights[0]", "must be a finite number"},
    {"unknown_mask_mode", [](ModelSpec &s) { elastic(s)->set_mask_mode(static_cast<MaskMode>(7)); },
     "elastic.mask_mode", "7 is not a MaskMode (expected one of HARD, SOFT)"},
    {"unknown_difficulty",
     [](ModelSpec &s) {
       s.mutable_training()->mutable_stages(0)->set_difficulty(static_cast<DataDifficulty>(9));
     },
     "training.stages[0].difficulty", "9 is not a DataDifficulty"},
    {"unknown_tokenizer",
     [](ModelSpec &s) { s.mutable_data()->set_tokenizer(static_cast<Tokenizer>(-1)); },
     "data.tokenizer", "-1 is not a Tokenizer"},
    {"heterogeneous_without_choices",
     [](ModelSpec &s) {
       elastic(s)->mutable_intermediate_size()->clear_choices();
       elastic(s)->mutable_intermediate_size()->set_heterogeneous(true);
     },
     "elastic.intermediate_size", "lists no choices"},
    {"router_slope", [](ModelSpec &s) { elastic(s)->mutable_router()->set_leaky_relu_slope(-1); },
     "elastic.router.leaky_relu_slope", "must not be negative"},
    {"router_init_std", [](ModelSpec &s) { elastic(s)->mutable_router()->set_init_std(0); },
     "elastic.router.init_std", "must be positive"},
    {"router_tau_initial", [](ModelSpec &s) { elastic(s)->mutable_router()->set_tau_initial(0); },
     "elastic.router.tau_initial", "must be positive"},
    {"router_tau_final_zero", [](ModelSpec &s) { elastic(s)->mutable_router()->set_tau_final(0); },
     "elastic.router.tau_final", "(0, tau_initial]"},
    {"router_logit_scale_initial",
     [](ModelSpec &s) { elastic(s)->mutable_router()->set_logit_scale_initial(0); },
     "elastic.router.logit_scale_initial", "must be positive"},
    {"router_logit_scale_final",
     [](ModelSpec &s) { elastic(s)->mutable_router()->set_logit_scale_final(-2); },
     "elastic.router.logit_scale_final", "must be positive"},
    {"router_hard_fraction_negative",
     [](ModelSpec &s) { elastic(s)->mutable_router()->set_hard_sample_fraction(-0.1); },
     "elastic.router.hard_sample_fraction", "[0, 1]"},
    {"router_lr_multiplier",
     [](ModelSpec &s) { elastic(s)->mutable_router()->set_lr_multiplier(0); },
     "elastic.router.lr_multiplier", "must be positive"},
    {"optimizer_min_lr",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_min_learning_rate(-1); },
     "training.optimizer.min_learning_rate", "must not be negative"},
    {"optimizer_beta1",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_beta1(-0.1); },
     "training.optimizer.beta1", "[0, 1)"},
    {"optimizer_epsilon",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_epsilon(0); },
     "training.optimizer.epsilon", "must be positive"},
    {"optimizer_weight_decay",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_weight_decay(-1); },
     "training.optimizer.weight_decay", "must not be negative"},
    {"optimizer_warmup",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_warmup_steps(-1); },
     "training.optimizer.warmup_steps", "must not be negative"},
    {"optimizer_grad_clip",
     [](ModelSpec &s) { s.mutable_training()->mutable_optimizer()->set_grad_clip_norm(-1); },
     "training.optimizer.grad_clip_norm", "must not be negative"},
    {"parent_optimizer",
     [](ModelSpec &s) {
       s.mutable_training()->mutable_parent()->mutable_optimizer()->set_learning_rate(-1);
     },
     "training.parent.optimizer.learning_rate", "must be positive"},
    {"parent_steps_negative",
     [](ModelSpec &s) { s.mutable_training()->mutable_parent()->set_steps(-1); },
     "training.parent.steps", "must not be negative"},
    {"parent_sequence_length",
     [](ModelSpec &s) { s.mutable_training()->mutable_parent()->set_sequence_length(0); },
     "training.parent.sequence_length", "must be positive"},
    {"parent_batch_size",
     [](ModelSpec &s) { s.mutable_training()->mutable_parent()->set_batch_size(-4); },
     "training.parent.batch_size", "must be positive"},
    {"stage_sequence_length",
     [](ModelSpec &s) { s.mutable_training()->mutable_stages(1)->set_sequence_length(0); },
     "training.stages[1].sequence_length", "must be positive"},
    {"stage_batch_size",
     [](ModelSpec &s) { s.mutable_training()->mutable_stages(0)->set_batch_size(0); },
     "training.stages[0].batch_size", "must be positive"},
    {"stage_weights_all_zero",
     [](ModelSpec &s) {
       for (int j = 0; j < 3; ++j)
         s.mutable_training()->mutable_stages(1)->set_budget_weights(j, 0.0);
     },
     "training.stages[1].budget_weights", "must not all be zero"},
    {"ce_weight",
     [](ModelSpec &s) { s.mutable_training()->mutable_distillation()->set_ce_weight(-1); },
     "training.distillation.ce_weight", "must not be negative"},
    {"resource_weight",
     [](ModelSpec &s) { s.mutable_training()->mutable_resource_loss()->set_weight(-1); },
     "training.resource_loss.weight", "must not be negative"},
    {"full_anchor_weight",
     [](ModelSpec &s) {
       s.mutable_training()->mutable_resource_loss()->set_full_anchor_weight(-1);
     },
     "training.resource_loss.full_anchor_weight", "must not be negative"},
    {"importance_batches",
     [](ModelSpec &s) { s.mutable_training()->mutable_importance()->set_calibration_batches(0); },
     "training.importance.calibration_batches", "must be positive"},
    {"importance_batch_size",
     [](ModelSpec &s) { s.mutable_training()->mutable_importance()->set_batch_size(0); },
     "training.importance.batch_size", "must be positive"},
    {"importance_sequence_length",
     [](ModelSpec &s) { s.mutable_training()->mutable_importance()->set_sequence_length(-1); },
     "training.importance.sequence_length", "must be positive"},
    {"eval_every", [](ModelSpec &s) { s.mutable_training()->set_eval_every(-1); },
     "training.eval_every", "must be positive"},
    {"eval_batches", [](ModelSpec &s) { s.mutable_training()->set_eval_batches(0); },
     "training.eval_batches", "must be positive"},
    {"eval_problems", [](ModelSpec &s) { s.mutable_training()->set_eval_problems(0); },
     "training.eval_problems", "must be positive"},
    {"layer_overrides_elastic",
     [](ModelSpec &s) { s.mutable_architecture()->add_layer_overrides(); },
     "architecture.layer_overrides", "is for dense models"},
    {"layer_overrides_count",
     [](ModelSpec &s) {
       makeDense(s);
       s.mutable_architecture()->mutable_layer_overrides()->DeleteSubrange(1, 7);
     },
     "architecture.layer_overrides", "has 1 entries for a pattern of 8 layers"},
    {"layer_overrides_negative",
     [](ModelSpec &s) {
       makeDense(s);
       s.mutable_architecture()->mutable_layer_overrides(1)->set_intermediate_size(-3);
     },
     "architecture.layer_overrides[1].intermediate_size", "must not be negative"},
    {"layer_overrides_groups",
     [](ModelSpec &s) {
       makeDense(s);
       s.mutable_architecture()->mutable_layer_overrides(2)->set_mamba_num_heads(5);
     },
     "architecture.layer_overrides[2].mamba_num_heads", "not divisible by n_groups (2)"},
    {"layer_overrides_kv_groups",
     [](ModelSpec &s) {
       makeDense(s);
       s.mutable_architecture()->mutable_layer_overrides(3)->set_num_attention_heads(3);
     },
     "architecture.layer_overrides[3].num_attention_heads", "num_key_value_heads (2)"},
    {"validation_fraction_zero",
     [](ModelSpec &s) { s.mutable_data()->set_validation_fraction(0.0); },
     "data.validation_fraction", "(0, 1)"},
    {"empty_text_file", [](ModelSpec &s) { s.mutable_data()->add_text_files(""); },
     "data.text_files[0]", "is empty"},
    {"missing_text_file",
     [](ModelSpec &s) { s.mutable_data()->add_text_files("/nonexistent/corpus.txt"); },
     "data.text_files[0]", "'/nonexistent/corpus.txt' does not exist"},
    {"text_file_is_a_directory", [](ModelSpec &s) { s.mutable_data()->add_text_files("/"); },
     "data.text_files[0]", "is not a regular file"},
    {"reasoning_digits",
     [](ModelSpec &s) { s.mutable_data()->mutable_reasoning()->set_max_digits_long(0); },
     "data.reasoning.max_digits_long", "must be positive"},
    {"reasoning_steps",
     [](ModelSpec &s) { s.mutable_data()->mutable_reasoning()->set_max_steps_short(-2); },
     "data.reasoning.max_steps_short", "must be positive"},
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
