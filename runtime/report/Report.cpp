//===- Report.cpp - The HTML report of a training run ---------------------===//
//
// Parses metrics.jsonl and summary.json (schema in nestor/Report.h) and draws the page by hand
// as HTML with inline SVG: the page must open anywhere a run folder is copied to (a laptop, a
// cluster's file browser, an e-mail attachment), so it carries no scripts, fonts or links.
// Hover details use SVG <title> elements, which every browser shows as a tooltip.
//
// The elastic-phase plots (loss, tau, logit scale, router choices) share one step axis and one
// set of margins, so the same step lines up across the stacked full-width plots. Per-step loss
// is noisy (each elastic step trains one sampled budget), so every loss series is drawn twice:
// the raw points faint, a debiased exponential moving average on top.
//
//===----------------------------------------------------------------------===//
#include "nestor/Report.h"

#include "nestor/Checkpoint.h"

#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

using namespace nestor;
using nestor::report::groupThousands;

namespace {

// Ordered, so that axes and budgets keep the order the trainer wrote them in.
using Json = nlohmann::ordered_json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

//===----------------------------------------------------------------------===//
// The inputs
//===----------------------------------------------------------------------===//

/// budget name -> axis name -> choice index per layer of the axis' kind (one for global axes).
using Choices = std::map<std::string, std::vector<std::pair<std::string, std::vector<int64_t>>>>;

struct StepRecord {
  std::string phase, budget;
  int64_t stage = -1, step = 0, budgetIndex = -1;
  double loss = kNaN, tau = kNaN, logitScale = kNaN, seconds = kNaN, tokensPerS = kNaN;
  Choices choices;
  bool isParent() const { return phase == "parent"; }
};

struct EvalRecord {
  std::string phase, budget;
  int64_t step = 0;
  double validationLoss = kNaN;
  std::optional<double> accuracy;
  bool isParent() const { return phase == "parent"; }
};

struct Metrics {
  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evals;
  std::vector<std::string> messages;
  /// The number of a last line that is still being written (no newline yet, not valid JSON).
  int64_t incompleteLine = 0;
};

struct LayerArch {
  char kind = '?';
  bool kept = true;
  double mambaHeads = kNaN, mambaHeadDim = kNaN, attentionHeads = kNaN, intermediate = kNaN;
};

struct Row {
  std::string name;
  double fraction = kNaN, params = kNaN;
  std::optional<double> validationLoss, accuracy, baselineLoss, baselineAccuracy;
  std::optional<double> tokenAccuracy, baselineTokenAccuracy;
  double hidden = kNaN;
  std::vector<LayerArch> layers;
};

struct Summary {
  std::string name, pattern;
  double tokens = kNaN;
  std::vector<std::pair<std::string, std::vector<double>>> axes;
  std::vector<Row> rows;
  double parentHidden = kNaN, parentIntermediate = kNaN, parentAttentionHeads = kNaN,
         parentMambaHeads = kNaN, parentMambaHeadDim = kNaN;
  const std::vector<double> *axis(llvm::StringRef name) const {
    for (const auto &[axisName, sizes] : axes)
      if (axisName == name)
        return &sizes;
    return nullptr;
  }
};

/// Reads typed fields of one JSON object. The first failure is kept (later reads return
/// defaults), so a record is read in straight-line code and checked once at the end.
class FieldReader {
public:
  FieldReader(const Json &object, std::string where, std::optional<std::string> &error)
      : object(object), where(std::move(where)), error(error) {}

  const Json *find(const char *key, bool required) {
    auto it = object.find(key);
    if (it != object.end())
      return &*it;
    if (required)
      fail(fmt::format("lacks field '{}'", key));
    return nullptr;
  }
  /// A number; null (how the trainer's JSON writer spells NaN and infinities) reads as NaN.
  double number(const char *key, bool required = true) {
    const Json *v = find(key, required);
    if (!v || v->is_null())
      return kNaN;
    if (!v->is_number()) {
      fail(fmt::format("field '{}' is not a number", key));
      return kNaN;
    }
    return v->get<double>();
  }
  std::optional<double> nullableNumber(const char *key) {
    double v = number(key, /*required=*/false);
    return std::isnan(v) ? std::nullopt : std::optional<double>(v);
  }
  int64_t integer(const char *key, bool required = true, int64_t otherwise = 0) {
    const Json *v = find(key, required);
    if (!v)
      return otherwise;
    if (v->is_number_integer())
      return v->get<int64_t>();
    if (v->is_number_float() && std::trunc(v->get<double>()) == v->get<double>() &&
        std::abs(v->get<double>()) < 9e15)
      return static_cast<int64_t>(v->get<double>());
    fail(fmt::format("field '{}' is not an integer", key));
    return otherwise;
  }
  std::string string(const char *key, bool required = true) {
    const Json *v = find(key, required);
    if (!v)
      return {};
    if (!v->is_string()) {
      fail(fmt::format("field '{}' is not a string", key));
      return {};
    }
    return v->get<std::string>();
  }
  bool boolean(const char *key) {
    const Json *v = find(key, true);
    if (v && !v->is_boolean())
      fail(fmt::format("field '{}' is not a boolean", key));
    return v && v->is_boolean() && v->get<bool>();
  }
  const Json *arrayField(const char *key, bool required = true) {
    return typed(key, required, false);
  }
  const Json *objectField(const char *key, bool required = true) {
    return typed(key, required, true);
  }
  void fail(const std::string &message) {
    if (!error)
      error = where.empty() ? message : where + ": " + message;
  }
  bool failed() const { return error.has_value(); }

private:
  const Json *typed(const char *key, bool required, bool wantObject) {
    const Json *v = find(key, required);
    if (v && (wantObject ? !v->is_object() : !v->is_array())) {
      fail(fmt::format("field '{}' is not {}", key, wantObject ? "an object" : "an array"));
      return nullptr;
    }
    return v;
  }
  const Json &object;
  std::string where;
  std::optional<std::string> &error;
};

/// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string jsonMessage(const std::string &what) {
  llvm::StringRef m = what;
  size_t close = m.find("] ");
  if (m.starts_with("[") && close != llvm::StringRef::npos)
    m = m.drop_front(close + 2);
  return m.str();
}

/// Each record is a line of its own, so "at line 1, column 7" says only the column; the line
/// number the error starts with is the useful one.
std::string lineMessage(const std::string &what) {
  std::string out = jsonMessage(what);
  size_t at = out.find(" at line 1, ");
  if (at != std::string::npos)
    out.replace(at, 12, " at ");
  return out;
}

/// `json` as integers (`integral`) or numbers; nullopt when it is not an array of them.
std::optional<std::vector<double>> numberArray(const Json &json, bool integral) {
  if (!json.is_array())
    return std::nullopt;
  std::vector<double> values;
  for (const Json &v : json) {
    if (integral ? !v.is_number_integer() : !v.is_number())
      return std::nullopt;
    values.push_back(v.get<double>());
  }
  return values;
}

void readChoices(FieldReader &fields, const Json &choices, Choices &out) {
  for (const auto &[budget, axes] : choices.items()) {
    if (!axes.is_object()) {
      fields.fail(fmt::format("choices of budget '{}' are not an object", budget));
      return;
    }
    auto &budgetChoices = out[budget];
    for (const auto &[axis, indices] : axes.items()) {
      std::optional<std::vector<double>> values = numberArray(indices, /*integral=*/true);
      if (!values) {
        fields.fail(fmt::format("choices of budget '{}', axis '{}' are not an array of integers",
                                budget, axis));
        return;
      }
      budgetChoices.emplace_back(axis, std::vector<int64_t>(values->begin(), values->end()));
    }
  }
}

llvm::Expected<Metrics> parseMetrics(llvm::StringRef text, llvm::StringRef name) {
  Metrics metrics;
  int64_t lineNumber = 0;
  auto lineError = [&](const std::string &message) {
    return llvm::createStringError(
        fmt::format("{}:{}: {}", std::string_view(name), lineNumber, message));
  };
  while (!text.empty()) {
    auto [rawLine, rest] = text.split('\n');
    bool terminated = text.size() > rawLine.size();
    text = rest;
    ++lineNumber;
    llvm::StringRef line = rawLine.trim();
    if (line.empty())
      continue;
    Json record;
    try {
      record = Json::parse(line.begin(), line.end());
    } catch (const Json::exception &e) {
      // The trainer appends and flushes one line per step; a report drawn while it writes may
      // see half a line. Only that case (no newline yet) is forgiven.
      if (!terminated) {
        metrics.incompleteLine = lineNumber;
        break;
      }
      return lineError("invalid JSON: " + lineMessage(e.what()));
    }
    if (!record.is_object())
      return lineError("expected a JSON object");
    std::optional<std::string> error;
    FieldReader fields(record, "", error);
    std::string kind = fields.string("kind");
    if (error)
      return lineError(*error);
    if (kind == "step") {
      FieldReader step(record, "step record", error);
      StepRecord r;
      r.phase = step.string("phase");
      r.step = step.integer("step");
      r.budget = step.string("budget");
      r.loss = step.number("loss");
      r.stage = step.integer("stage", false, r.phase == "parent" ? -1 : 0);
      r.budgetIndex = step.integer("budget_index", false, -1);
      r.tau = step.number("tau", false);
      r.logitScale = step.number("logit_scale", false);
      r.seconds = step.number("seconds", false);
      r.tokensPerS = step.number("tokens_per_s", false);
      if (const Json *choices = step.objectField("choices", false))
        readChoices(step, *choices, r.choices);
      if (error)
        return lineError(*error);
      metrics.steps.push_back(std::move(r));
    } else if (kind == "eval") {
      FieldReader eval(record, "eval record", error);
      EvalRecord r;
      r.phase = eval.string("phase");
      r.step = eval.integer("step");
      r.budget = eval.string("budget");
      r.validationLoss = eval.number("validation_loss");
      r.accuracy = eval.nullableNumber("accuracy");
      if (error)
        return lineError(*error);
      metrics.evals.push_back(std::move(r));
    } else if (kind == "message") {
      FieldReader message(record, "message record", error);
      std::string textField = message.string("text");
      if (error)
        return lineError(*error);
      metrics.messages.push_back(std::move(textField));
    }
    // Other kinds belong to later versions of the trainer.
  }
  return metrics;
}

llvm::Expected<Summary> parseSummary(llvm::StringRef text, llvm::StringRef name) {
  auto summaryError = [&](const std::string &message) {
    return llvm::createStringError(fmt::format("{}: {}", std::string_view(name), message));
  };
  Json root;
  try {
    root = Json::parse(text.begin(), text.end());
  } catch (const Json::exception &e) {
    return summaryError("invalid JSON: " + jsonMessage(e.what()));
  }
  if (!root.is_object())
    return summaryError("expected a JSON object");
  std::optional<std::string> error;
  FieldReader top(root, "", error);
  Summary s;
  s.name = top.string("name");
  s.pattern = top.string("pattern");
  s.tokens = top.number("tokens");
  if (const Json *axes = top.objectField("axes")) {
    for (const auto &[axis, sizes] : axes->items()) {
      std::optional<std::vector<double>> values = numberArray(sizes, /*integral=*/false);
      if (!values)
        top.fail(fmt::format("axes: '{}' is not an array of numbers", axis));
      s.axes.emplace_back(axis, values.value_or(std::vector<double>{}));
    }
  }
  std::set<char> kinds;
  if (const Json *rows = top.arrayField("rows")) {
    for (size_t i = 0; i < rows->size() && !error; ++i) {
      const Json &rowJson = (*rows)[i];
      std::string where = fmt::format("rows[{}]", i);
      if (!rowJson.is_object()) {
        top.fail(where + " is not an object");
        break;
      }
      FieldReader row(rowJson, where, error);
      Row r;
      r.name = row.string("name");
      r.fraction = row.number("fraction");
      r.params = row.number("params");
      row.find("validation_loss", /*required=*/true); // present, though null when it diverged
      r.validationLoss = row.nullableNumber("validation_loss");
      r.accuracy = row.nullableNumber("accuracy");
      r.baselineLoss = row.nullableNumber("baseline_loss");
      r.baselineAccuracy = row.nullableNumber("baseline_accuracy");
      r.tokenAccuracy = row.nullableNumber("token_accuracy");
      r.baselineTokenAccuracy = row.nullableNumber("baseline_token_accuracy");
      const Json *arch = row.objectField("architecture");
      if (!arch)
        break;
      FieldReader archFields(*arch, where + ".architecture", error);
      r.hidden = archFields.number("hidden_size");
      const Json *layers = archFields.arrayField("layers");
      for (size_t j = 0; layers && j < layers->size() && !error; ++j) {
        std::string layerWhere = fmt::format("{}.architecture.layers[{}]", where, j);
        if (!(*layers)[j].is_object()) {
          top.fail(layerWhere + " is not an object");
          break;
        }
        FieldReader layer((*layers)[j], layerWhere, error);
        LayerArch l;
        std::string kind = layer.string("kind");
        if (!error && kind.size() != 1)
          layer.fail(fmt::format("kind '{}' is not one of M, *, -", kind));
        l.kind = kind.empty() ? '?' : kind[0];
        l.kept = layer.boolean("kept");
        // A dropped layer has no sizes to show; only kept layers must carry them.
        if (l.kind == 'M') {
          l.mambaHeads = layer.number("mamba_num_heads", l.kept);
          l.mambaHeadDim = layer.number("mamba_head_dim", l.kept);
        } else if (l.kind == '*') {
          l.attentionHeads = layer.number("num_attention_heads", l.kept);
        } else if (l.kind == '-') {
          l.intermediate = layer.number("intermediate_size", l.kept);
        }
        kinds.insert(l.kind);
        r.layers.push_back(l);
      }
      s.rows.push_back(std::move(r));
    }
  }
  if (const Json *parent = top.objectField("parent_sizes")) {
    FieldReader sizes(*parent, "parent_sizes", error);
    s.parentHidden = sizes.number("hidden_size");
    s.parentIntermediate = sizes.number("intermediate_size", kinds.count('-'));
    s.parentAttentionHeads = sizes.number("num_attention_heads", kinds.count('*'));
    s.parentMambaHeads = sizes.number("mamba_num_heads", kinds.count('M'));
    s.parentMambaHeadDim = sizes.number("mamba_head_dim", kinds.count('M'));
  }
  if (error)
    return summaryError(*error);
  return s;
}

//===----------------------------------------------------------------------===//
// Formatting
//===----------------------------------------------------------------------===//

std::string escape(llvm::StringRef text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    case '\'':
      out += "&#39;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

/// 12310001152 -> "12.31 B".
std::string humanCount(double n) {
  double a = std::abs(n);
  if (!std::isfinite(n))
    return "–";
  if (a >= 1e12)
    return fmt::format("{:.2f} T", n / 1e12);
  if (a >= 1e9)
    return fmt::format("{:.2f} B", n / 1e9);
  if (a >= 1e6)
    return fmt::format("{:.2f} M", n / 1e6);
  if (a >= 1e4)
    return fmt::format("{:.1f} k", n / 1e3);
  return groupThousands(n);
}

std::string duration(double seconds) {
  if (seconds < 90)
    return fmt::format("{:.1f} s", seconds);
  auto s = static_cast<int64_t>(std::llround(seconds));
  if (s < 3600)
    return fmt::format("{}m {:02}s", s / 60, s % 60);
  return fmt::format("{}h {:02}m", s / 3600, (s % 3600) / 60);
}

std::string fixed(std::optional<double> v, int digits) {
  if (!v || !std::isfinite(*v))
    return "–";
  return fmt::format("{:.{}f}", *v, digits);
}

std::string percent(std::optional<double> v, int digits = 1) {
  if (!v || !std::isfinite(*v))
    return "–";
  return fmt::format("{:.{}f}%", 100 * *v, digits);
}

/// A number for a tooltip or a tick: short, no trailing zeros.
std::string shortNumber(double v) {
  if (!std::isfinite(v))
    return "–";
  double a = std::abs(v);
  if (a >= 1e9)
    return fmt::format("{:g}B", v / 1e9);
  if (a >= 1e6)
    return fmt::format("{:g}M", v / 1e6);
  if (a >= 1e4)
    return fmt::format("{:g}k", v / 1e3);
  if (a < 1e-12)
    return "0";
  return fmt::format("{:.4g}", v);
}

/// An SVG coordinate: finite whatever the data, so one bad value cannot break a plot.
std::string coord(double v) {
  if (!std::isfinite(v))
    v = 0;
  return fmt::format("{:.1f}", std::clamp(v, -1e6, 1e6));
}

//===----------------------------------------------------------------------===//
// Colours
//===----------------------------------------------------------------------===//

constexpr const char *kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
constexpr const char *kParentColor = "#3f4752";

struct KindStyle {
  const char *name, *fill, *tint, *css;
};

KindStyle kindStyle(char kind) {
  switch (kind) {
  case 'M':
    return {"Mamba2", "#2f6db5", "#dce8f6", "k-m"};
  case '*':
    return {"attention", "#c4532a", "#f8e1d6", "k-a"};
  case '-':
    return {"MLP", "#3f8f4f", "#dcefdf", "k-f"};
  default:
    return {"unknown", "#7b8794", "#e7eaee", "k-u"};
  }
}

/// One colour per budget for the whole page, in spec order, the parent in dark grey.
class BudgetColors {
public:
  void add(const std::string &name, int64_t index = -1) {
    if (name == "parent" || colors.count(name))
      return;
    size_t slot = index >= 0 ? size_t(index) : next;
    while (index < 0 && used.count(slot))
      ++slot;
    used.insert(slot);
    next = std::max(next, slot + 1);
    colors[name] = kPalette[slot % std::size(kPalette)];
    order.push_back(name);
  }
  std::string operator()(const std::string &name) const {
    auto it = colors.find(name);
    return it != colors.end() ? it->second : kParentColor;
  }
  /// Budgets in the order their colours were given (spec order when the summary is there).
  std::vector<std::string> order;

private:
  std::map<std::string, std::string> colors;
  std::set<size_t> used;
  size_t next = 0;
};

//===----------------------------------------------------------------------===//
// Plots
//===----------------------------------------------------------------------===//

struct Point {
  double x, y;
};

enum class LineStyle {
  Smoothed, // faint raw points and an EMA on top (noisy per-step values)
  Plain,    // one line through the points
  Steps,    // a piecewise-constant line (discrete choices)
};

struct Line {
  std::string label, color, cssClass, title;
  LineStyle style = LineStyle::Plain;
  std::vector<Point> points;
  double offsetPx = 0; // vertical offset, so equal step lines stay visible side by side
};

struct Marker {
  double x, y;
  std::string color, title;
};

struct Band {
  double x0, x1;
  std::string label;
};

struct Plot {
  std::string cssClass, ariaLabel, xLabel, yLabel;
  double width = 1030, height = 300;
  std::optional<std::pair<double, double>> xDomain, yDomain;
  std::vector<double> yTicks;
  std::vector<std::string> yTickLabels; // parallel to yTicks when given
  bool logYWhenWide = false, capOutliers = false, labelBands = true;
  std::vector<Band> bands;
  std::vector<Line> lines;
  std::vector<Marker> markers;
};

struct Scale {
  double lo, hi, from, to;
  bool log = false;
  double operator()(double v) const {
    double t =
        log ? (std::log10(std::max(v, lo)) - std::log10(lo)) / (std::log10(hi) - std::log10(lo))
            : (v - lo) / (hi - lo);
    if (!std::isfinite(t))
      t = v > lo ? 1 : 0;
    return from + std::clamp(t, 0.0, 1.0) * (to - from);
  }
};

std::vector<double> linearTicks(double lo, double hi, int target, bool integer) {
  double span = hi - lo;
  if (!(span > 0) || !std::isfinite(span))
    return {lo};
  double raw = span / target;
  double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double m = raw / magnitude;
  double step = (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * magnitude;
  if (integer)
    step = std::max(step, 1.0);
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9 && ticks.size() < 50;
       t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::vector<double> logTicks(double lo, double hi) {
  static const std::vector<std::vector<double>> mantissas = {
      {1}, {1, 2, 5}, {1, 1.5, 2, 3, 5, 7}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  // A non-finite or non-positive range (a diverged run's losses) has no decades to mark; the
  // int conversions below would be undefined.
  if (!(lo > 0) || !std::isfinite(lo) || !std::isfinite(hi) || !(hi >= lo))
    return {};
  int e0 = int(std::floor(std::log10(lo))), e1 = int(std::ceil(std::log10(hi)));
  int decadeStep = std::max(1, (e1 - e0) / 8);
  std::vector<double> ticks;
  for (const auto &set : mantissas) {
    ticks.clear();
    for (int e = e0; e <= e1; e += decadeStep)
      for (double m : set) {
        double t = m * std::pow(10.0, e);
        if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9))
          ticks.push_back(t);
      }
    if (ticks.size() >= 3)
      return ticks;
  }
  if (ticks.size() >= 2)
    return ticks;
  return linearTicks(lo, hi, 5, false);
}

/// At most about `limit` points, keeping each bucket's lowest and highest value so spikes
/// survive the thinning.
std::vector<Point> thin(const std::vector<Point> &points, size_t limit) {
  if (points.size() <= limit)
    return points;
  size_t bucket = (points.size() + limit / 2 - 1) / (limit / 2);
  std::vector<Point> out;
  for (size_t start = 0; start < points.size(); start += bucket) {
    size_t end = std::min(points.size(), start + bucket), lo = start, hi = start;
    for (size_t i = start; i < end; ++i) {
      if (points[i].y < points[lo].y)
        lo = i;
      if (points[i].y > points[hi].y)
        hi = i;
    }
    out.push_back(points[std::min(lo, hi)]);
    if (lo != hi)
      out.push_back(points[std::max(lo, hi)]);
  }
  return out;
}

/// The EMA weight for a series of `n` points: none for a handful, heavier for long runs, so
/// the smoothing window stays a small part of the run.
double emaWeight(size_t n) {
  return std::clamp(1.0 - 80.0 / double(std::max<size_t>(n, 1)), 0.0, 0.95);
}

/// Debiased EMA (as TensorBoard draws it), so the curve does not start at zero.
std::vector<Point> ema(const std::vector<Point> &points, double weight) {
  std::vector<Point> out;
  double acc = 0, norm = 0;
  for (const Point &p : points) {
    acc = weight * acc + (1 - weight) * p.y;
    norm = weight * norm + (1 - weight);
    out.push_back({p.x, acc / norm});
  }
  return out;
}

std::string polyline(const std::vector<Point> &points, const Scale &x, const Scale &y,
                     double offset) {
  std::string out;
  for (const Point &p : points) {
    if (!out.empty())
      out += ' ';
    out += coord(x(p.x)) + "," + coord(y(p.y) + offset);
  }
  return out;
}

/// Data values used for a range: finite, and clamped far from overflow so that padding a
/// range around them stays finite.
double sane(double v) { return std::clamp(v, -1e300, 1e300); }

/// The plot's finite y values (and its markers'), sorted.
std::vector<double> plotValues(const Plot &plot) {
  std::vector<double> ys;
  for (const Line &line : plot.lines)
    for (const Point &p : line.points)
      if (std::isfinite(p.y))
        ys.push_back(sane(p.y));
  for (const Marker &m : plot.markers)
    if (std::isfinite(m.y))
      ys.push_back(sane(m.y));
  std::sort(ys.begin(), ys.end());
  return ys;
}

/// The top of the y range when far outliers (a diverging step) are left at the top edge
/// rather than squashing every other point into a line; infinity when none are.
double outlierCap(const Plot &plot) {
  std::vector<double> ys = plotValues(plot);
  if (!plot.capOutliers || ys.size() < 20)
    return std::numeric_limits<double>::infinity();
  double median = ys[ys.size() / 2], p95 = ys[ys.size() * 95 / 100];
  double cap = p95 + 3 * std::max(p95 - median, 0.05 * std::abs(p95));
  return cap < ys.back() ? cap : std::numeric_limits<double>::infinity();
}

/// The EMA of a series as drawn: in step order, outliers clamped to the visible range first
/// so one diverging step does not drag the curve for the next hundred.
std::vector<Point> smoothed(std::vector<Point> points, double cap) {
  std::stable_sort(points.begin(), points.end(),
                   [](const Point &a, const Point &b) { return a.x < b.x; });
  for (Point &p : points)
    p.y = std::min(p.y, cap);
  return ema(points, emaWeight(points.size()));
}

std::string renderPlot(const Plot &plot) {
  const double left = 64, right = 18, bottom = 40;
  const double top = plot.labelBands && !plot.bands.empty() ? 24 : 12;
  const double w = plot.width, h = plot.height;

  // The x range: given (shared by the stacked elastic plots) or the data's.
  double x0 = 0, x1 = 1;
  if (plot.xDomain) {
    std::tie(x0, x1) = *plot.xDomain;
  } else {
    bool any = false;
    for (const Line &line : plot.lines)
      for (const Point &p : line.points) {
        x0 = any ? std::min(x0, p.x) : p.x;
        x1 = any ? std::max(x1, p.x) : p.x;
        any = true;
      }
  }
  if (!(x1 > x0))
    x0 -= 1, x1 += 1;

  // The y range: the data's, with far outliers (a diverging step) left at the top edge.
  std::vector<double> ys = plotValues(plot);
  double y0 = ys.empty() ? 0 : ys.front(), y1 = ys.empty() ? 1 : ys.back();
  double cap = outlierCap(plot);
  size_t clipped = 0;
  if (cap < y1) {
    y1 = cap;
    clipped = size_t(ys.end() - std::upper_bound(ys.begin(), ys.end(), cap));
  }
  bool log = plot.logYWhenWide && y0 > 0 && y1 / y0 >= 5;
  if (plot.yDomain) {
    std::tie(y0, y1) = *plot.yDomain;
    log = false;
  } else if (log) {
    double pad = std::pow(y1 / y0, 0.04);
    y0 /= pad, y1 *= pad;
  } else {
    double span = y1 - y0;
    double pad = span > 0 ? 0.06 * span : std::max(std::abs(y0) * 0.1, 0.5);
    y0 = (y0 >= 0 && y0 - pad < 0) ? 0 : y0 - pad;
    y1 += pad;
  }
  if (!(y1 > y0))
    y1 = y0 + 1;

  Scale sx{x0, x1, left, w - right};
  Scale sy{y0, y1, h - bottom, top, log};
  std::vector<double> yTicks = plot.yTicks;
  std::vector<std::string> yLabels = plot.yTickLabels;
  if (yTicks.empty())
    yTicks = log ? logTicks(y0, y1) : linearTicks(y0, y1, 5, false);
  std::vector<double> xTicks = linearTicks(x0, x1, int(std::max(3.0, (w - left) / 110)), true);

  std::string s = fmt::format("<svg class=\"plot {}\" viewBox=\"0 0 {} {}\" width=\"{}\" "
                              "height=\"{}\" role=\"img\" aria-label=\"{}\">\n",
                              plot.cssClass, w, h, w, h, escape(plot.ariaLabel));
  s += fmt::format("<rect class=\"area\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n", left,
                   top, coord(w - right - left), coord(h - bottom - top));
  // Phases/stages: alternate shading and a label at the top.
  for (size_t i = 0; i < plot.bands.size(); ++i) {
    const Band &b = plot.bands[i];
    double bx0 = sx(b.x0), bx1 = sx(b.x1);
    s += fmt::format("<rect class=\"band{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\">"
                     "<title>{}</title></rect>\n",
                     i % 2 ? " odd" : "", coord(bx0), top, coord(std::max(bx1 - bx0, 0.5)),
                     coord(h - bottom - top), escape(b.label));
    if (i > 0)
      s += fmt::format("<line class=\"stage\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/>\n",
                       coord(bx0), coord(top), coord(h - bottom));
    if (plot.labelBands)
      s += fmt::format("<text class=\"band-label\" x=\"{}\" y=\"{}\">{}</text>\n", coord(bx0 + 5),
                       coord(top - 8), escape(b.label));
  }
  for (size_t i = 0; i < yTicks.size(); ++i) {
    double ty = sy(yTicks[i]);
    std::string label = i < yLabels.size() ? yLabels[i] : shortNumber(yTicks[i]);
    s += fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>"
                     "<text class=\"tick\" x=\"{3}\" y=\"{4}\" text-anchor=\"end\">{5}</text>\n",
                     left, coord(w - right), coord(ty), coord(left - 7), coord(ty + 3.5),
                     escape(label));
  }
  for (double t : xTicks) {
    double tx = sx(t);
    s += fmt::format("<line class=\"grid v\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/>"
                     "<line class=\"axis\" x1=\"{0}\" x2=\"{0}\" y1=\"{2}\" y2=\"{3}\"/>"
                     "<text class=\"tick\" x=\"{0}\" y=\"{4}\" text-anchor=\"middle\">{5}</text>\n",
                     coord(tx), coord(top), coord(h - bottom), coord(h - bottom + 4),
                     coord(h - bottom + 16), escape(shortNumber(t)));
  }
  s += fmt::format("<line class=\"axis\" x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>"
                   "<line class=\"axis\" x1=\"{0}\" x2=\"{0}\" y1=\"{3}\" y2=\"{2}\"/>\n",
                   left, coord(w - right), coord(h - bottom), coord(top));
  s += fmt::format("<text class=\"axis-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}"
                   "</text>\n",
                   coord((left + w - right) / 2), coord(h - 6), escape(plot.xLabel));
  std::string yLabel = plot.yLabel + (log ? " (log scale)" : "");
  s += fmt::format("<text class=\"axis-label\" transform=\"translate(14 {}) rotate(-90)\" "
                   "text-anchor=\"middle\">{}</text>\n",
                   coord((top + h - bottom) / 2), escape(yLabel));

  for (const Line &line : plot.lines) {
    std::vector<Point> points;
    for (const Point &p : line.points)
      if (std::isfinite(p.x) && std::isfinite(p.y))
        points.push_back({p.x, sane(p.y)});
    if (points.empty())
      continue;
    std::stable_sort(points.begin(), points.end(),
                     [](const Point &a, const Point &b) { return a.x < b.x; });
    std::string title = escape(line.title.empty() ? line.label : line.title);
    s += fmt::format("<g class=\"series {}\">\n", line.cssClass);
    if (line.style == LineStyle::Smoothed) {
      double weight = emaWeight(points.size());
      std::vector<Point> smooth = smoothed(points, cap);
      if (points.size() > 1)
        s += fmt::format("<polyline class=\"raw\" stroke=\"{}\" points=\"{}\"/>\n", line.color,
                         polyline(thin(points, 2000), sx, sy, 0));
      if (points.size() <= 240)
        for (const Point &p : points)
          s += fmt::format("<circle class=\"dot\" cx=\"{}\" cy=\"{}\" r=\"1.8\" fill=\"{}\">"
                           "<title>{} · step {} · {}</title></circle>\n",
                           coord(sx(p.x)), coord(sy(p.y)), line.color, escape(line.label),
                           shortNumber(p.x), fmt::format("{:.4f}", p.y));
      if (points.size() == 1)
        s += fmt::format("<circle class=\"smooth\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\">"
                         "<title>{}</title></circle>\n",
                         coord(sx(points[0].x)), coord(sy(points[0].y)), line.color, title);
      else
        s += fmt::format("<polyline class=\"smooth\" stroke=\"{}\" points=\"{}\"><title>{} "
                         "(EMA weight {:.2f})</title></polyline>\n",
                         line.color, polyline(thin(smooth, 2000), sx, sy, 0), title, weight);
    } else {
      std::vector<Point> drawn;
      if (line.style == LineStyle::Steps) {
        // Only the changes matter; then hold each value until the next change.
        for (size_t i = 0; i < points.size(); ++i) {
          if (!drawn.empty() && points[i].y == drawn.back().y && i + 1 < points.size())
            continue;
          if (!drawn.empty())
            drawn.push_back({points[i].x, drawn.back().y});
          drawn.push_back(points[i]);
        }
        // A router that flips every step of a long run would otherwise make the page huge.
        drawn = thin(drawn, 4000);
      } else {
        drawn = thin(points, 2000);
      }
      if (drawn.size() == 1)
        s += fmt::format("<circle class=\"line\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\">"
                         "<title>{}</title></circle>\n",
                         coord(sx(drawn[0].x)), coord(sy(drawn[0].y) + line.offsetPx), line.color,
                         title);
      else
        s += fmt::format("<polyline class=\"line\" stroke=\"{}\" points=\"{}\"><title>{}</title>"
                         "</polyline>\n",
                         line.color, polyline(drawn, sx, sy, line.offsetPx), title);
    }
    s += "</g>\n";
  }
  for (const Marker &m : plot.markers) {
    if (!std::isfinite(m.x) || !std::isfinite(m.y))
      continue;
    double mx = sx(m.x), my = sy(sane(m.y));
    s += fmt::format("<path class=\"eval\" d=\"M{} {}l5 5-5 5-5-5z\" fill=\"{}\"><title>{}</title>"
                     "</path>\n",
                     coord(mx), coord(my - 5), m.color, escape(m.title));
  }
  if (clipped)
    s += fmt::format("<text class=\"band-label\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{} "
                     "point{} above the range, drawn at the top edge</text>\n",
                     coord(w - right - 4), coord(top + 12), clipped, clipped == 1 ? "" : "s");
  s += "</svg>\n";
  return s;
}

//===----------------------------------------------------------------------===//
// The page
//===----------------------------------------------------------------------===//

constexpr const char *kStyle = R"css(
:root{--fg:#1d2430;--muted:#667085;--line:#e4e7ec;--bg:#f5f6f8;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,
 "Noto Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 24px 40px}
h1{font-size:26px;line-height:1.2;margin:0 0 6px;font-weight:650;letter-spacing:-.01em}
h2{font-size:17px;margin:0 0 2px;font-weight:620}
h3{font-size:13.5px;margin:10px 0 2px;font-weight:600}
.kicker{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.08em}
.pattern{font:12.5px/1.7 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
 word-break:break-all;background:var(--card);border:1px solid var(--line);border-radius:8px;
 padding:6px 10px;margin:8px 0}
.k-m{color:#2f6db5}.k-a{color:#c4532a;font-weight:700}.k-f{color:#3f8f4f}.k-u{color:#7b8794}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;
 margin:14px 0 4px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:9px 12px}
.stat strong{display:block;font-size:19px;font-weight:620;font-variant-numeric:tabular-nums}
.stat span{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.05em}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;
 padding:16px 20px 14px;margin:16px 0;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.caption{color:var(--muted);font-size:12.5px;margin:0 0 8px}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12.5px;margin:4px 0 6px}
.legend .sw{display:inline-block;width:12px;height:12px;border-radius:3px;vertical-align:-1px;
 margin-right:6px}
.legend .muted{color:var(--muted)}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:4px 20px}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
svg{display:block;max-width:100%;height:auto;overflow:visible}
svg text{font-size:11px;fill:#667085}
svg .axis-label{fill:#475467;font-size:11.5px}
svg .band-label{fill:#8792a2;font-size:10.5px}
svg .row-label{fill:#1d2430;font-size:12px}
svg .area{fill:#fff}
svg .band{fill:#f7f8fb}svg .band.odd{fill:#eef1f6}
svg .stage{stroke:#b8c0cc;stroke-dasharray:3 3}
svg .grid{stroke:#edf0f3}svg .grid.v{stroke:#f3f4f6}
svg .axis{stroke:#98a2b3}
svg polyline{fill:none;stroke-linejoin:round;stroke-linecap:round}
svg .raw{stroke-width:1;opacity:.22}
svg .dot{opacity:.35}
svg .smooth{stroke-width:2.2}
svg .line{stroke-width:2}
svg .eval{stroke:#fff;stroke-width:1.2}
svg .cell-bg{stroke:#fff;stroke-width:1}
svg .dropped .cell-bg{fill:url(#nestor-hatch)}
svg .cross{stroke:#9aa4b2;stroke-width:1.3}
.note{background:#fff8e6;border:1px solid #f1dca4;color:#6b4e00;border-radius:8px;
 padding:9px 14px;margin:12px 0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:7px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
 font-weight:600;white-space:normal;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}
tbody tr:hover{background:#f9fafb}
td .sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:8px}
.better{color:#2e7d4f}.worse{color:#c0392b}
details{margin-top:6px}summary{cursor:pointer;color:var(--muted)}
ul.messages{font:12px/1.6 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
 margin:6px 0;padding-left:18px;white-space:pre-wrap}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:22px}
)css";

constexpr double kFullWidth = 1030, kHalfWidth = 505;

std::string legendItem(const std::string &color, const std::string &label,
                       const std::string &detail = "") {
  return fmt::format("<span><span class=\"sw\" style=\"background:{}\"></span>{}{}</span>", color,
                     escape(label),
                     detail.empty() ? "" : " <span class=\"muted\">" + escape(detail) + "</span>");
}

std::string patternHtml(llvm::StringRef pattern) {
  std::string out;
  for (char c : pattern)
    out += fmt::format("<span class=\"{}\">{}</span>", kindStyle(c).css,
                       escape(llvm::StringRef(&c, 1)));
  return out;
}

struct StageSpan {
  int64_t stage, first, last;
  std::string name;
};

/// The stages of the elastic phase in step order, for the bands on the step axis.
std::vector<StageSpan> stageSpans(const std::vector<const StepRecord *> &elastic) {
  std::vector<StageSpan> spans;
  for (const StepRecord *r : elastic) {
    auto it = llvm::find_if(spans, [&](const StageSpan &s) { return s.stage == r->stage; });
    if (it == spans.end())
      spans.push_back({r->stage, r->step, r->step, r->phase});
    else
      it->first = std::min(it->first, r->step), it->last = std::max(it->last, r->step);
  }
  llvm::sort(spans, [](const StageSpan &a, const StageSpan &b) { return a.first < b.first; });
  return spans;
}

/// The size an axis choice index stands for (the index itself without a summary).
double choiceSize(const Summary *summary, llvm::StringRef axis, int64_t index) {
  if (!summary)
    return double(index);
  const std::vector<double> *sizes = summary->axis(axis);
  if (!sizes)
    return double(index);
  if (index < 0 || size_t(index) >= sizes->size())
    return kNaN;
  return (*sizes)[index];
}

std::string axisTitle(llvm::StringRef axis) {
  if (axis == "hidden_size")
    return "Hidden size (embedding channels)";
  if (axis == "intermediate_size")
    return "MLP intermediate size";
  if (axis == "num_attention_heads")
    return "Attention query heads";
  if (axis == "mamba_num_heads")
    return "Mamba heads";
  if (axis == "mamba_head_dim")
    return "Mamba head dim";
  if (axis == "depth")
    return "Depth: layers dropped";
  return axis.str();
}

class PageBuilder {
public:
  PageBuilder(const Metrics &metrics, const Summary *summary) : metrics(metrics), summary(summary) {
    if (summary)
      for (size_t i = 1; i < summary->rows.size(); ++i)
        colors.add(summary->rows[i].name, int64_t(i - 1));
    std::vector<std::pair<int64_t, std::string>> indexed;
    for (const StepRecord &r : metrics.steps) {
      if (r.budgetIndex >= 0)
        indexed.emplace_back(r.budgetIndex, r.budget);
      (r.isParent() ? parent : elastic).push_back(&r);
    }
    llvm::sort(indexed);
    for (const auto &[index, name] : indexed)
      colors.add(name, index);
    for (const StepRecord &r : metrics.steps) {
      colors.add(r.budget);
      for (const auto &[budget, axes] : r.choices)
        colors.add(budget);
    }
    for (const EvalRecord &e : metrics.evals)
      colors.add(e.budget);
    if (!elastic.empty()) {
      auto [lo, hi] = std::minmax_element(
          elastic.begin(), elastic.end(),
          [](const StepRecord *a, const StepRecord *b) { return a->step < b->step; });
      elasticDomain = {double((*lo)->step), double((*hi)->step)};
      if (elasticDomain->second <= elasticDomain->first)
        elasticDomain = {elasticDomain->first - 1, elasticDomain->second + 1};
      for (const StageSpan &s : stageSpans(elastic))
        stageBands.push_back({double(s.first) - 0.5, double(s.last) + 0.5, s.name});
    }
  }

  std::string build() {
    std::string title = summary ? summary->name : "training run";
    out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    out += fmt::format("<title>{} · Nestor report</title>\n<style>{}</style>\n</head>\n",
                       escape(title), kStyle);
    out += "<body>\n<main>\n";
    header();
    lossSection();
    routerSection();
    if (summary) {
      architectureSection();
      paramsSection();
      tableSection();
    }
    messagesSection();
    out += "<footer>Written by <code>nestor report</code> from metrics.jsonl";
    out += summary ? " and summary.json" : "";
    out += ". Hover over lines, points and cells for values.</footer>\n";
    out += "</main>\n</body>\n</html>\n";
    return std::move(out);
  }

private:
  void header() {
    out += "<header>\n<div class=\"kicker\">Nestor · elastic training report</div>\n";
    out += fmt::format("<h1>{}</h1>\n", escape(summary ? summary->name : "Training run"));
    if (summary && !summary->pattern.empty()) {
      const std::string &p = summary->pattern;
      out += fmt::format("<div class=\"pattern\" title=\"{} layers: {} Mamba2, {} attention, {} "
                         "MLP\">{}</div>\n",
                         p.size(), llvm::count(p, 'M'), llvm::count(p, '*'), llvm::count(p, '-'),
                         patternHtml(p));
    }
    double seconds = 0, tokensPerS = kNaN;
    for (const StepRecord &r : metrics.steps)
      if (std::isfinite(r.seconds))
        seconds += r.seconds;
    for (auto it = metrics.steps.rbegin(); it != metrics.steps.rend(); ++it)
      if (std::isfinite(it->tokensPerS)) {
        tokensPerS = it->tokensPerS;
        break;
      }
    out += "<div class=\"stats\">\n";
    auto stat = [&](const std::string &label, const std::string &value,
                    const std::string &hover = "") {
      out += fmt::format("<div class=\"stat\"{}><span>{}</span><strong>{}</strong></div>\n",
                         hover.empty() ? "" : " title=\"" + escape(hover) + "\"", escape(label),
                         escape(value));
    };
    if (summary)
      stat("Elastic tokens", humanCount(summary->tokens),
           groupThousands(summary->tokens) + " tokens");
    stat("Parent steps", groupThousands(double(parent.size())));
    stat("Elastic steps", groupThousands(double(elastic.size())));
    stat("Budgets", groupThousands(double(colors.order.size())));
    stat("Evaluations", groupThousands(double(metrics.evals.size())));
    if (seconds > 0)
      stat("Step time, total", duration(seconds), fmt::format("{:.1f} s", seconds));
    if (std::isfinite(tokensPerS))
      stat("Tokens/s, last step", humanCount(tokensPerS));
    if (summary && !summary->rows.empty())
      stat("Parent params", humanCount(summary->rows[0].params),
           groupThousands(summary->rows[0].params));
    out += "</div>\n</header>\n";
    if (!summary)
      out += "<p class=\"note\">This run has no summary yet (summary.json is written at the end "
             "of training): the page shows the curves so far.</p>\n";
    if (metrics.steps.empty())
      out += "<p class=\"note\">No steps yet: metrics.jsonl has no step records.</p>\n";
    if (metrics.incompleteLine)
      out += fmt::format("<p class=\"note\">Line {} of metrics.jsonl was still being written and "
                         "is left out.</p>\n",
                         metrics.incompleteLine);
  }

  /// The final EMA value of a budget's loss, for its legend entry.
  static std::string lastSmoothed(const Line &line, double cap) {
    std::vector<Point> points;
    for (const Point &p : line.points)
      if (std::isfinite(p.y))
        points.push_back({p.x, sane(p.y)});
    if (points.empty())
      return "";
    return fmt::format("{:.4f}", smoothed(points, cap).back().y);
  }

  std::vector<Marker> evalMarkers(bool parentPhase) {
    std::vector<Marker> markers;
    for (const EvalRecord &e : metrics.evals)
      if (e.isParent() == parentPhase)
        markers.push_back(
            {double(e.step), e.validationLoss, colors(e.budget),
             fmt::format("eval · {} · {} step {} · validation loss {} · accuracy {}", e.budget,
                         e.phase, e.step, fixed(e.validationLoss, 4), percent(e.accuracy))});
    return markers;
  }

  void lossSection() {
    if (parent.empty() && elastic.empty())
      return;
    out += "<section id=\"loss\">\n<h2>Loss</h2>\n<p class=\"caption\">Training loss per step: "
           "raw values faint, an exponential moving average on top; diamonds are validation "
           "evaluations. In the elastic phase each step trains one sampled budget, so a "
           "budget's curve has points only at the steps that sampled it.</p>\n";
    if (!parent.empty()) {
      Plot plot;
      plot.cssClass = "loss-parent";
      plot.ariaLabel = "Parent phase loss over steps";
      plot.xLabel = "parent-phase step";
      plot.yLabel = "loss";
      plot.height = 240;
      plot.logYWhenWide = plot.capOutliers = true;
      Line line{"parent", kParentColor, "budget-parent", "", LineStyle::Smoothed, {}};
      for (const StepRecord *r : parent)
        line.points.push_back({double(r->step), r->loss});
      plot.lines.push_back(std::move(line));
      plot.markers = evalMarkers(true);
      std::string last = lastSmoothed(plot.lines[0], outlierCap(plot));
      plot.lines[0].title = "parent · last EMA " + last;
      out += "<h3>Parent phase</h3>\n<div class=\"legend\">" +
             legendItem(kParentColor, "parent", last) + "</div>\n";
      out += renderPlot(plot);
    }
    if (!elastic.empty()) {
      Plot plot;
      plot.cssClass = "loss-elastic";
      plot.ariaLabel = "Elastic phase loss per budget over steps";
      plot.xLabel = "elastic-phase step (across all stages)";
      plot.yLabel = "loss";
      plot.height = 340;
      plot.xDomain = elasticDomain;
      plot.bands = stageBands;
      plot.logYWhenWide = plot.capOutliers = true;
      for (const std::string &budget : budgetsWithElasticSteps()) {
        Line line{budget, colors(budget), "budget", "", LineStyle::Smoothed, {}};
        for (const StepRecord *r : elastic)
          if (r->budget == budget)
            line.points.push_back({double(r->step), r->loss});
        plot.lines.push_back(std::move(line));
      }
      plot.markers = evalMarkers(false);
      double cap = outlierCap(plot);
      std::string legend;
      for (Line &line : plot.lines) {
        std::string last = lastSmoothed(line, cap);
        line.title =
            fmt::format("{} · {} steps · last EMA {}", line.label, line.points.size(), last);
        legend += legendItem(line.color, line.label, last);
      }
      out += "<h3>Elastic phase</h3>\n<div class=\"legend\">" + legend + "</div>\n";
      out += renderPlot(plot);
    }
    out += "</section>\n";
  }

  std::vector<std::string> budgetsWithElasticSteps() const {
    std::vector<std::string> budgets;
    for (const std::string &b : colors.order)
      if (llvm::any_of(elastic, [&](const StepRecord *r) { return r->budget == b; }))
        budgets.push_back(b);
    return budgets;
  }

  Plot elasticPlot(const std::string &cssClass, const std::string &label, double width,
                   double height) {
    Plot plot;
    plot.cssClass = cssClass;
    plot.ariaLabel = label;
    plot.xLabel = "elastic-phase step";
    plot.yLabel = label;
    plot.width = width;
    plot.height = height;
    plot.xDomain = elasticDomain;
    plot.bands = stageBands;
    plot.labelBands = false;
    return plot;
  }

  void routerSection() {
    if (elastic.empty())
      return;
    std::vector<std::pair<std::string, double StepRecord::*>> scalars = {
        {"τ (Gumbel-softmax temperature)", &StepRecord::tau},
        {"logit scale", &StepRecord::logitScale}};
    std::string plots;
    for (const auto &[label, field] : scalars) {
      Line line{label, "#5b5f97", "", "", LineStyle::Plain, {}};
      for (const StepRecord *r : elastic)
        if (std::isfinite(r->*field))
          line.points.push_back({double(r->step), r->*field});
      if (line.points.empty())
        continue;
      line.title = fmt::format("{} · last {}", label, shortNumber(line.points.back().y));
      Plot plot =
          elasticPlot(field == &StepRecord::tau ? "tau" : "logit-scale", label, kHalfWidth, 190);
      plot.yLabel = field == &StepRecord::tau ? "τ" : "logit scale";
      plot.lines.push_back(std::move(line));
      plots += fmt::format("<div><h3>{}</h3>\n{}</div>\n", escape(label), renderPlot(plot));
    }

    // Axes in the summary's order, then any only the metrics name.
    std::vector<std::string> axes;
    if (summary)
      for (const auto &[axis, sizes] : summary->axes)
        axes.push_back(axis);
    for (const StepRecord *r : elastic)
      for (const auto &[budget, budgetAxes] : r->choices)
        for (const auto &[axis, indices] : budgetAxes)
          if (!llvm::is_contained(axes, axis))
            axes.push_back(axis);
    std::string choicePlots;
    std::vector<std::string> budgets = colors.order;
    for (const std::string &axis : axes) {
      Plot plot = elasticPlot("choices axis-" + axis, axisTitle(axis), kHalfWidth, 190);
      bool heterogeneous = false;
      for (size_t b = 0; b < budgets.size(); ++b) {
        const std::string &budget = budgets[b];
        Line line{budget, colors(budget), "budget", "", LineStyle::Steps, {}};
        std::vector<int64_t> lastIndices;
        for (const StepRecord *r : elastic) {
          auto bIt = r->choices.find(budget);
          if (bIt == r->choices.end())
            continue;
          auto aIt = llvm::find_if(bIt->second, [&](const auto &a) { return a.first == axis; });
          if (aIt == bIt->second.end() || aIt->second.empty())
            continue;
          double sum = 0;
          for (int64_t index : aIt->second)
            sum += choiceSize(summary, axis, index);
          heterogeneous |= aIt->second.size() > 1;
          lastIndices = aIt->second;
          line.points.push_back({double(r->step), sum / double(aIt->second.size())});
        }
        if (line.points.empty())
          continue;
        std::string perLayer;
        for (int64_t index : lastIndices)
          perLayer += (perLayer.empty() ? "" : " ") + shortNumber(choiceSize(summary, axis, index));
        line.title = fmt::format("{} · {} at the last step: {}", budget, axisTitle(axis),
                                 lastIndices.size() > 1 ? "per layer " + perLayer : perLayer);
        line.offsetPx = (double(b) - double(budgets.size() - 1) / 2) * 2.0;
        plot.lines.push_back(std::move(line));
      }
      if (plot.lines.empty())
        continue;
      const std::vector<double> *sizes = summary ? summary->axis(axis) : nullptr;
      if (sizes && !sizes->empty()) {
        auto [lo, hi] = std::minmax_element(sizes->begin(), sizes->end());
        double pad = std::max((*hi - *lo) * 0.08, 0.5);
        plot.yDomain = {*lo - pad, *hi + pad};
        if (sizes->size() <= 8) {
          // The choices themselves, written out in full: they are the spec's numbers.
          plot.yTicks = *sizes;
          for (double size : *sizes)
            plot.yTickLabels.push_back(groupThousands(size));
        }
      } else {
        plot.yLabel = "choice index (0 = largest)";
      }
      if (axis == "depth")
        plot.yLabel = "layers dropped";
      else if (sizes)
        plot.yLabel = heterogeneous ? "mean size over layers" : "size";
      choicePlots +=
          fmt::format("<div><h3>{}</h3>\n{}</div>\n", escape(axisTitle(axis)), renderPlot(plot));
    }
    if (plots.empty() && choicePlots.empty())
      return;
    out += "<section id=\"routers\">\n<h2>Routers</h2>\n<p class=\"caption\">The Gumbel-softmax "
           "temperature and logit scale over the elastic phase, and each budget's argmax choice "
           "after every step (per-layer axes show the mean over layers; hover a line for the "
           "per-layer sizes at the last step).</p>\n";
    if (!plots.empty())
      out += "<div class=\"grid2\">\n" + plots + "</div>\n";
    if (!choicePlots.empty()) {
      std::string legend;
      for (const std::string &b : budgets)
        legend += legendItem(colors(b), b);
      out += "<h3>Router choices</h3>\n<div class=\"legend\">" + legend + "</div>\n";
      out += "<div class=\"grid2\">\n" + choicePlots + "</div>\n";
    }
    out += "</section>\n";
  }

  void architectureSection() {
    const std::vector<Row> &rows = summary->rows;
    size_t numLayers = 0;
    for (const Row &r : rows)
      numLayers = std::max(numLayers, r.layers.size());
    if (rows.empty() || numLayers == 0)
      return;
    const double labelW = 120, rightW = 215, headerH = 30, rowH = 30, gap = 6;
    double cellW = std::clamp((kFullWidth - labelW - rightW) / double(numLayers), 6.0, 44.0);
    double w = labelW + cellW * double(numLayers) + rightW;
    double h = headerH + double(rows.size()) * (rowH + gap) + 4;
    std::string s = fmt::format("<svg class=\"plot architecture\" viewBox=\"0 0 {0} {1}\" "
                                "width=\"{0}\" height=\"{1}\" role=\"img\" aria-label=\"The "
                                "architecture each budget chose\">\n",
                                coord(w), coord(h));
    s += "<defs><pattern id=\"nestor-hatch\" width=\"5\" height=\"5\" "
         "patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"5\" "
         "height=\"5\" fill=\"#f1f3f5\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"5\" "
         "stroke=\"#d5dae0\" stroke-width=\"2\"/></pattern></defs>\n";
    // Layer numbers (every few when the cells are narrow) and kinds.
    size_t every = cellW >= 22 ? 1 : cellW >= 11 ? 5 : 10;
    const std::vector<LayerArch> &first = rows[0].layers;
    for (size_t j = 0; j < numLayers; ++j) {
      double cx = labelW + (double(j) + 0.5) * cellW;
      if (j % every == 0)
        s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"11\" text-anchor=\"middle\">{}</text>",
                         coord(cx), j);
      char kind = j < first.size() ? first[j].kind : '?';
      s += fmt::format("<rect x=\"{}\" y=\"18\" width=\"{}\" height=\"6\" fill=\"{}\"><title>layer "
                       "{} · {}</title></rect>\n",
                       coord(labelW + double(j) * cellW + 0.5), coord(std::max(cellW - 1, 1.0)),
                       kindStyle(kind).fill, j, kindStyle(kind).name);
    }
    auto frac = [](double v, double parent) {
      return std::isfinite(v) && parent > 0 ? std::clamp(v / parent, 0.0, 1.0) : 0.0;
    };
    auto sizeText = [](double v, double parent) {
      return fmt::format("{}/{} ({})", shortNumber(v), shortNumber(parent),
                         percent(parent > 0 ? std::optional<double>(v / parent) : std::nullopt, 0));
    };
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row &row = rows[i];
      double y = headerH + double(i) * (rowH + gap);
      std::string color = i == 0 ? kParentColor : colors(row.name);
      std::string shown = row.name.size() > 16 ? row.name.substr(0, 15) + "…" : row.name;
      s += fmt::format("<g class=\"arch-row\"><title>{}</title><rect x=\"0\" y=\"{}\" width=\"4\" "
                       "height=\"{}\" rx=\"1\" fill=\"{}\"/><text class=\"row-label\" x=\"12\" "
                       "y=\"{}\">{}</text></g>\n",
                       escape(row.name), coord(y), coord(rowH), color, coord(y + rowH / 2 + 4),
                       escape(shown));
      int64_t kept = 0;
      for (size_t j = 0; j < row.layers.size(); ++j) {
        const LayerArch &l = row.layers[j];
        KindStyle style = kindStyle(l.kind);
        double x = labelW + double(j) * cellW;
        kept += l.kept;
        std::string detail;
        std::vector<double> bars;
        if (l.kind == 'M') {
          detail = "heads " + sizeText(l.mambaHeads, summary->parentMambaHeads) + ", head dim " +
                   sizeText(l.mambaHeadDim, summary->parentMambaHeadDim);
          bars = {frac(l.mambaHeads, summary->parentMambaHeads),
                  frac(l.mambaHeadDim, summary->parentMambaHeadDim)};
        } else if (l.kind == '*') {
          detail = "query heads " + sizeText(l.attentionHeads, summary->parentAttentionHeads);
          bars = {frac(l.attentionHeads, summary->parentAttentionHeads)};
        } else if (l.kind == '-') {
          detail = "neurons " + sizeText(l.intermediate, summary->parentIntermediate);
          bars = {frac(l.intermediate, summary->parentIntermediate)};
        }
        std::string title = fmt::format("{} · layer {} · {} · {}", row.name, j, style.name,
                                        l.kept ? detail : "dropped");
        s += fmt::format("<g class=\"cell {}\"><title>{}</title>", l.kept ? "kept" : "dropped",
                         escape(title));
        s += fmt::format("<rect class=\"cell-bg\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
                         "fill=\"{}\"/>",
                         coord(x), coord(y), coord(cellW), coord(rowH), style.tint);
        if (l.kept) {
          // One bar per width axis, its height the fraction kept.
          double inner = std::max(cellW - 3, 1.0),
                 barW = inner / double(std::max<size_t>(bars.size(), 1));
          for (size_t k = 0; k < bars.size(); ++k) {
            double bh = (rowH - 3) * bars[k];
            s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" "
                             "opacity=\"{}\"/>",
                             coord(x + 1.5 + double(k) * barW), coord(y + rowH - 1.5 - bh),
                             coord(std::max(barW - (bars.size() > 1 ? 0.6 : 0), 0.5)), coord(bh),
                             style.fill, k == 0 ? "0.9" : "0.6");
          }
        } else {
          double m = std::min(cellW, rowH) * 0.28, cx = x + cellW / 2, cy = y + rowH / 2;
          s += fmt::format("<path class=\"cross\" d=\"M{} {}L{} {}M{} {}L{} {}\"/>", coord(cx - m),
                           coord(cy - m), coord(cx + m), coord(cy + m), coord(cx - m),
                           coord(cy + m), coord(cx + m), coord(cy - m));
        }
        s += "</g>\n";
      }
      double rx = labelW + cellW * double(numLayers) + 10;
      s += fmt::format(
          "<text x=\"{}\" y=\"{}\"><title>hidden size {}, {} of {} layers kept"
          "</title>hidden {} · {}/{} layers</text>\n",
          coord(rx), coord(y + rowH / 2 + 4), escape(sizeText(row.hidden, summary->parentHidden)),
          kept, row.layers.size(),
          escape(fmt::format("{} ({})", shortNumber(row.hidden),
                             percent(summary->parentHidden > 0
                                         ? std::optional<double>(row.hidden / summary->parentHidden)
                                         : std::nullopt,
                                     0))),
          kept, row.layers.size());
    }
    s += "</svg>\n";
    std::string legend;
    for (char kind : {'M', '*', '-'})
      legend += legendItem(kindStyle(kind).fill, kindStyle(kind).name);
    legend += "<span><span class=\"sw\" style=\"background:#e6e9ed\"></span>dropped (×)</span>";
    out += "<section id=\"architecture\">\n<h2>Architecture per budget</h2>\n<p "
           "class=\"caption\">One row per model, one column per layer, coloured by kind. Bars "
           "show the fraction kept of the layer's width: query heads (attention), neurons (MLP), "
           "heads and head dim (Mamba2, two bars). Hatched cells with × are dropped "
           "layers.</p>\n<div class=\"legend\">" +
           legend + "</div>\n" + s + "</section>\n";
  }

  void paramsSection() {
    const std::vector<Row> &rows = summary->rows;
    if (rows.empty())
      return;
    double parentParams = rows[0].params, maxParams = 0;
    for (const Row &r : rows)
      if (std::isfinite(r.params))
        maxParams = std::max(
            {maxParams, r.params,
             std::isfinite(r.fraction) && parentParams > 0 ? r.fraction * parentParams : 0.0});
    if (!(maxParams > 0))
      return;
    const double labelW = 120, rightW = 210, rowH = 26, top = 22;
    double w = kFullWidth, barMax = w - labelW - rightW, h = top + double(rows.size()) * rowH + 6;
    std::string s = fmt::format("<svg class=\"plot params\" viewBox=\"0 0 {0} {1}\" width=\"{0}\" "
                                "height=\"{1}\" role=\"img\" aria-label=\"Parameters per "
                                "model\">\n",
                                w, coord(h));
    Scale sx{0, maxParams, labelW, labelW + barMax};
    for (double f : {0.25, 0.5, 0.75, 1.0}) {
      if (!(parentParams > 0) || f * parentParams > maxParams * 1.0001)
        continue;
      double x = sx(f * parentParams);
      s +=
          fmt::format("<line class=\"grid\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/>"
                      "<text class=\"tick\" x=\"{0}\" y=\"12\" text-anchor=\"middle\">{3}</text>\n",
                      coord(x), coord(top - 4), coord(h - 4), percent(f, 0));
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row &row = rows[i];
      double y = top + double(i) * rowH;
      std::string color = i == 0 ? kParentColor : colors(row.name);
      std::optional<double> ofParent;
      if (parentParams > 0 && std::isfinite(row.params))
        ofParent = row.params / parentParams;
      std::string shown = row.name.size() > 16 ? row.name.substr(0, 15) + "…" : row.name;
      s += fmt::format("<g class=\"param-row\"><title>{} · {} parameters · {} of the parent · "
                       "target {}</title>",
                       escape(row.name), groupThousands(row.params), percent(ofParent, 2),
                       percent(row.fraction, 1));
      s += fmt::format("<text class=\"row-label\" x=\"0\" y=\"{}\">{}</text>",
                       coord(y + rowH / 2 + 4), escape(shown));
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"3\" fill=\"{}\"/>",
                       labelW, coord(y + 4), coord(std::max(sx(row.params) - labelW, 0.0)),
                       coord(rowH - 8), color);
      if (i > 0 && std::isfinite(row.fraction) && parentParams > 0) {
        double tx = sx(row.fraction * parentParams);
        s += fmt::format("<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#1d2430\" "
                         "stroke-width=\"1.5\" stroke-dasharray=\"2 2\"/>",
                         coord(tx), coord(y + 1), coord(y + rowH - 1));
      }
      s += fmt::format("<text x=\"{}\" y=\"{}\">{} · {} of parent</text></g>\n",
                       coord(labelW + barMax + 10), coord(y + rowH / 2 + 4),
                       escape(humanCount(row.params)), percent(ofParent, 1));
    }
    s += "</svg>\n";
    out += "<section id=\"params\">\n<h2>Parameters</h2>\n<p class=\"caption\">Parameters of "
           "each model; the dashed tick marks the budget's target fraction of the "
           "parent.</p>\n" +
           s + "</section>\n";
  }

  void tableSection() {
    const std::vector<Row> &rows = summary->rows;
    double parentParams = rows.empty() ? kNaN : rows[0].params;
    out += "<section id=\"table\">\n<h2>Final table</h2>\n<p class=\"caption\">Validation loss "
           "and accuracy (held-out problems solved exactly; completion tokens right) of each model "
           "after elastic training, against the baseline (the parent "
           "cut to the same budget without elastic training).</p>\n<table>\n<thead><tr><th>Model"
           "</th><th>Params</th><th>Fraction</th><th>Of parent</th><th>Validation loss</th>"
           "<th>Accuracy</th><th>Token accuracy</th><th>Baseline loss</th><th>Baseline accuracy"
           "</th><th>Baseline token accuracy</th><th>Δ loss vs baseline</th></tr></thead>\n"
           "<tbody>\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row &r = rows[i];
      std::optional<double> ofParent;
      if (parentParams > 0 && std::isfinite(r.params))
        ofParent = r.params / parentParams;
      std::string delta = "–", deltaClass;
      if (r.validationLoss && r.baselineLoss && std::isfinite(*r.validationLoss) &&
          std::isfinite(*r.baselineLoss)) {
        double d = *r.validationLoss - *r.baselineLoss;
        delta = fmt::format("{:+.4f}", d);
        deltaClass = d < 0 ? " class=\"better\"" : d > 0 ? " class=\"worse\"" : "";
      }
      out +=
          fmt::format("<tr><td><span class=\"sw\" style=\"background:{}\"></span>{}</td>"
                      "<td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                      "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>\n",
                      i == 0 ? kParentColor : colors(r.name), escape(r.name), humanCount(r.params),
                      groupThousands(r.params), fixed(r.fraction, 3), percent(ofParent, 1),
                      fixed(r.validationLoss, 4), percent(r.accuracy), percent(r.tokenAccuracy),
                      fixed(r.baselineLoss, 4), percent(r.baselineAccuracy),
                      percent(r.baselineTokenAccuracy), deltaClass, delta);
    }
    out += "</tbody>\n</table>\n</section>\n";
  }

  void messagesSection() {
    if (metrics.messages.empty())
      return;
    out += fmt::format("<section id=\"messages\">\n<h2>Messages</h2>\n<details{}><summary>{} "
                       "message{} from the trainer</summary>\n<ul class=\"messages\">\n",
                       metrics.messages.size() <= 8 ? " open" : "", metrics.messages.size(),
                       metrics.messages.size() == 1 ? "" : "s");
    for (const std::string &m : metrics.messages)
      out += "<li>" + escape(m) + "</li>\n";
    out += "</ul>\n</details>\n</section>\n";
  }

  const Metrics &metrics;
  const Summary *summary;
  BudgetColors colors;
  std::vector<const StepRecord *> parent, elastic;
  std::optional<std::pair<double, double>> elasticDomain;
  std::vector<Band> stageBands;
  std::string out;
};

} // namespace

llvm::Expected<std::string> report::renderReport(llvm::StringRef metricsJsonl,
                                                 llvm::StringRef summaryJson,
                                                 llvm::StringRef metricsName,
                                                 llvm::StringRef summaryName) {
  auto metrics = parseMetrics(metricsJsonl, metricsName);
  if (!metrics)
    return metrics.takeError();
  std::optional<Summary> summary;
  if (!summaryJson.trim().empty()) {
    auto parsed = parseSummary(summaryJson, summaryName);
    if (!parsed)
      return parsed.takeError();
    summary = std::move(*parsed);
  }
  return PageBuilder(*metrics, summary ? &*summary : nullptr).build();
}

llvm::Expected<std::string> report::writeReport(llvm::StringRef runDir) {
  auto inRun = [&](const char *name) {
    llvm::SmallString<256> path(runDir);
    llvm::sys::path::append(path, name);
    return std::string(path);
  };
  std::string metricsPath = inRun("metrics.jsonl"), summaryPath = inRun("summary.json");
  auto metrics = ckpt::readFileBytes(metricsPath);
  if (!metrics)
    return metrics.takeError();
  std::string summary;
  if (llvm::sys::fs::exists(summaryPath)) {
    auto text = ckpt::readFileBytes(summaryPath);
    if (!text)
      return text.takeError();
    summary = std::move(*text);
  }
  auto page = renderReport(*metrics, summary, metricsPath, summaryPath);
  if (!page)
    return page.takeError();
  std::string reportPath = inRun("report.html");
  if (llvm::Error error = ckpt::writeFileAtomic(reportPath, *page))
    return llvm::Expected<std::string>(std::move(error));
  return reportPath;
}

/// 12310001152 -> "12,310,001,152" (independent of the user's locale).
std::string nestor::report::groupThousands(double value) {
  if (!std::isfinite(value))
    return "–";
  std::string digits = fmt::format("{:.0f}", value);
  std::string out;
  size_t lead = digits[0] == '-' ? 1 : 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > lead && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}
