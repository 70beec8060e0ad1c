//===- Spec.cpp - Loading and validating Nestor model specs ----------------===//
//
// Parse errors come from protobuf's TextFormat parser with their position; semantic errors name
// the offending field by its path ("elastic.mamba_num_heads.choices[1]"). Every message starts
// with the file name so a user with several specs open knows which one is wrong.
//
//===----------------------------------------------------------------------===//
#include "nestor/Spec.h"

#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/text_format.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/ConvertUTF.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

using namespace nestor::spec;

static std::string hexByte(char c) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
  return buf;
}

llvm::Expected<std::vector<LayerKind>> nestor::spec::parsePattern(llvm::StringRef pattern) {
  if (pattern.empty())
    return llvm::createStringError("the layer pattern is empty");
  std::vector<LayerKind> layers;
  int64_t bad = layerKindsOf(pattern.str(), layers);
  if (bad >= 0) {
    char c = pattern[bad];
    return llvm::createStringError(
        llvm::formatv("character '{0}' at position {1} is not a layer type ('M' Mamba2, '*' "
                      "attention, '-' MLP)",
                      llvm::isPrint(c) ? std::string(1, c) : hexByte(c), bad)
            .str());
  }
  return layers;
}

char nestor::spec::layerKindChar(LayerKind kind) {
  switch (kind) {
  case LayerKind::Mamba:
    return 'M';
  case LayerKind::Attention:
    return '*';
  case LayerKind::MLP:
    return '-';
  }
  return '?';
}

llvm::StringRef nestor::spec::layerKindName(LayerKind kind) {
  switch (kind) {
  case LayerKind::Mamba:
    return "mamba";
  case LayerKind::Attention:
    return "attention";
  case LayerKind::MLP:
    return "mlp";
  }
  return "unknown";
}

std::string nestor::spec::resolveSpecRelativePath(llvm::StringRef specPath, llvm::StringRef path) {
  if (llvm::sys::path::is_absolute(path))
    return path.str();
  llvm::SmallString<256> resolved = llvm::sys::path::parent_path(specPath);
  llvm::sys::path::append(resolved, path);
  return std::string(resolved);
}

double nestor::spec::layerNormEpsilon(const Architecture &arch) {
  return arch.has_layer_norm_epsilon() ? arch.layer_norm_epsilon() : 1e-5;
}

int64_t nestor::spec::routerHiddenSize(const Elastic &elastic) {
  return elastic.router().has_hidden_size() ? elastic.router().hidden_size() : 256;
}

double nestor::spec::routerLeakyReluSlope(const Elastic &elastic) {
  return elastic.router().has_leaky_relu_slope() ? elastic.router().leaky_relu_slope() : 0.1;
}

//===----------------------------------------------------------------------===//
// Parsing
//===----------------------------------------------------------------------===//

namespace {

/// Keeps the first error (later ones are usually consequences of it) at protobuf's position:
/// 0-based, with tabs expanded to multiples of 8 columns.
class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string &message) override {
    if (!hasError) {
      hasError = true;
      this->line = line;
      this->column = column;
      this->message = message;
    }
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string &) override {}

  bool hasError = false;
  int line = 0, column = 0;
  std::string message;
};

class IgnoreErrors : public google::protobuf::io::ErrorCollector {
  void AddError(int, google::protobuf::io::ColumnNumber, const std::string &) override {}
};

using Token = google::protobuf::io::Tokenizer::Token;

/// The tokens of `text` as TextFormat's parser sees them (same tokenizer, same settings), so an
/// error position can be moved onto the token the error is about.
std::vector<Token> tokenize(llvm::StringRef text) {
  google::protobuf::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  IgnoreErrors ignore;
  google::protobuf::io::Tokenizer tokenizer(&input, &ignore);
  tokenizer.set_comment_style(google::protobuf::io::Tokenizer::SH_COMMENT_STYLE);
  tokenizer.set_allow_f_after_float(true);
  tokenizer.set_require_space_after_number(false);
  std::vector<Token> tokens;
  while (tokenizer.Next())
    tokens.push_back(tokenizer.current());
  return tokens;
}

bool before(const Token &t, int line, int column) {
  return t.line < line || (t.line == line && t.column < column);
}

/// Errors the parser reports only after it consumed the offending token, so protobuf's position
/// is that of the token after it (e.g. the ':' after an unknown field name).
bool reportedAfterTheToken(llvm::StringRef message) {
  return message.contains("has no field named") ||
         message.contains("is specified multiple times") ||
         message.contains("is specified along with") ||
         message.starts_with("Unknown enumeration value") ||
         message.starts_with("Invalid value for boolean field");
}

/// Converts protobuf's tab-expanded 0-based column on `line` to a 1-based byte column, the
/// convention of compilers and editors.
int byteColumn(llvm::StringRef text, int line, int column) {
  llvm::SmallVector<llvm::StringRef> lines;
  text.split(lines, '\n');
  if (line < 0 || line >= static_cast<int>(lines.size()))
    return column + 1;
  llvm::StringRef l = lines[line];
  int visual = 0;
  size_t byte = 0;
  for (; byte < l.size() && visual < column; ++byte)
    visual = l[byte] == '\t' ? visual + 8 - visual % 8 : visual + 1;
  return static_cast<int>(byte + (visual < column ? column - visual : 0)) + 1;
}

/// "FILE:LINE:COL: message", with the position on the offending token and, at the end of the
/// input, the brace that was left open.
std::string describeParseError(llvm::StringRef text, llvm::StringRef fileName,
                               const FirstErrorCollector &error) {
  int line = error.line, column = error.column;
  std::string message = error.message;
  std::vector<Token> tokens = tokenize(text);
  if (reportedAfterTheToken(message)) {
    auto it = llvm::find_if(llvm::reverse(tokens),
                            [&](const Token &t) { return before(t, line, column); });
    if (it != tokens.rend())
      line = it->line, column = it->column;
  }
  // At the end of the input protobuf names an empty token; say what is missing instead.
  bool atEnd = tokens.empty() || before(tokens.back(), line, column);
  llvm::StringRef m(message);
  if (atEnd && (m.ends_with("got: ") || m.ends_with("found \"\"."))) {
    message =
        m.ends_with("got: ") ? (m + "end of file").str() : (m.drop_back(3) + "end of file.").str();
    std::vector<const Token *> open;
    for (const Token &t : tokens) {
      if (t.text == "{" || t.text == "<" || t.text == "[")
        open.push_back(&t);
      else if (!open.empty() && (t.text == "}" || t.text == ">" || t.text == "]"))
        open.pop_back();
    }
    if (!open.empty())
      message += llvm::formatv(" (the '{0}' at {1}:{2} is never closed)", open.back()->text,
                               open.back()->line + 1,
                               byteColumn(text, open.back()->line, open.back()->column))
                     .str();
  }
  return llvm::formatv("{0}:{1}:{2}: {3}", fileName, line + 1, byteColumn(text, line, column),
                       message)
      .str();
}

/// Binary data: NUL bytes, invalid UTF-8, or control characters a text file does not contain
/// (protobuf's wire format is full of them).
bool looksBinary(llvm::StringRef text) {
  const auto *begin = reinterpret_cast<const llvm::UTF8 *>(text.data());
  if (!llvm::isLegalUTF8String(&begin, begin + text.size()))
    return true;
  return llvm::any_of(text, [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && !llvm::is_contained(llvm::StringRef("\t\n\v\f\r"), c)) || u == 0x7f;
  });
}

} // namespace

llvm::Expected<ModelSpec> nestor::spec::parseSpecText(llvm::StringRef text,
                                                      llvm::StringRef fileName) {
  // Editors on Windows write a UTF-8 byte-order mark; it is not part of the text.
  text.consume_front("\xEF\xBB\xBF");
  if (text.trim().empty())
    return llvm::createStringError((fileName + ": the spec file is empty").str());
  if (looksBinary(text))
    return llvm::createStringError(
        (fileName + ": not a text spec (binary data); expected protobuf text format").str());
  ModelSpec spec;
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &spec)) {
    if (!errors.hasError)
      return llvm::createStringError((fileName + ": cannot parse the spec").str());
    return llvm::createStringError(describeParseError(text, fileName, errors));
  }
  return spec;
}

llvm::Expected<ModelSpec> nestor::spec::loadSpecFile(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return llvm::createStringError(
        (path + ": cannot read the spec: " + buffer.getError().message()).str());
  auto spec = parseSpecText((*buffer)->getBuffer(), path);
  if (!spec)
    return spec.takeError();
  if (llvm::Error err = validateSpec(*spec, path))
    return err;
  return spec;
}

//===----------------------------------------------------------------------===//
// Validation
//===----------------------------------------------------------------------===//

namespace {

/// Collects the first semantic error as "FILE: FIELD: message".
class Validator {
public:
  Validator(const ModelSpec &spec, llvm::StringRef fileName) : spec(spec), fileName(fileName) {}

  llvm::Error run() {
    if (!checkScalars(spec, "") || !checkArchitecture() || !checkElastic() || !checkTraining() ||
        !checkData())
      return llvm::createStringError(error);
    return llvm::Error::success();
  }

private:
  bool fail(const llvm::Twine &field, const llvm::Twine &message) {
    error = (fileName + ": " + field + ": " + message).str();
    return false;
  }
  bool positive(const llvm::Twine &field, int64_t value) {
    return value > 0 || fail(field, "must be positive, got " + llvm::Twine(value));
  }

  bool checkScalars(const google::protobuf::Message &message, const std::string &path);
  bool checkArchitecture();
  bool checkLayerOverrides();
  bool checkAxis(llvm::StringRef name, const AxisChoices &axis, int64_t parent, int64_t groups,
                 llvm::StringRef groupField, std::optional<LayerKind> kind);
  bool checkElastic();
  bool checkOptimizer(const llvm::Twine &field, const Optimizer &opt);
  bool checkTraining();
  bool checkData();

  const ModelSpec &spec;
  llvm::StringRef fileName;
  std::vector<LayerKind> layers;
  std::string error;
};

/// The largest size any field may have.
constexpr int64_t kMaxSize = int64_t(1) << 24;

/// Rules that hold for every field of a type, found by reflection so that no field added to the
/// schema later escapes them: doubles are finite (text format accepts "nan" and "inf"), and enum
/// fields hold a declared value (proto3 enums accept any integer).
bool Validator::checkScalars(const google::protobuf::Message &message, const std::string &path) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection *reflection = message.GetReflection();
  std::vector<const FieldDescriptor *> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor *f : fields) {
    std::string name = path.empty() ? f->name() : path + "." + f->name();
    int count = f->is_repeated() ? reflection->FieldSize(message, f) : 1;
    for (int i = 0; i < count; ++i) {
      std::string at = f->is_repeated() ? llvm::formatv("{0}[{1}]", name, i).str() : name;
      switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_MESSAGE:
        if (!checkScalars(f->is_repeated() ? reflection->GetRepeatedMessage(message, f, i)
                                           : reflection->GetMessage(message, f),
                          at))
          return false;
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE: {
        double v = f->is_repeated() ? reflection->GetRepeatedDouble(message, f, i)
                                    : reflection->GetDouble(message, f);
        if (!std::isfinite(v))
          return fail(at, llvm::formatv("must be a finite number, got {0}", v).str());
        break;
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        int v = f->is_repeated() ? reflection->GetRepeatedEnumValue(message, f, i)
                                 : reflection->GetEnumValue(message, f);
        if (!f->enum_type()->FindValueByNumber(v)) {
          std::string known;
          for (int j = 1; j < f->enum_type()->value_count(); ++j)
            known += (j > 1 ? ", " : "") + f->enum_type()->value(j)->name();
          return fail(at, llvm::formatv("{0} is not a {1} (expected one of {2})", v,
                                        f->enum_type()->name(), known)
                              .str());
        }
        break;
      }
      default:
        break;
      }
    }
  }
  return true;
}

bool Validator::checkArchitecture() {
  if (!spec.has_architecture())
    return fail("architecture", "is missing; every spec describes its parent model");
  const Architecture &a = spec.architecture();
  auto parsed = parsePattern(a.hybrid_override_pattern());
  if (!parsed)
    return fail("architecture.hybrid_override_pattern", llvm::toString(parsed.takeError()));
  layers = std::move(*parsed);
  bool hasMamba = llvm::is_contained(layers, LayerKind::Mamba);
  bool hasAttention = llvm::is_contained(layers, LayerKind::Attention);
  bool hasMLP = llvm::is_contained(layers, LayerKind::MLP);

  if (!positive("architecture.hidden_size", a.hidden_size()) ||
      !positive("architecture.vocab_size", a.vocab_size()))
    return false;
  // Sizes of a layer type the pattern uses must be positive; the others may be left out (0)
  // but never negative.
  struct Field {
    const char *name;
    int64_t value;
    bool used;
  } fields[] = {
      {"hidden_size", a.hidden_size(), true},
      {"vocab_size", a.vocab_size(), true},
      {"intermediate_size", a.intermediate_size(), hasMLP},
      {"mamba_num_heads", a.mamba_num_heads(), hasMamba},
      {"mamba_head_dim", a.mamba_head_dim(), hasMamba},
      {"n_groups", a.n_groups(), hasMamba},
      {"ssm_state_size", a.ssm_state_size(), hasMamba},
      {"conv_kernel", a.conv_kernel(), hasMamba},
      {"num_attention_heads", a.num_attention_heads(), hasAttention},
      {"num_key_value_heads", a.num_key_value_heads(), hasAttention},
      {"head_dim", a.head_dim(), hasAttention},
  };
  for (const Field &f : fields) {
    std::string field = std::string("architecture.") + f.name;
    if (f.value < 0 || (f.used && f.value == 0))
      return fail(field, "must be positive" +
                             llvm::Twine(f.used ? " (the pattern has layers that use it)" : "") +
                             ", got " + llvm::Twine(f.value));
    // Products of sizes index tensors in 64-bit arithmetic; no real model comes near this.
    if (f.value > kMaxSize)
      return fail(
          field,
          llvm::formatv("{0} is larger than the supported maximum {1}", f.value, kMaxSize).str());
  }
  if (hasMamba && a.mamba_num_heads() % a.n_groups() != 0)
    return fail("architecture.mamba_num_heads",
                llvm::formatv("{0} heads are not divisible by n_groups ({1})", a.mamba_num_heads(),
                              a.n_groups())
                    .str());
  if (hasAttention && a.num_attention_heads() % a.num_key_value_heads() != 0)
    return fail("architecture.num_attention_heads",
                llvm::formatv("{0} query heads are not divisible by num_key_value_heads ({1}) "
                              "(grouped-query attention)",
                              a.num_attention_heads(), a.num_key_value_heads())
                    .str());
  if (a.has_layer_norm_epsilon() && !(a.layer_norm_epsilon() > 0.0))
    return fail("architecture.layer_norm_epsilon",
                "must be positive, got " + llvm::formatv("{0}", a.layer_norm_epsilon()).str());
  return checkLayerOverrides();
}

bool Validator::checkLayerOverrides() {
  const Architecture &a = spec.architecture();
  if (a.layer_overrides_size() == 0)
    return true;
  if (spec.has_elastic())
    return fail("architecture.layer_overrides",
                "is for dense models (a sliced heterogeneous budget); an elastic parent has one "
                "size per layer kind");
  if (a.layer_overrides_size() != static_cast<int>(layers.size()))
    return fail("architecture.layer_overrides",
                llvm::formatv("has {0} entries for a pattern of {1} layers; it needs one per layer",
                              a.layer_overrides_size(), layers.size())
                    .str());
  for (int i = 0; i < a.layer_overrides_size(); ++i) {
    const LayerOverride &o = a.layer_overrides(i);
    std::string at = llvm::formatv("architecture.layer_overrides[{0}].", i).str();
    for (auto [name, value] : {std::pair{"intermediate_size", o.intermediate_size()},
                               {"num_attention_heads", o.num_attention_heads()},
                               {"mamba_num_heads", o.mamba_num_heads()},
                               {"mamba_head_dim", o.mamba_head_dim()}}) {
      if (value < 0)
        return fail(at + name, "must not be negative (0 keeps the architecture's size), got " +
                                   llvm::Twine(value));
      if (value > kMaxSize)
        return fail(
            at + name,
            llvm::formatv("{0} is larger than the supported maximum {1}", value, kMaxSize).str());
    }
    if (layers[i] == LayerKind::Mamba && o.mamba_num_heads() % a.n_groups() != 0)
      return fail(at + "mamba_num_heads",
                  llvm::formatv("{0} heads are not divisible by n_groups ({1})",
                                o.mamba_num_heads(), a.n_groups())
                      .str());
    if (layers[i] == LayerKind::Attention && o.num_attention_heads() % a.num_key_value_heads() != 0)
      return fail(at + "num_attention_heads",
                  llvm::formatv("{0} query heads are not divisible by num_key_value_heads ({1})",
                                o.num_attention_heads(), a.num_key_value_heads())
                      .str());
  }
  return true;
}

bool Validator::checkAxis(llvm::StringRef name, const AxisChoices &axis, int64_t parent,
                          int64_t groups, llvm::StringRef groupField,
                          std::optional<LayerKind> kind) {
  std::string field = ("elastic." + name).str();
  if (axis.choices_size() == 0) {
    if (axis.heterogeneous())
      return fail(field, "is heterogeneous but lists no choices");
    return true;
  }
  if (kind && !llvm::is_contained(layers, *kind))
    return fail(field, "has choices but the pattern has no " + layerKindName(*kind) + " layers");
  if (axis.heterogeneous() && !kind)
    return fail(field + ".heterogeneous",
                "the embedding width is one global choice; it cannot be heterogeneous");
  for (int i = 0; i < axis.choices_size(); ++i) {
    std::string at = llvm::formatv("{0}.choices[{1}]", field, i).str();
    int64_t k = axis.choices(i);
    if (k <= 0)
      return fail(at, "must be positive, got " + llvm::Twine(k));
    if (k > parent)
      return fail(at, llvm::formatv("{0} is larger than the parent's {1}", k, parent).str());
    if (i == 0 && k != parent)
      return fail(
          at,
          llvm::formatv("the first choice must be the parent size {0}, got {1}", parent, k).str());
    if (i > 0 && k >= axis.choices(i - 1))
      return fail(at, llvm::formatv("choices must be strictly descending (largest first), but "
                                    "{0} follows {1}",
                                    k, axis.choices(i - 1))
                          .str());
    if (groups > 1 && k % groups != 0)
      return fail(at, llvm::formatv("{0} is not a multiple of {1} ({2}); heads are trimmed "
                                    "equally within each group",
                                    k, groupField, groups)
                          .str());
  }
  return true;
}

bool Validator::checkElastic() {
  if (!spec.has_elastic())
    return true;
  const Elastic &e = spec.elastic();
  const Architecture &a = spec.architecture();
  if (e.budgets_size() == 0)
    return fail("elastic.budgets", "an elastic spec needs at least one budget (the full 1.0)");
  std::set<std::string> names;
  for (int i = 0; i < e.budgets_size(); ++i) {
    const Budget &b = e.budgets(i);
    std::string at = llvm::formatv("elastic.budgets[{0}]", i).str();
    if (b.name().empty())
      return fail(at + ".name", "must not be empty");
    if (!names.insert(b.name()).second)
      return fail(at + ".name", "'" + b.name() + "' is used by two budgets");
    if (!(b.fraction() > 0.0 && b.fraction() <= 1.0))
      return fail(at + ".fraction",
                  "must be in (0, 1], got " + llvm::formatv("{0}", b.fraction()).str());
    if (i == 0 && b.fraction() != 1.0)
      return fail(at + ".fraction", "the first budget is the full model and must be 1.0, got " +
                                        llvm::formatv("{0}", b.fraction()).str());
    if (i > 0 && b.fraction() >= e.budgets(i - 1).fraction())
      return fail(at + ".fraction", "budgets must be strictly descending (largest first)");
  }
  if (!checkAxis("hidden_size", e.hidden_size(), a.hidden_size(), 1, "", std::nullopt) ||
      !checkAxis("intermediate_size", e.intermediate_size(), a.intermediate_size(), 1, "",
                 LayerKind::MLP) ||
      !checkAxis("num_attention_heads", e.num_attention_heads(), a.num_attention_heads(),
                 a.num_key_value_heads(), "num_key_value_heads", LayerKind::Attention) ||
      !checkAxis("mamba_num_heads", e.mamba_num_heads(), a.mamba_num_heads(), a.n_groups(),
                 "n_groups", LayerKind::Mamba) ||
      !checkAxis("mamba_head_dim", e.mamba_head_dim(), a.mamba_head_dim(), 1, "", LayerKind::Mamba))
    return false;
  int64_t numLayers = static_cast<int64_t>(layers.size());
  if (e.max_dropped_layers() < 0 || e.max_dropped_layers() >= numLayers)
    return fail("elastic.max_dropped_layers",
                llvm::formatv("must be in [0, {0}) (the model has {0} layers), got {1}", numLayers,
                              e.max_dropped_layers())
                    .str());
  const Router &r = e.router();
  if (r.has_hidden_size() && (r.hidden_size() <= 0 || r.hidden_size() > kMaxSize))
    return fail("elastic.router.hidden_size",
                llvm::formatv("must be in [1, {0}], got {1}", kMaxSize, r.hidden_size()).str());
  if (r.has_leaky_relu_slope() && r.leaky_relu_slope() < 0.0)
    return fail("elastic.router.leaky_relu_slope", "must not be negative");
  if (r.has_init_std() && !(r.init_std() > 0.0))
    return fail("elastic.router.init_std", "must be positive");
  double tau0 = r.has_tau_initial() ? r.tau_initial() : 1.0;
  double tau1 = r.has_tau_final() ? r.tau_final() : 0.05;
  if (!(tau0 > 0.0))
    return fail("elastic.router.tau_initial", "must be positive");
  if (!(tau1 > 0.0 && tau1 <= tau0))
    return fail("elastic.router.tau_final", "must be in (0, tau_initial]");
  double s0 = r.has_logit_scale_initial() ? r.logit_scale_initial() : 1.0;
  double s1 = r.has_logit_scale_final() ? r.logit_scale_final() : 10.0;
  if (!(s0 > 0.0))
    return fail("elastic.router.logit_scale_initial", "must be positive");
  if (!(s1 > 0.0))
    return fail("elastic.router.logit_scale_final", "must be positive");
  if (r.has_hard_sample_fraction() &&
      !(r.hard_sample_fraction() >= 0.0 && r.hard_sample_fraction() <= 1.0))
    return fail("elastic.router.hard_sample_fraction", "must be in [0, 1]");
  if (r.has_lr_multiplier() && !(r.lr_multiplier() > 0.0))
    return fail("elastic.router.lr_multiplier", "must be positive");
  return true;
}

bool Validator::checkOptimizer(const llvm::Twine &field, const Optimizer &o) {
  std::string f = field.str();
  if (o.has_learning_rate() && !(o.learning_rate() > 0.0))
    return fail(f + ".learning_rate", "must be positive");
  if (o.has_min_learning_rate() && o.min_learning_rate() < 0.0)
    return fail(f + ".min_learning_rate", "must not be negative");
  if (o.has_beta1() && !(o.beta1() >= 0.0 && o.beta1() < 1.0))
    return fail(f + ".beta1", "must be in [0, 1)");
  if (o.has_beta2() && !(o.beta2() >= 0.0 && o.beta2() < 1.0))
    return fail(f + ".beta2", "must be in [0, 1)");
  if (o.has_epsilon() && !(o.epsilon() > 0.0))
    return fail(f + ".epsilon", "must be positive");
  if (o.has_weight_decay() && o.weight_decay() < 0.0)
    return fail(f + ".weight_decay", "must not be negative");
  if (o.has_warmup_steps() && o.warmup_steps() < 0)
    return fail(f + ".warmup_steps", "must not be negative");
  if (o.has_grad_clip_norm() && o.grad_clip_norm() < 0.0)
    return fail(f + ".grad_clip_norm", "must not be negative (0 disables clipping)");
  return true;
}

bool Validator::checkTraining() {
  const Training &t = spec.training();
  if (!checkOptimizer("training.optimizer", t.optimizer()) ||
      !checkOptimizer("training.parent.optimizer", t.parent().optimizer()))
    return false;
  const ParentTraining &p = t.parent();
  if (p.steps() < 0)
    return fail("training.parent.steps", "must not be negative");
  if (p.steps() > 0 && (!positive("training.parent.sequence_length", p.sequence_length()) ||
                        !positive("training.parent.batch_size", p.batch_size())))
    return false;
  int budgets = spec.elastic().budgets_size();
  for (int i = 0; i < t.stages_size(); ++i) {
    const Stage &s = t.stages(i);
    std::string at = llvm::formatv("training.stages[{0}]", i).str();
    if (!positive(at + ".steps", s.steps()) ||
        !positive(at + ".sequence_length", s.sequence_length()) ||
        !positive(at + ".batch_size", s.batch_size()))
      return false;
    if (s.budget_weights_size() == 0)
      continue;
    if (budgets == 0)
      return fail(at + ".budget_weights",
                  "a dense spec (no elastic section) has no budgets to weight");
    if (s.budget_weights_size() != budgets)
      return fail(at + ".budget_weights",
                  llvm::formatv("has {0} weights for {1} budgets (one per budget, or none for "
                                "uniform sampling)",
                                s.budget_weights_size(), budgets)
                      .str());
    double sum = 0.0;
    for (int j = 0; j < s.budget_weights_size(); ++j) {
      if (s.budget_weights(j) < 0.0)
        return fail(llvm::formatv("{0}.budget_weights[{1}]", at, j).str(), "must not be negative");
      sum += s.budget_weights(j);
    }
    if (!(sum > 0.0))
      return fail(at + ".budget_weights", "must not all be zero");
  }
  const Distillation &d = t.distillation();
  if (d.has_temperature() && !(d.temperature() > 0.0))
    return fail("training.distillation.temperature", "must be positive");
  if (d.has_ce_weight() && d.ce_weight() < 0.0)
    return fail("training.distillation.ce_weight", "must not be negative");
  const ResourceLoss &r = t.resource_loss();
  if (r.has_weight() && r.weight() < 0.0)
    return fail("training.resource_loss.weight", "must not be negative");
  if (r.has_dead_zone() && r.dead_zone() < 0.0)
    return fail("training.resource_loss.dead_zone", "must not be negative");
  if (r.has_full_anchor_weight() && r.full_anchor_weight() < 0.0)
    return fail("training.resource_loss.full_anchor_weight", "must not be negative");
  const Importance &imp = t.importance();
  if (imp.has_calibration_batches() && imp.calibration_batches() <= 0)
    return fail("training.importance.calibration_batches", "must be positive");
  if (imp.has_batch_size() && imp.batch_size() <= 0)
    return fail("training.importance.batch_size", "must be positive");
  if (imp.has_sequence_length() && imp.sequence_length() <= 0)
    return fail("training.importance.sequence_length", "must be positive");
  for (auto [name, value, present] :
       {std::tuple{"checkpoint_every", t.checkpoint_every(), t.has_checkpoint_every()},
        std::tuple{"eval_every", t.eval_every(), t.has_eval_every()},
        std::tuple{"eval_batches", t.eval_batches(), t.has_eval_batches()},
        std::tuple{"eval_problems", t.eval_problems(), t.has_eval_problems()}})
    if (present && value <= 0)
      return fail(llvm::Twine("training.") + name, "must be positive");
  return true;
}

bool Validator::checkData() {
  const Data &d = spec.data();
  if (d.has_validation_fraction() &&
      !(d.validation_fraction() > 0.0 && d.validation_fraction() < 1.0))
    return fail("data.validation_fraction", "must be in (0, 1)");
  if (d.tokenizer() == BYTE || d.tokenizer() == TOKENIZER_UNSPECIFIED) {
    if (spec.architecture().vocab_size() < 256)
      return fail("architecture.vocab_size",
                  llvm::formatv("the byte tokenizer needs at least 256 tokens, got {0}",
                                spec.architecture().vocab_size())
                      .str());
  }
  for (int i = 0; i < d.text_files_size(); ++i) {
    std::string at = llvm::formatv("data.text_files[{0}]", i).str();
    if (d.text_files(i).empty())
      return fail(at, "is empty");
    std::string path = resolveSpecRelativePath(fileName, d.text_files(i));
    llvm::sys::fs::file_status status;
    if (llvm::sys::fs::status(path, status) || !llvm::sys::fs::exists(status))
      return fail(at, "'" + path + "' does not exist" +
                          (path != d.text_files(i) ? " (relative to the spec's directory)" : ""));
    if (!llvm::sys::fs::is_regular_file(status))
      return fail(at, "'" + path + "' is not a regular file");
  }
  const ReasoningData &r = d.reasoning();
  for (auto [name, value, present] :
       {std::tuple{"max_digits_short", r.max_digits_short(), r.has_max_digits_short()},
        std::tuple{"max_digits_long", r.max_digits_long(), r.has_max_digits_long()},
        std::tuple{"max_steps_short", r.max_steps_short(), r.has_max_steps_short()},
        std::tuple{"max_steps_long", r.max_steps_long(), r.has_max_steps_long()}})
    if (present && value <= 0)
      return fail(llvm::Twine("data.reasoning.") + name, "must be positive");
  return true;
}

} // namespace

llvm::Error nestor::spec::validateSpec(const ModelSpec &spec, llvm::StringRef fileName) {
  return Validator(spec, fileName).run();
}
