//===- HuggingFace.cpp - Hugging Face NemotronH export and import ----------===//
//
// The config.json fields follow transformers' NemotronHConfig (model_type "nemotron_h"). Fields
// whose Hugging Face defaults already describe Nestor's model are left out: the Mamba time-step
// limit (default (0, inf): no clamp, as in Nestor; JSON cannot even write inf), the scan chunk
// size (a kernel detail with no effect on the result) and the position-embedding length (the
// attention layers have no positional encoding).
//
//===----------------------------------------------------------------------===//
#include "nestor/HuggingFace.h"

#include "nestor/Json.h"
#include "nestor/ParamCount.h"

#include "nestor/Checkpoint.h"

#include "google/protobuf/text_format.h"
#include "nlohmann/json.hpp"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <sstream>

using namespace nestor;
using spec::Architecture;
using spec::LayerKind;

namespace {

/// The largest size a spec accepts (lib/spec/Spec.cpp).
constexpr int64_t kMaxSize = int64_t(1) << 24;

llvm::Error fieldError(llvm::StringRef file, const llvm::Twine &field, const llvm::Twine &message) {
  return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                 file + ": " + field + ": " + message);
}

/// Python's json module writes the non-finite floats as the bare words Infinity, -Infinity and
/// NaN, which JSON does not have (real NemotronH configs carry "time_step_limit": [0.0,
/// Infinity]). Rewrites each such word outside a string to transformers 5's spelling,
/// {"__float__": "Infinity"}, which ConfigReader::real reads; everything else is unchanged.
std::string pythonFloatLiterals(llvm::StringRef text) {
  std::string out;
  out.reserve(text.size());
  bool inString = false;
  auto isWordChar = [](char c) { return llvm::isAlnum(c) || c == '_' || c == '.'; };
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      out += c;
      if (c == '\\' && i + 1 < text.size())
        out += text[++i];
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"') {
      inString = true;
      out += c;
      continue;
    }
    bool replaced = false;
    if (i == 0 || !isWordChar(text[i - 1]))
      for (llvm::StringRef word : {"-Infinity", "Infinity", "NaN"})
        if (text.substr(i).starts_with(word) &&
            (i + word.size() == text.size() || !isWordChar(text[i + word.size()]))) {
          out += "{\"__float__\": \"" + word.str() + "\"}";
          i += word.size() - 1;
          replaced = true;
          break;
        }
    if (!replaced)
      out += c;
  }
  return out;
}

/// The sizes of one layer: its override where one is set, else the architecture's.
struct LayerDims {
  int64_t ffn, attnHeads, mambaHeads, mambaHeadDim;
};

LayerDims baseDims(const Architecture &a) {
  return {a.intermediate_size(), a.num_attention_heads(), a.mamba_num_heads(), a.mamba_head_dim()};
}

LayerDims layerDims(const Architecture &a, size_t layer) {
  LayerDims dims = baseDims(a);
  if (layer >= static_cast<size_t>(a.layer_overrides_size()))
    return dims;
  const spec::LayerOverride &o = a.layer_overrides(static_cast<int>(layer));
  auto pick = [](int64_t override, int64_t base) { return override > 0 ? override : base; };
  return {pick(o.intermediate_size(), dims.ffn), pick(o.num_attention_heads(), dims.attnHeads),
          pick(o.mamba_num_heads(), dims.mambaHeads), pick(o.mamba_head_dim(), dims.mambaHeadDim)};
}

/// One per-layer size of config.json: its scalar and list names, the layer kind that has it,
/// and where it lives in a layer's sizes and in a layer override.
struct PerLayerField {
  const char *scalar;
  const char *list;
  LayerKind kind;
  int64_t LayerDims::*dims;
  void (spec::LayerOverride::*setOverride)(int64_t);
};

const PerLayerField kPerLayerFields[] = {
    {"intermediate_size", "intermediate_size_per_layer", LayerKind::MLP, &LayerDims::ffn,
     &spec::LayerOverride::set_intermediate_size},
    {"num_attention_heads", "num_attention_heads_per_layer", LayerKind::Attention,
     &LayerDims::attnHeads, &spec::LayerOverride::set_num_attention_heads},
    {"mamba_num_heads", "mamba_num_heads_per_layer", LayerKind::Mamba, &LayerDims::mambaHeads,
     &spec::LayerOverride::set_mamba_num_heads},
    {"mamba_head_dim", "mamba_head_dim_per_layer", LayerKind::Mamba, &LayerDims::mambaHeadDim,
     &spec::LayerOverride::set_mamba_head_dim},
};

/// The layer kind as the pattern's documentation names it.
const char *kindName(LayerKind kind) {
  switch (kind) {
  case LayerKind::Mamba:
    return "Mamba2";
  case LayerKind::Attention:
    return "attention";
  case LayerKind::MLP:
    return "MLP";
  }
  return "?";
}

bool isConvWeight(llvm::StringRef name) { return name.ends_with(".mixer.conv1d.weight"); }

/// Reads the fields of a config.json object, each error naming the file and the field.
class ConfigReader {
public:
  ConfigReader(const nlohmann::json &config, llvm::StringRef file) : config(config), file(file) {}

  const nlohmann::json *find(llvm::StringRef key) const {
    auto it = config.find(key.str());
    return it == config.end() || it->is_null() ? nullptr : &*it;
  }

  /// An integer size in [0, 2^24]; absent (or null) gives std::nullopt unless `required`.
  llvm::Expected<std::optional<int64_t>> size(llvm::StringRef key, bool required,
                                              llvm::StringRef why = "") const {
    const nlohmann::json *v = find(key);
    if (!v) {
      if (required)
        return fieldError(file, key, "missing" + (why.empty() ? "" : " (" + why + ")"));
      return std::nullopt;
    }
    return checkSize(*v, key);
  }

  llvm::Expected<int64_t> checkSize(const nlohmann::json &v, const llvm::Twine &field) const {
    // A float such as 4096.0 is rejected: transformers would build its modules with it and fail.
    if (!v.is_number_integer())
      return fieldError(file, field, "must be an integer, got " + describe(v));
    if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(kMaxSize)
                               : (v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxSize))
      return fieldError(file, field,
                        llvm::formatv("must be in [0, {0}], got {1}", kMaxSize, v.dump()).str());
    return v.get<int64_t>();
  }

  llvm::Expected<std::optional<bool>> boolean(llvm::StringRef key) const {
    const nlohmann::json *v = find(key);
    if (!v)
      return std::nullopt;
    if (!v->is_boolean())
      return fieldError(file, key, "must be true or false, got " + describe(*v));
    return v->get<bool>();
  }

  llvm::Expected<std::optional<std::string>> string(llvm::StringRef key, bool required) const {
    const nlohmann::json *v = find(key);
    if (!v) {
      if (required)
        return fieldError(file, key, "missing");
      return std::nullopt;
    }
    if (!v->is_string())
      return fieldError(file, key, "must be a string, got " + describe(*v));
    return v->get<std::string>();
  }

  llvm::Expected<std::optional<double>> number(llvm::StringRef key) const {
    const nlohmann::json *v = find(key);
    if (!v)
      return std::nullopt;
    if (!v->is_number())
      return fieldError(file, key, "must be a number, got " + describe(*v));
    return v->get<double>();
  }

  /// A float as Python writes it: a JSON number, or one of the non-finite values in
  /// transformers 5's spelling {"__float__": "Infinity"} (Python's own Infinity, -Infinity
  /// and NaN literals are rewritten to that spelling before parsing, pythonFloatLiterals).
  llvm::Expected<double> real(const nlohmann::json &v, const llvm::Twine &field) const {
    if (v.is_number())
      return v.get<double>();
    if (v.is_object() && v.size() == 1 && v.contains("__float__") && v["__float__"].is_string()) {
      std::string name = v["__float__"].get<std::string>();
      if (name == "Infinity")
        return std::numeric_limits<double>::infinity();
      if (name == "-Infinity")
        return -std::numeric_limits<double>::infinity();
      if (name == "NaN")
        return std::numeric_limits<double>::quiet_NaN();
    }
    return fieldError(file, field, "must be a number, got " + describe(v));
  }

  /// A feature Nestor's layers do not have must be absent or set to `expected`.
  llvm::Error require(llvm::StringRef key, const nlohmann::json &expected,
                      llvm::StringRef why) const {
    const nlohmann::json *v = find(key);
    if (!v || *v == expected)
      return llvm::Error::success();
    return fieldError(file, key, "is " + v->dump() + ", but " + why);
  }

  static std::string describe(const nlohmann::json &v) {
    if (v.is_null())
      return "null";
    std::string text = v.dump();
    if (text.size() > 40)
      text = text.substr(0, 37) + "...";
    return std::string(v.type_name()) + " " + text;
  }

  const nlohmann::json &config;
  llvm::StringRef file;
};

} // namespace

std::map<std::string, std::vector<int64_t>> nestor::hf::denseTensorShapes(const Architecture &a) {
  spec::ModelSpec dense;
  *dense.mutable_architecture() = a;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (spec::ParamShape &p : spec::parameterShapes(dense))
    shapes[p.name] = std::move(p.shape);
  return shapes;
}

//===----------------------------------------------------------------------===//
// config.json
//===----------------------------------------------------------------------===//

llvm::Expected<std::string> nestor::hf::nemotronHConfig(const spec::ModelSpec &dense) {
  auto error = [](const llvm::Twine &field, const llvm::Twine &message) {
    return llvm::createStringError((field + ": " + message).str());
  };
  if (dense.has_elastic())
    return error("elastic", "the spec is elastic; export a dense model (`nestor slice` cuts one "
                            "per budget)");
  const Architecture &a = dense.architecture();
  auto layers = spec::parsePattern(a.hybrid_override_pattern());
  if (!layers)
    return error("architecture.hybrid_override_pattern", llvm::toString(layers.takeError()));
  size_t numLayers = layers->size();
  bool heterogeneous = a.layer_overrides_size() > 0;
  if (heterogeneous && static_cast<size_t>(a.layer_overrides_size()) != numLayers)
    return error("architecture.layer_overrides",
                 llvm::formatv("has {0} entries but the pattern has {1} layers (one per layer)",
                               a.layer_overrides_size(), numLayers)
                     .str());

  // Per-layer sizes (null for layers of another kind) and the maximum over each kind's layers,
  // which a loader reading only the scalars would allocate.
  std::vector<LayerDims> dims;
  for (size_t i = 0; i < numLayers; ++i)
    dims.push_back(layerDims(a, i));
  std::map<std::string, int64_t> scalars;
  std::map<std::string, nlohmann::ordered_json> lists;
  for (const PerLayerField &f : kPerLayerFields) {
    std::optional<int64_t> largest;
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (size_t i = 0; i < numLayers; ++i) {
      if ((*layers)[i] != f.kind) {
        list.push_back(nullptr);
        continue;
      }
      int64_t value = dims[i].*f.dims;
      list.push_back(value);
      largest = std::max(largest.value_or(value), value);
    }
    scalars[f.scalar] = heterogeneous && largest ? *largest : baseDims(a).*f.dims;
    lists[f.list] = std::move(list);
  }

  nlohmann::ordered_json c;
  c["architectures"] = {"NemotronHForCausalLM"};
  c["model_type"] = "nemotron_h";
  c["_name_or_path"] = dense.name();
  c["torch_dtype"] = "float32";
  c["vocab_size"] = a.vocab_size();
  c["hidden_size"] = a.hidden_size();
  c["num_hidden_layers"] = numLayers;
  c["hybrid_override_pattern"] = a.hybrid_override_pattern();
  c["intermediate_size"] = scalars["intermediate_size"];
  c["mlp_hidden_act"] = "relu2";
  c["mlp_bias"] = false;
  c["num_attention_heads"] = scalars["num_attention_heads"];
  c["num_key_value_heads"] = a.num_key_value_heads();
  // Hub NemotronH configs carry both names; loaders differ in which one they read.
  c["head_dim"] = a.head_dim();
  c["attention_head_dim"] = a.head_dim();
  c["attention_bias"] = false;
  c["mamba_num_heads"] = scalars["mamba_num_heads"];
  c["mamba_head_dim"] = scalars["mamba_head_dim"];
  c["n_groups"] = a.n_groups();
  c["ssm_state_size"] = a.ssm_state_size();
  c["conv_kernel"] = a.conv_kernel();
  c["mamba_hidden_act"] = "silu";
  c["use_conv_bias"] = true;
  c["mamba_proj_bias"] = false;
  c["use_bias"] = false;
  c["layer_norm_epsilon"] = spec::layerNormEpsilon(a);
  // Nestor keeps the residual stream in float32 whatever the weights' type.
  c["residual_in_fp32"] = true;
  c["tie_word_embeddings"] = a.tie_word_embeddings();
  // The byte tokenizer's special tokens (nestor/Data.h), which are NemotronH's defaults too.
  c["pad_token_id"] = 0;
  c["bos_token_id"] = 1;
  c["eos_token_id"] = 2;
  c["use_cache"] = true;
  if (heterogeneous)
    for (const PerLayerField &f : kPerLayerFields)
      c[f.list] = std::move(lists[f.list]);
  return c.dump(2) + "\n";
}

llvm::Expected<spec::ModelSpec> nestor::hf::specFromNemotronHConfig(llvm::StringRef json,
                                                                    llvm::StringRef fileName) {
  auto parsed = ckpt::parseJsonObject(pythonFloatLiterals(json), fileName);
  if (!parsed)
    return parsed.takeError();
  ConfigReader r(*parsed, fileName);

  auto modelType = r.string("model_type", /*required=*/true);
  if (!modelType)
    return modelType.takeError();
  if (**modelType != "nemotron_h")
    return fieldError(fileName, "model_type",
                      "'" + **modelType + "' is not nemotron_h; Nestor imports NemotronH models");
  auto pattern = r.string("hybrid_override_pattern", /*required=*/true);
  if (!pattern)
    return pattern.takeError();
  auto layers = spec::parsePattern(**pattern);
  if (!layers)
    return fieldError(fileName, "hybrid_override_pattern", llvm::toString(layers.takeError()));
  size_t numLayers = layers->size();
  bool hasMamba = llvm::is_contained(*layers, LayerKind::Mamba);
  bool hasAttention = llvm::is_contained(*layers, LayerKind::Attention);
  bool hasMLP = llvm::is_contained(*layers, LayerKind::MLP);

  // Features of other NemotronH variants that Nestor's layers do not have.
  struct Fixed {
    const char *key;
    nlohmann::json value;
    const char *why;
  } fixed[] = {
      {"mlp_hidden_act", "relu2", "Nestor's MLP layers use squared ReLU (relu2)"},
      {"mamba_hidden_act", "silu", "Nestor's Mamba layers use SiLU"},
      {"use_bias", false, "Nestor's layers have no bias"},
      {"mlp_bias", false, "Nestor's MLP layers have no bias"},
      {"attention_bias", false, "Nestor's attention layers have no bias"},
      {"mamba_proj_bias", false, "Nestor's Mamba projections have no bias"},
      {"use_conv_bias", true, "Nestor's Mamba convolution has a bias"},
  };
  for (const Fixed &f : fixed)
    if (llvm::Error err = r.require(f.key, f.value, f.why))
      return err;

  spec::ModelSpec spec;
  Architecture &a = *spec.mutable_architecture();
  a.set_hybrid_override_pattern(**pattern);

  // Sizes of a layer kind the pattern uses are required; the others may be left out.
  struct SizeField {
    const char *key;
    bool required;
    const char *why;
    void (Architecture::*set)(int64_t);
  } sizes[] = {
      {"vocab_size", true, "", &Architecture::set_vocab_size},
      {"hidden_size", true, "", &Architecture::set_hidden_size},
      {"intermediate_size", hasMLP, "the pattern has MLP layers",
       &Architecture::set_intermediate_size},
      {"num_attention_heads", hasAttention, "the pattern has attention layers",
       &Architecture::set_num_attention_heads},
      {"num_key_value_heads", hasAttention, "the pattern has attention layers",
       &Architecture::set_num_key_value_heads},
      {"mamba_num_heads", hasMamba, "the pattern has Mamba layers",
       &Architecture::set_mamba_num_heads},
      {"mamba_head_dim", hasMamba, "the pattern has Mamba layers",
       &Architecture::set_mamba_head_dim},
      {"n_groups", hasMamba, "the pattern has Mamba layers", &Architecture::set_n_groups},
      {"ssm_state_size", hasMamba, "the pattern has Mamba layers",
       &Architecture::set_ssm_state_size},
      {"conv_kernel", hasMamba, "the pattern has Mamba layers", &Architecture::set_conv_kernel},
  };
  for (const SizeField &f : sizes) {
    auto value = r.size(f.key, f.required, f.why);
    if (!value)
      return value.takeError();
    if (*value)
      (a.*f.set)(**value);
  }
  // Hub configs name the attention head width both head_dim and attention_head_dim.
  auto headDim = r.size("head_dim", false);
  if (!headDim)
    return headDim.takeError();
  auto attentionHeadDim = r.size("attention_head_dim", false);
  if (!attentionHeadDim)
    return attentionHeadDim.takeError();
  if (*headDim && *attentionHeadDim && **headDim != **attentionHeadDim)
    return fieldError(
        fileName, "attention_head_dim",
        llvm::formatv("{0} differs from head_dim ({1})", **attentionHeadDim, **headDim).str());
  if (std::optional<int64_t> hd = *headDim ? *headDim : *attentionHeadDim)
    a.set_head_dim(*hd);
  else if (hasAttention)
    return fieldError(fileName, "head_dim",
                      "missing (nor attention_head_dim; the pattern has attention layers)");

  auto numHiddenLayers = r.size("num_hidden_layers", /*required=*/true);
  if (!numHiddenLayers)
    return numHiddenLayers.takeError();
  if (static_cast<size_t>(**numHiddenLayers) != numLayers)
    return fieldError(fileName, "num_hidden_layers",
                      llvm::formatv("is {0} but hybrid_override_pattern has {1} layers",
                                    **numHiddenLayers, numLayers)
                          .str());

  // Mamba2 clamps dt = softplus(.) to time_step_limit; Nestor's Mamba layers do not clamp, so
  // only the limit that changes nothing imports: a lower bound <= 0 (dt > 0 always) and no
  // upper bound (transformers' default, [0.0, Infinity]).
  if (const nlohmann::json *limit = r.find("time_step_limit")) {
    if (!limit->is_array() || limit->size() != 2)
      return fieldError(fileName, "time_step_limit",
                        "must be a list [min, max], got " + ConfigReader::describe(*limit));
    auto lo = r.real((*limit)[0], "time_step_limit[0]");
    if (!lo)
      return lo.takeError();
    auto hi = r.real((*limit)[1], "time_step_limit[1]");
    if (!hi)
      return hi.takeError();
    auto text = [](double v) {
      std::ostringstream os;
      os << v;
      return os.str();
    };
    if (!(*lo <= 0) || !(std::isinf(*hi) && *hi > 0))
      return fieldError(fileName, "time_step_limit",
                        "is [" + text(*lo) + ", " + text(*hi) +
                            "]: the model clamps its time step dt to it, but Nestor's Mamba "
                            "layers do not clamp (only [0.0, Infinity] imports)");
  }

  // NemotronH reads layer_norm_epsilon; some configs carry only the generic rms_norm_eps.
  auto epsilon = r.number("layer_norm_epsilon");
  if (!epsilon)
    return epsilon.takeError();
  if (!*epsilon) {
    epsilon = r.number("rms_norm_eps");
    if (!epsilon)
      return epsilon.takeError();
  }
  if (*epsilon)
    a.set_layer_norm_epsilon(**epsilon);
  auto tied = r.boolean("tie_word_embeddings");
  if (!tied)
    return tied.takeError();
  a.set_tie_word_embeddings(tied->value_or(false));

  // Hugging Face fills _name_or_path with where the model came from (a hub id or a path); its
  // last component names the model.
  auto name = r.string("_name_or_path", false);
  if (!name)
    return name.takeError();
  if (*name)
    spec.set_name(llvm::sys::path::filename(llvm::StringRef(**name).rtrim("/")).str());

  // The scalar sizes first: the list checks below divide by them.
  if (llvm::Error err = spec::validateSpec(spec, fileName))
    return err;

  // Per-layer lists. As `nestor slice` writes a heterogeneous model, every layer's override
  // states all the sizes of its kind, and a model whose layers of each kind agree has none:
  // one canonical spec per model, so a sliced spec comes back identical.
  std::vector<LayerDims> dims(numLayers, baseDims(a));
  bool heterogeneous = false;
  for (const PerLayerField &f : kPerLayerFields) {
    const nlohmann::json *list = r.find(f.list);
    if (!list)
      continue;
    if (!list->is_array())
      return fieldError(fileName, f.list, "must be a list, got " + ConfigReader::describe(*list));
    if (list->size() != numLayers)
      return fieldError(fileName, f.list,
                        llvm::formatv("has {0} entries but the model has {1} layers (one entry "
                                      "per layer, null for layers of another kind)",
                                      list->size(), numLayers)
                            .str());
    int64_t scalar = baseDims(a).*f.dims;
    for (size_t i = 0; i < numLayers; ++i) {
      std::string at = llvm::formatv("{0}[{1}]", f.list, i).str();
      const nlohmann::json &entry = (*list)[i];
      if ((*layers)[i] != f.kind) {
        if (!entry.is_null())
          return fieldError(fileName, at,
                            llvm::formatv("layer {0} is '{1}' in the pattern, not a {2} layer; "
                                          "its entry must be null",
                                          i, spec::layerKindChar((*layers)[i]), kindName(f.kind))
                                .str());
        continue;
      }
      auto value = r.checkSize(entry, at);
      if (!value)
        return value.takeError();
      if (*value == 0)
        return fieldError(fileName, at, "must be positive, got 0");
      if (f.kind == LayerKind::Mamba && f.dims == &LayerDims::mambaHeads &&
          *value % a.n_groups() != 0)
        return fieldError(
            fileName, at,
            llvm::formatv("{0} heads are not divisible by n_groups ({1})", *value, a.n_groups())
                .str());
      if (f.kind == LayerKind::Attention && *value % a.num_key_value_heads() != 0)
        return fieldError(fileName, at,
                          llvm::formatv("{0} query heads are not divisible by "
                                        "num_key_value_heads ({1})",
                                        *value, a.num_key_value_heads())
                              .str());
      dims[i].*f.dims = *value;
      heterogeneous |= *value != scalar;
    }
  }
  if (heterogeneous)
    for (size_t i = 0; i < numLayers; ++i) {
      spec::LayerOverride *o = a.add_layer_overrides();
      for (const PerLayerField &f : kPerLayerFields)
        if ((*layers)[i] == f.kind)
          (o->*f.setOverride)(dims[i].*f.dims);
    }

  if (llvm::Error err = spec::validateSpec(spec, fileName))
    return err;
  return spec;
}

//===----------------------------------------------------------------------===//
// Folders
//===----------------------------------------------------------------------===//

namespace {

std::string joinPath(llvm::StringRef dir, llvm::StringRef file) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, file);
  return path.str().str();
}

/// The weights of a Hugging Face folder: model.safetensors, or the shards its index names.
llvm::Expected<train::TensorMap> readHuggingFaceWeights(llvm::StringRef hfDir) {
  std::string single = joinPath(hfDir, "model.safetensors");
  if (llvm::sys::fs::exists(single))
    return ckpt::readSafetensors(single);
  std::string indexPath = joinPath(hfDir, "model.safetensors.index.json");
  if (!llvm::sys::fs::exists(indexPath))
    return llvm::createStringError(
        (hfDir + ": no model.safetensors (nor model.safetensors.index.json); Nestor reads "
                 "safetensors weights")
            .str());
  auto text = ckpt::readFileBytes(indexPath);
  if (!text)
    return text.takeError();
  auto index = ckpt::parseJsonObject(*text, indexPath);
  if (!index)
    return index.takeError();
  auto map = index->find("weight_map");
  if (map == index->end() || !map->is_object())
    return fieldError(indexPath, "weight_map", "missing or not an object");
  std::map<std::string, std::vector<std::string>> byShard;
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (!it->is_string())
      return fieldError(indexPath, "weight_map." + it.key(), "must be a file name");
    llvm::StringRef shard = it->get_ref<const std::string &>();
    // A shard lies in the folder itself; a path elsewhere is not part of this model.
    if (shard.empty() || shard.contains('/') || shard.contains('\\') || shard == "..")
      return fieldError(indexPath, "weight_map." + it.key(),
                        "'" + shard + "' is not a file name in the folder");
    byShard[shard.str()].push_back(it.key());
  }
  train::TensorMap tensors;
  for (auto &[shard, names] : byShard) {
    std::string path = joinPath(hfDir, shard);
    auto part = ckpt::readSafetensors(path);
    if (!part)
      return part.takeError();
    for (const std::string &name : names) {
      auto it = part->find(name);
      if (it == part->end())
        return llvm::createStringError((llvm::Twine(path) + ": tensor '" + name + "' is missing (" +
                                        indexPath + " names this file)")
                                           .str());
      tensors[name] = std::move(it->second);
    }
  }
  return tensors;
}

llvm::Error createFolder(llvm::StringRef dir) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    return llvm::createStringError((dir + ": cannot create the folder: " + ec.message()).str());
  return llvm::Error::success();
}

} // namespace

llvm::Expected<hf::HuggingFaceModel>
nestor::hf::loadDenseAsHuggingFace(llvm::StringRef denseDir, const ckpt::WeightPolicy &policy) {
  std::string specPath = joinPath(denseDir, "spec.pbtxt");
  auto spec = spec::loadSpecFile(specPath);
  if (!spec)
    return spec.takeError();
  if (spec->has_elastic())
    return llvm::createStringError(
        (llvm::Twine(specPath) +
         ": the spec is elastic (a training run's); export a dense model: `nestor "
         "slice RUN --budget NAME --out DIR` cuts one per budget")
            .str());
  auto config = nemotronHConfig(*spec);
  if (!config)
    return llvm::createStringError((specPath + ": " + llvm::toString(config.takeError())).c_str());

  auto weights = ckpt::loadModelWeights(joinPath(denseDir, "model.safetensors"), *spec, policy);
  if (!weights)
    return weights.takeError();

  HuggingFaceModel model{std::move(*config), std::move(*weights)};
  // nn.Conv1d keeps a depthwise kernel as [channels, 1, width].
  for (auto &[name, tensor] : model.tensors)
    if (isConvWeight(name))
      tensor.shape = {tensor.shape[0], 1, tensor.shape[1]};
  return model;
}

llvm::Expected<hf::DenseModel>
nestor::hf::loadHuggingFaceAsDense(llvm::StringRef hfDir, const ckpt::WeightPolicy &policy) {
  std::string configPath = joinPath(hfDir, "config.json");
  auto text = ckpt::readFileBytes(configPath);
  if (!text)
    return text.takeError();
  auto spec = specFromNemotronHConfig(*text, configPath);
  if (!spec)
    return spec.takeError();
  if (spec->name().empty()) {
    llvm::StringRef folder = llvm::sys::path::filename(hfDir.rtrim("/"));
    spec->set_name(folder.empty() || folder == "." ? "imported" : folder.str());
  }

  auto weights = readHuggingFaceWeights(hfDir);
  if (!weights)
    return weights.takeError();
  std::string weightsName = llvm::sys::fs::exists(joinPath(hfDir, "model.safetensors"))
                                ? joinPath(hfDir, "model.safetensors")
                                : joinPath(hfDir, "model.safetensors.index.json");
  const Architecture &a = spec->architecture();
  // Tied models save the embedding once; a copy under lm_head.weight is the same tensor.
  if (a.tie_word_embeddings()) {
    auto head = weights->find("lm_head.weight");
    auto embed = weights->find("backbone.embeddings.weight");
    if (head != weights->end() && embed != weights->end() &&
        head->second.shape == embed->second.shape && head->second.data == embed->second.data)
      weights->erase(head);
  }
  // nn.Conv1d keeps a depthwise kernel as [channels, 1, width]; Nestor as [channels, width].
  for (auto &[name, tensor] : *weights)
    if (isConvWeight(name) && tensor.shape.size() == 3 && tensor.shape[1] == 1)
      tensor.shape = {tensor.shape[0], tensor.shape[2]};
  if (llvm::Error err =
          ckpt::checkModelWeights(*weights, *spec, weightsName, policy, "config.json"))
    return err;
  return DenseModel{std::move(*spec), std::move(*weights)};
}

llvm::Error nestor::hf::writeHuggingFaceFolder(const HuggingFaceModel &model,
                                               llvm::StringRef outDir) {
  if (llvm::Error err = createFolder(outDir))
    return err;
  // transformers refuses safetensors files whose metadata does not say format "pt".
  if (llvm::Error err = ckpt::writeSafetensors(joinPath(outDir, "model.safetensors"), model.tensors,
                                               {{"format", "pt"}}))
    return err;
  return ckpt::writeFileAtomic(joinPath(outDir, "config.json"), model.config);
}

llvm::Error nestor::hf::writeDenseFolder(const DenseModel &model, llvm::StringRef outDir,
                                         llvm::StringRef source) {
  if (llvm::Error err = createFolder(outDir))
    return err;
  if (llvm::Error err = ckpt::writeSafetensors(joinPath(outDir, "model.safetensors"), model.tensors,
                                               {{"format", "nestor"}}))
    return err;
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(model.spec, &text))
    return llvm::createStringError("cannot print the imported spec");
  text = "# The dense model imported from the Hugging Face folder " + source.str() +
         " by `nestor import-hf`.\n" + text;
  return ckpt::writeFileAtomic(joinPath(outDir, "spec.pbtxt"), text);
}

llvm::Error nestor::hf::exportHuggingFace(llvm::StringRef denseDir, llvm::StringRef outDir,
                                          bool force, const ckpt::WeightPolicy &policy) {
  std::vector<std::string> inputs = {denseDir.str()};
  if (llvm::Error err = ckpt::checkOutputFolder(outDir, kExportKind, inputs, force))
    return err;
  auto model = loadDenseAsHuggingFace(denseDir, policy);
  if (!model)
    return model.takeError();
  if (llvm::Error err =
          ckpt::claimOutputFolder(outDir, kExportKind, "nestor export", inputs, force))
    return err;
  return writeHuggingFaceFolder(*model, outDir);
}

llvm::Error nestor::hf::importHuggingFace(llvm::StringRef hfDir, llvm::StringRef outDir, bool force,
                                          const ckpt::WeightPolicy &policy) {
  std::vector<std::string> inputs = {hfDir.str()};
  if (llvm::Error err = ckpt::checkOutputFolder(outDir, kImportKind, inputs, force))
    return err;
  auto model = loadHuggingFaceAsDense(hfDir, policy);
  if (!model)
    return model.takeError();
  if (llvm::Error err =
          ckpt::claimOutputFolder(outDir, kImportKind, "nestor import-hf", inputs, force))
    return err;
  return writeDenseFolder(*model, outDir, hfDir);
}
