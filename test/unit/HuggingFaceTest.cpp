//===- HuggingFaceTest.cpp - Hugging Face NemotronH export and import -----===//
//
// The config round trip (homogeneous and per-layer sizes), the config's fields by name, the
// errors of bad configs and folders, and whole folders exported and imported bit for bit.
//
//===----------------------------------------------------------------------===//
#include "nestor/HuggingFace.h"
#include "nestor/Checkpoint.h"
#include "nestor/Slice.h"

#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "nlohmann/json.hpp"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>

using namespace nestor;
using google::protobuf::util::MessageDifferencer;
using nlohmann::json;

namespace {

/// A dense model as `nestor slice` cuts it at a budget that drops a layer ("M-M*MM-").
constexpr const char *kDenseSpec = R"pb(
  name: "tiny-hybrid-50%"
  architecture {
    hybrid_override_pattern: "M-M*MM-"
    hidden_size: 24
    intermediate_size: 40
    mamba_num_heads: 4
    mamba_head_dim: 6
    n_groups: 2
    ssm_state_size: 4
    conv_kernel: 4
    num_attention_heads: 6
    num_key_value_heads: 2
    head_dim: 8
    vocab_size: 256
    layer_norm_epsilon: 1e-5
  }
  training { parent { steps: 10 sequence_length: 16 batch_size: 2 } }
)pb";

spec::ModelSpec parse(const char *text) {
  auto spec = spec::parseSpecText(text, "test.pbtxt");
  EXPECT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  return spec ? *spec : spec::ModelSpec();
}

spec::ModelSpec homogeneousSpec() { return parse(kDenseSpec); }

/// Layers of one kind with different sizes, as `nestor slice` writes them: each scalar is the
/// maximum over its layers and every layer's override states all the sizes of its kind.
spec::ModelSpec heterogeneousSpec() {
  spec::ModelSpec spec = homogeneousSpec();
  spec::Architecture &a = *spec.mutable_architecture();
  auto mamba = [&](int64_t heads, int64_t headDim) {
    spec::LayerOverride *o = a.add_layer_overrides();
    o->set_mamba_num_heads(heads);
    o->set_mamba_head_dim(headDim);
  };
  auto mlp = [&](int64_t ffn) { a.add_layer_overrides()->set_intermediate_size(ffn); };
  // "M-M*MM-"
  mamba(2, 6);
  mlp(32);
  mamba(4, 6);
  a.add_layer_overrides()->set_num_attention_heads(6);
  mamba(4, 4);
  mamba(2, 4);
  mlp(40);
  return spec;
}

std::string configOf(const spec::ModelSpec &spec) {
  auto config = hf::nemotronHConfig(spec);
  EXPECT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  return config ? *config : "";
}

std::string message(llvm::Error err) {
  EXPECT_TRUE(static_cast<bool>(err)) << "expected an error";
  return llvm::toString(std::move(err));
}

template <typename T> std::string message(llvm::Expected<T> value) {
  if (value) {
    ADD_FAILURE() << "expected an error";
    return "";
  }
  return llvm::toString(value.takeError());
}

/// The config text of `spec` with `edit` applied to its JSON.
template <typename Edit> std::string editedConfig(const spec::ModelSpec &spec, Edit edit) {
  json c = json::parse(configOf(spec));
  edit(c);
  return c.dump();
}

void expectSameArchitecture(const spec::Architecture &expected, const spec::Architecture &got) {
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(expected, got)) << diff;
}

//===----------------------------------------------------------------------===//
// config.json
//===----------------------------------------------------------------------===//

TEST(HuggingFaceConfig, FieldsAreTheSpecsByName) {
  spec::ModelSpec spec = homogeneousSpec();
  json c = json::parse(configOf(spec));
  const spec::Architecture &a = spec.architecture();
  EXPECT_EQ(c["architectures"], json::array({"NemotronHForCausalLM"}));
  EXPECT_EQ(c["model_type"], "nemotron_h");
  EXPECT_EQ(c["hybrid_override_pattern"], a.hybrid_override_pattern());
  EXPECT_EQ(c["num_hidden_layers"], 7);
  EXPECT_EQ(c["hidden_size"], a.hidden_size());
  EXPECT_EQ(c["intermediate_size"], a.intermediate_size());
  EXPECT_EQ(c["num_attention_heads"], a.num_attention_heads());
  EXPECT_EQ(c["num_key_value_heads"], a.num_key_value_heads());
  EXPECT_EQ(c["head_dim"], a.head_dim());
  EXPECT_EQ(c["attention_head_dim"], a.head_dim());
  EXPECT_EQ(c["mamba_num_heads"], a.mamba_num_heads());
  EXPECT_EQ(c["mamba_head_dim"], a.mamba_head_dim());
  EXPECT_EQ(c["n_groups"], a.n_groups());
  EXPECT_EQ(c["ssm_state_size"], a.ssm_state_size());
  EXPECT_EQ(c["conv_kernel"], a.conv_kernel());
  EXPECT_EQ(c["vocab_size"], a.vocab_size());
  EXPECT_EQ(c["layer_norm_epsilon"], 1e-5);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["mlp_hidden_act"], "relu2");
  EXPECT_EQ(c["torch_dtype"], "float32");
  EXPECT_EQ(c["use_bias"], false);
  EXPECT_EQ(c["use_conv_bias"], true);
  EXPECT_EQ(c["_name_or_path"], "tiny-hybrid-50%");
  // A homogeneous model is stock NemotronH: no per-layer lists.
  for (auto it = c.begin(); it != c.end(); ++it)
    EXPECT_EQ(it.key().find("_per_layer"), std::string::npos) << it.key();
}

TEST(HuggingFaceConfig, HomogeneousRoundTrip) {
  spec::ModelSpec spec = homogeneousSpec();
  auto back = hf::specFromNemotronHConfig(configOf(spec), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  expectSameArchitecture(spec.architecture(), back->architecture());
  EXPECT_EQ(back->name(), spec.name());
  EXPECT_FALSE(back->has_elastic());
}

TEST(HuggingFaceConfig, PerLayerListsHaveOneEntryPerLayer) {
  spec::ModelSpec spec = heterogeneousSpec();
  json c = json::parse(configOf(spec));
  // "M-M*MM-": the scalars are the largest size of their kind, the lists each layer's own.
  EXPECT_EQ(c["intermediate_size"], 40);
  EXPECT_EQ(c["mamba_num_heads"], 4);
  EXPECT_EQ(c["mamba_head_dim"], 6);
  EXPECT_EQ(c["num_attention_heads"], 6);
  json null;
  EXPECT_EQ(c["mamba_num_heads_per_layer"], json({2, null, 4, null, 4, 2, null}));
  EXPECT_EQ(c["mamba_head_dim_per_layer"], json({6, null, 6, null, 4, 4, null}));
  EXPECT_EQ(c["intermediate_size_per_layer"], json({null, 32, null, null, null, null, 40}));
  EXPECT_EQ(c["num_attention_heads_per_layer"], json({null, null, null, 6, null, null, null}));
  for (const char *list : {"intermediate_size_per_layer", "num_attention_heads_per_layer",
                           "mamba_num_heads_per_layer", "mamba_head_dim_per_layer"})
    EXPECT_EQ(c[list].size(), c["num_hidden_layers"].get<size_t>()) << list;
}

TEST(HuggingFaceConfig, HeterogeneousRoundTrip) {
  spec::ModelSpec spec = heterogeneousSpec();
  auto back = hf::specFromNemotronHConfig(configOf(spec), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  expectSameArchitecture(spec.architecture(), back->architecture());
  // And once more: the imported spec exports to the same config.
  EXPECT_EQ(configOf(*back), configOf(spec));
}

TEST(HuggingFaceConfig, NonCanonicalOverridesKeepEveryLayersSize) {
  // A scalar above every layer's size, overrides left 0 ("the value above"): the round trip
  // gives the canonical spec, whose every layer (and so every tensor) has the same size.
  spec::ModelSpec spec = homogeneousSpec();
  spec::Architecture &a = *spec.mutable_architecture();
  a.set_intermediate_size(64);
  for (int i = 0; i < 7; ++i)
    a.add_layer_overrides()->set_intermediate_size(i == 1 ? 48 : 40);
  a.mutable_layer_overrides(2)->set_mamba_num_heads(2);
  auto back = hf::specFromNemotronHConfig(configOf(spec), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  EXPECT_EQ(hf::denseTensorShapes(back->architecture()), hf::denseTensorShapes(a));
  const spec::Architecture &b = back->architecture();
  EXPECT_EQ(b.intermediate_size(), 48);
  ASSERT_EQ(b.layer_overrides_size(), 7);
  EXPECT_EQ(b.layer_overrides(1).intermediate_size(), 48);
  EXPECT_EQ(b.layer_overrides(6).intermediate_size(), 40);
  EXPECT_EQ(b.layer_overrides(0).intermediate_size(), 0); // a Mamba layer
  EXPECT_EQ(b.layer_overrides(0).mamba_num_heads(), 4);
  EXPECT_EQ(b.layer_overrides(0).mamba_head_dim(), 6);
  EXPECT_EQ(b.layer_overrides(2).mamba_num_heads(), 2);
}

TEST(HuggingFaceConfig, UniformOverridesImportAsHomogeneous) {
  spec::ModelSpec spec = homogeneousSpec();
  for (int i = 0; i < 7; ++i)
    spec.mutable_architecture()->add_layer_overrides();
  auto back = hf::specFromNemotronHConfig(configOf(spec), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  expectSameArchitecture(homogeneousSpec().architecture(), back->architecture());
}

TEST(HuggingFaceConfig, DefaultEpsilonAndTiedEmbeddings) {
  spec::ModelSpec spec = homogeneousSpec();
  spec.mutable_architecture()->clear_layer_norm_epsilon();
  spec.mutable_architecture()->set_tie_word_embeddings(true);
  json c = json::parse(configOf(spec));
  EXPECT_EQ(c["layer_norm_epsilon"], 1e-5);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  auto back = hf::specFromNemotronHConfig(c.dump(), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  EXPECT_EQ(spec::layerNormEpsilon(back->architecture()), 1e-5);
  EXPECT_TRUE(back->architecture().tie_word_embeddings());
}

TEST(HuggingFaceConfig, NemotronNano12BMatchesTheHubConfig) {
  const char *src = std::getenv("NESTOR_SRC");
  if (!src)
    GTEST_SKIP() << "NESTOR_SRC is not set";
  auto spec = spec::loadSpecFile(std::string(src) + "/examples/specs/nemotron-nano-12b-v2.pbtxt");
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  spec->clear_elastic();
  json c = json::parse(configOf(*spec));
  // The values of nvidia/NVIDIA-Nemotron-Nano-12B-v2's config.json.
  EXPECT_EQ(c["hybrid_override_pattern"],
            "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-");
  EXPECT_EQ(c["num_hidden_layers"], 62);
  EXPECT_EQ(c["hidden_size"], 5120);
  EXPECT_EQ(c["intermediate_size"], 20480);
  EXPECT_EQ(c["mamba_num_heads"], 128);
  EXPECT_EQ(c["mamba_head_dim"], 80);
  EXPECT_EQ(c["n_groups"], 8);
  EXPECT_EQ(c["ssm_state_size"], 128);
  EXPECT_EQ(c["conv_kernel"], 4);
  EXPECT_EQ(c["num_attention_heads"], 40);
  EXPECT_EQ(c["num_key_value_heads"], 8);
  EXPECT_EQ(c["head_dim"], 128);
  EXPECT_EQ(c["vocab_size"], 131072);
  auto back = hf::specFromNemotronHConfig(c.dump(), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  expectSameArchitecture(spec->architecture(), back->architecture());
}

TEST(HuggingFaceConfig, SlicedHeterogeneousSpecRoundTrips) {
  // What `nestor slice` writes for a per-layer choice with a dropped layer comes back
  // identical, and the config's tensors are the slice map's.
  const char *src = std::getenv("NESTOR_SRC");
  if (!src)
    GTEST_SKIP() << "NESTOR_SRC is not set";
  auto parent = spec::loadSpecFile(std::string(src) + "/examples/specs/tiny-hybrid.pbtxt");
  ASSERT_TRUE(static_cast<bool>(parent)) << llvm::toString(parent.takeError());
  const spec::Architecture &pa = parent->architecture();
  ASSERT_EQ(pa.hybrid_override_pattern(), "M-M*M-M-");
  spec::ModelSizes<double> sizes = spec::parentSizes(*parent);
  sizes.layers[0].mambaHeads = double(pa.mamba_num_heads() - pa.n_groups());
  sizes.layers[1].ffn = double(pa.intermediate_size() / 2);
  sizes.layers[4].mambaHeadDim = double(pa.mamba_head_dim() / 2);
  sizes.layers[5].keep = 0;
  auto sliced = slice::sliceModel(*parent, sizes);
  ASSERT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
  const spec::Architecture &a = sliced->spec.architecture();
  ASSERT_EQ(a.hybrid_override_pattern(), "M-M*MM-");
  ASSERT_GT(a.layer_overrides_size(), 0);

  auto back = hf::specFromNemotronHConfig(configOf(sliced->spec), "config.json");
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  expectSameArchitecture(a, back->architecture());

  std::map<std::string, std::vector<int64_t>> fromMap;
  for (const auto &[name, s] : sliced->map)
    for (const auto &indices : s.indices)
      fromMap[name].push_back(static_cast<int64_t>(indices.size()));
  EXPECT_EQ(hf::denseTensorShapes(a), fromMap);
}

TEST(HuggingFaceConfig, ElasticOrMalformedSpecsAreRefused) {
  spec::ModelSpec elastic = homogeneousSpec();
  elastic.mutable_elastic()->add_budgets()->set_fraction(1.0);
  EXPECT_NE(message(hf::nemotronHConfig(elastic)).find("elastic: the spec is elastic"),
            std::string::npos);
  spec::ModelSpec wrongLength = heterogeneousSpec();
  wrongLength.mutable_architecture()->mutable_layer_overrides()->RemoveLast();
  EXPECT_EQ(message(hf::nemotronHConfig(wrongLength)),
            "architecture.layer_overrides: has 6 entries but the pattern has 7 layers (one per "
            "layer)");
}

struct BadConfig {
  const char *what;
  std::function<void(json &)> edit;
  const char *expected; // the whole message
};

TEST(HuggingFaceConfig, BadConfigsNameTheField) {
  json null;
  const BadConfig cases[] = {
      {"model_type", [](json &c) { c["model_type"] = "mamba2"; },
       "config.json: model_type: 'mamba2' is not nemotron_h; Nestor imports NemotronH models"},
      {"missing model_type", [](json &c) { c.erase("model_type"); },
       "config.json: model_type: missing"},
      {"missing size", [](json &c) { c.erase("hidden_size"); },
       "config.json: hidden_size: missing"},
      {"missing size of a used kind", [](json &c) { c.erase("n_groups"); },
       "config.json: n_groups: missing (the pattern has Mamba layers)"},
      {"string size", [](json &c) { c["hidden_size"] = "24"; },
       "config.json: hidden_size: must be an integer, got string \"24\""},
      {"float size", [](json &c) { c["ssm_state_size"] = 4.0; },
       "config.json: ssm_state_size: must be an integer, got number 4.0"},
      {"negative size", [](json &c) { c["conv_kernel"] = -4; },
       "config.json: conv_kernel: must be in [0, 16777216], got -4"},
      {"pattern", [](json &c) { c["hybrid_override_pattern"] = "M-E*MM-"; },
       "config.json: hybrid_override_pattern: character 'E' at position 2 is not a layer type "
       "('M' Mamba2, '*' attention, '-' MLP)"},
      {"layer count", [](json &c) { c["num_hidden_layers"] = 8; },
       "config.json: num_hidden_layers: is 8 but hybrid_override_pattern has 7 layers"},
      {"bool", [](json &c) { c["tie_word_embeddings"] = 0; },
       "config.json: tie_word_embeddings: must be true or false, got number 0"},
      {"bias", [](json &c) { c["mlp_bias"] = true; },
       "config.json: mlp_bias: is true, but Nestor's MLP layers have no bias"},
      {"activation", [](json &c) { c["mlp_hidden_act"] = "silu"; },
       "config.json: mlp_hidden_act: is \"silu\", but Nestor's MLP layers use squared ReLU "
       "(relu2)"},
      {"head dims", [](json &c) { c["attention_head_dim"] = 16; },
       "config.json: attention_head_dim: 16 differs from head_dim (8)"},
      {"list length", [](json &c) { c["mamba_num_heads_per_layer"].erase(0); },
       "config.json: mamba_num_heads_per_layer: has 6 entries but the model has 7 layers (one "
       "entry per layer, null for layers of another kind)"},
      {"list type", [](json &c) { c["intermediate_size_per_layer"] = 40; },
       "config.json: intermediate_size_per_layer: must be a list, got number 40"},
      {"entry of another kind", [](json &c) { c["mamba_head_dim_per_layer"][1] = 6; },
       "config.json: mamba_head_dim_per_layer[1]: layer 1 is '-' in the pattern, not a Mamba2 "
       "layer; its entry must be null"},
      {"missing entry", [null](json &c) { c["intermediate_size_per_layer"][6] = null; },
       "config.json: intermediate_size_per_layer[6]: must be an integer, got null"},
      {"entry groups", [](json &c) { c["mamba_num_heads_per_layer"][2] = 3; },
       "config.json: mamba_num_heads_per_layer[2]: 3 heads are not divisible by n_groups (2)"},
      {"entry kv groups", [](json &c) { c["num_attention_heads_per_layer"][3] = 5; },
       "config.json: num_attention_heads_per_layer[3]: 5 query heads are not divisible by "
       "num_key_value_heads (2)"},
      {"zero entry", [](json &c) { c["mamba_head_dim_per_layer"][0] = 0; },
       "config.json: mamba_head_dim_per_layer[0]: must be positive, got 0"},
      {"finite time step limit",
       [](json &c) {
         c["time_step_limit"] = {1e-4, 0.1};
       },
       "config.json: time_step_limit: is [0.0001, 0.1]: the model clamps its time step dt to "
       "it, but Nestor's Mamba layers do not clamp (only [0.0, Infinity] imports)"},
      {"time step floor",
       [](json &c) {
         c["time_step_limit"] = {0.001, {{"__float__", "Infinity"}}};
       },
       "config.json: time_step_limit: is [0.001, inf]: the model clamps its time step dt to "
       "it, but Nestor's Mamba layers do not clamp (only [0.0, Infinity] imports)"},
      {"time step limit not a list", [](json &c) { c["time_step_limit"] = 0.1; },
       "config.json: time_step_limit: must be a list [min, max], got number 0.1"},
      {"time step limit entry",
       [](json &c) {
         c["time_step_limit"] = {0.0, "inf"};
       },
       "config.json: time_step_limit[1]: must be a number, got string \"inf\""},
  };
  for (const BadConfig &bad : cases) {
    SCOPED_TRACE(bad.what);
    std::string text = editedConfig(heterogeneousSpec(), bad.edit);
    EXPECT_EQ(message(hf::specFromNemotronHConfig(text, "config.json")), bad.expected);
  }
}

/// Real NemotronH configs carry "time_step_limit": [0.0, Infinity], as Python's json module
/// writes it (or transformers 5's {"__float__": "Infinity"}); both import, and the words inside
/// strings are left alone.
TEST(HuggingFaceConfig, PythonsNonFiniteFloatsImport) {
  spec::ModelSpec spec = heterogeneousSpec();
  std::string text = editedConfig(spec, [](json &c) {
    c["time_step_limit"] = "LIMIT";
    c["_name_or_path"] = "models/NaN-Infinity";
    c["time_step_floor"] = "NaN"; // a key Nestor does not read
  });
  for (const char *limit : {"[0.0, Infinity]", "[-Infinity, Infinity]", "[0,Infinity]",
                            R"([0.0, {"__float__": "Infinity"}])"}) {
    SCOPED_TRACE(limit);
    std::string edited = text;
    size_t at = edited.find("\"LIMIT\"");
    ASSERT_NE(at, std::string::npos);
    edited.replace(at, 7, limit);
    edited.insert(edited.rfind('}'), R"(, "time_step_max_bound": NaN)");
    auto back = hf::specFromNemotronHConfig(edited, "config.json");
    ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
    EXPECT_EQ(back->name(), "NaN-Infinity");
    expectSameArchitecture(spec.architecture(), back->architecture());
  }
  // A bare word that only starts like one stays invalid JSON.
  std::string bad = text;
  bad.replace(bad.find("\"LIMIT\""), 7, "[0.0, Infinityx]");
  EXPECT_NE(message(hf::specFromNemotronHConfig(bad, "config.json")).find("not valid JSON"),
            std::string::npos);
}

TEST(HuggingFaceConfig, BadJsonNamesTheFile) {
  EXPECT_EQ(message(hf::specFromNemotronHConfig("[1, 2]", "hf/config.json")),
            "hf/config.json: a JSON array, not an object");
  EXPECT_EQ(message(hf::specFromNemotronHConfig(R"({"model_type": "nemotron_h",
                                                    "model_type": "nemotron_h"})",
                                                "hf/config.json")),
            "hf/config.json: the key 'model_type' appears twice");
  EXPECT_NE(message(hf::specFromNemotronHConfig("{\"model_type\": ", "hf/config.json"))
                .find("hf/config.json: not valid JSON: "),
            std::string::npos);
  // Sizes the spec validator rejects come back under the config's name.
  std::string text = editedConfig(homogeneousSpec(), [](json &c) { c["mamba_num_heads"] = 5; });
  EXPECT_EQ(message(hf::specFromNemotronHConfig(text, "hf/config.json")),
            "hf/config.json: architecture.mamba_num_heads: 5 heads are not divisible by n_groups "
            "(2)");
}

//===----------------------------------------------------------------------===//
// Folders
//===----------------------------------------------------------------------===//

class HuggingFaceFolder : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::SmallString<128> dir;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-hf-test", dir));
    root = dir.str().str();
  }
  void TearDown() override { llvm::sys::fs::remove_directories(root); }

  std::string path(llvm::StringRef name) { return root + "/" + name.str(); }

  /// Writes a dense model folder with random weights of every tensor of `spec`.
  train::TensorMap writeDense(const std::string &dir, const spec::ModelSpec &spec) {
    EXPECT_FALSE(llvm::sys::fs::create_directories(dir));
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    train::TensorMap weights;
    for (const auto &[name, shape] : hf::denseTensorShapes(spec.architecture())) {
      train::Tensor &t = weights[name];
      t.shape = shape;
      int64_t n = 1;
      for (int64_t d : shape)
        n *= d;
      for (int64_t i = 0; i < n; ++i)
        t.data.push_back(normal(rng));
    }
    std::string text;
    google::protobuf::TextFormat::PrintToString(spec, &text);
    EXPECT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(dir + "/spec.pbtxt", text)));
    EXPECT_FALSE(static_cast<bool>(ckpt::writeSafetensors(dir + "/model.safetensors", weights)));
    return weights;
  }

  static void expectBitForBit(const train::TensorMap &expected, const train::TensorMap &got) {
    ASSERT_EQ(expected.size(), got.size());
    for (const auto &[name, tensor] : expected) {
      auto it = got.find(name);
      ASSERT_NE(it, got.end()) << name;
      EXPECT_EQ(it->second.shape, tensor.shape) << name;
      ASSERT_EQ(it->second.data.size(), tensor.data.size()) << name;
      EXPECT_EQ(std::memcmp(it->second.data.data(), tensor.data.data(),
                            tensor.data.size() * sizeof(float)),
                0)
          << name;
    }
  }

  void roundTrip(const spec::ModelSpec &spec) {
    train::TensorMap weights = writeDense(path("dense"), spec);
    ASSERT_FALSE(static_cast<bool>(hf::exportHuggingFace(path("dense"), path("hf"))));

    // The Hugging Face folder: config.json and NemotronH tensors, conv kernels [C, 1, K].
    auto config = llvm::MemoryBuffer::getFile(path("hf/config.json"));
    ASSERT_TRUE(static_cast<bool>(config));
    EXPECT_EQ(json::parse((*config)->getBuffer().str())["model_type"], "nemotron_h");
    ckpt::Metadata metadata;
    auto hfWeights = ckpt::readSafetensors(path("hf/model.safetensors"), &metadata);
    ASSERT_TRUE(static_cast<bool>(hfWeights)) << llvm::toString(hfWeights.takeError());
    EXPECT_EQ(metadata["format"], "pt");
    const train::Tensor &conv = hfWeights->at("backbone.layers.0.mixer.conv1d.weight");
    const train::Tensor &dense = weights.at("backbone.layers.0.mixer.conv1d.weight");
    EXPECT_EQ(conv.shape, (std::vector<int64_t>{dense.shape[0], 1, dense.shape[1]}));
    EXPECT_EQ(hfWeights->size(), weights.size());

    ASSERT_FALSE(static_cast<bool>(hf::importHuggingFace(path("hf"), path("back"))));
    auto back = spec::loadSpecFile(path("back/spec.pbtxt"));
    ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
    expectSameArchitecture(spec.architecture(), back->architecture());
    EXPECT_EQ(back->name(), spec.name());
    auto backWeights = ckpt::readSafetensors(path("back/model.safetensors"));
    ASSERT_TRUE(static_cast<bool>(backWeights)) << llvm::toString(backWeights.takeError());
    expectBitForBit(weights, *backWeights);
  }

  std::string root;
};

TEST_F(HuggingFaceFolder, HeterogeneousRoundTripIsBitForBit) { roundTrip(heterogeneousSpec()); }

TEST_F(HuggingFaceFolder, HomogeneousTiedRoundTripIsBitForBit) {
  spec::ModelSpec spec = homogeneousSpec();
  spec.mutable_architecture()->set_tie_word_embeddings(true);
  roundTrip(spec);
}

TEST_F(HuggingFaceFolder, ShardedWeightsImport) {
  spec::ModelSpec spec = heterogeneousSpec();
  train::TensorMap weights = writeDense(path("dense"), spec);
  ASSERT_FALSE(static_cast<bool>(hf::exportHuggingFace(path("dense"), path("hf"))));
  // Split the export as save_pretrained shards a large model.
  auto all = ckpt::readSafetensors(path("hf/model.safetensors"));
  ASSERT_TRUE(static_cast<bool>(all));
  train::TensorMap shards[2];
  json map = json::object();
  int i = 0;
  for (auto &[name, tensor] : *all) {
    int shard = i++ % 2;
    shards[shard][name] = tensor;
    map[name] =
        shard == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_FALSE(static_cast<bool>(ckpt::writeSafetensors(path("hf/model-00001-of-00002.safetensors"),
                                                        shards[0], {{"format", "pt"}})));
  ASSERT_FALSE(static_cast<bool>(ckpt::writeSafetensors(path("hf/model-00002-of-00002.safetensors"),
                                                        shards[1], {{"format", "pt"}})));
  ASSERT_FALSE(static_cast<bool>(
      ckpt::writeFileAtomic(path("hf/model.safetensors.index.json"),
                            json({{"metadata", json::object()}, {"weight_map", map}}).dump())));
  ASSERT_FALSE(llvm::sys::fs::remove(path("hf/model.safetensors")));
  auto model = hf::loadHuggingFaceAsDense(path("hf"));
  ASSERT_TRUE(static_cast<bool>(model)) << llvm::toString(model.takeError());
  expectBitForBit(weights, model->tensors);
}

TEST_F(HuggingFaceFolder, ExportChecksEveryTensorOfTheSpec) {
  spec::ModelSpec spec = heterogeneousSpec();
  train::TensorMap weights = writeDense(path("dense"), spec);
  std::string file = path("dense/model.safetensors");
  auto exportError = [&](train::TensorMap edited) {
    EXPECT_FALSE(static_cast<bool>(ckpt::writeSafetensors(file, edited)));
    return message(hf::exportHuggingFace(path("dense"), path("hf")));
  };

  train::TensorMap missing = weights;
  missing.erase("backbone.layers.3.mixer.k_proj.weight");
  EXPECT_EQ(exportError(missing),
            file + ": tensor 'backbone.layers.3.mixer.k_proj.weight' of the spec is missing");

  train::TensorMap reshaped = weights;
  // Layer 1's FFN is 32 wide in this model; a 40-wide tensor belongs to another model.
  reshaped["backbone.layers.1.mixer.up_proj.weight"].shape = {40, 24};
  reshaped["backbone.layers.1.mixer.up_proj.weight"].data.resize(40 * 24);
  EXPECT_EQ(exportError(reshaped), file + ": tensor 'backbone.layers.1.mixer.up_proj.weight' has "
                                          "shape [40, 24] but the spec says [32, 24]");

  train::TensorMap extra = weights;
  extra["routers.depth.fc1.bias"] = train::Tensor{{4}, {0, 0, 0, 0}};
  EXPECT_NE(exportError(extra).find(": tensor 'routers.depth.fc1.bias' is not a tensor of the "
                                    "spec"),
            std::string::npos);
  EXPECT_FALSE(llvm::sys::fs::exists(path("hf/config.json")));
}

TEST_F(HuggingFaceFolder, ImportChecksShapesAgainstTheConfig) {
  spec::ModelSpec spec = heterogeneousSpec();
  writeDense(path("dense"), spec);
  ASSERT_FALSE(static_cast<bool>(hf::exportHuggingFace(path("dense"), path("hf"))));
  std::string text = editedConfig(spec, [](json &c) { c["mamba_num_heads_per_layer"][0] = 4; });
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(path("hf/config.json"), text)));
  EXPECT_EQ(message(hf::importHuggingFace(path("hf"), path("back"))),
            path("hf/model.safetensors") +
                ": tensor 'backbone.layers.0.mixer.in_proj.weight' has shape [42, 24] but "
                "config.json says [68, 24]");
  EXPECT_FALSE(llvm::sys::fs::exists(path("back/spec.pbtxt")));
}

TEST_F(HuggingFaceFolder, RefusesElasticSpecsAndItsOwnInput) {
  spec::ModelSpec elastic = homogeneousSpec();
  elastic.mutable_elastic()->add_budgets()->set_name("full");
  elastic.mutable_elastic()->mutable_budgets(0)->set_fraction(1.0);
  writeDense(path("run"), elastic);
  EXPECT_NE(message(hf::exportHuggingFace(path("run"), path("hf")))
                .find("spec.pbtxt: the spec is elastic"),
            std::string::npos);

  writeDense(path("dense"), homogeneousSpec());
  EXPECT_EQ(message(hf::exportHuggingFace(path("dense"), path("dense"))),
            "--out: " + path("dense") + " is the input " + path("dense") +
                "; writing there would replace it (nothing was written)");
  // A second export into the same folder replaces the first only when asked to.
  ASSERT_FALSE(static_cast<bool>(hf::exportHuggingFace(path("dense"), path("hf"))));
  EXPECT_NE(message(hf::exportHuggingFace(path("dense"), path("hf"))).find("pass --force"),
            std::string::npos);
  EXPECT_FALSE(static_cast<bool>(hf::exportHuggingFace(path("dense"), path("hf"), /*force=*/true)));
  // An import never writes into an export's folder (nor into the model it reads).
  EXPECT_NE(message(hf::importHuggingFace(path("dense"), path("hf"), true))
                .find("holds a 'hf-export' output, not a 'hf-import' one"),
            std::string::npos);
  EXPECT_NE(message(hf::importHuggingFace(path("nothing"), path("back")))
                .find(path("nothing/config.json") + ": cannot read"),
            std::string::npos);
}

} // namespace
