//===- ParamsCommand.cpp - `nestor params` ---------------------------------===//
//
// Parameter counts of the parent, of each choice of each elastic axis, of each budget's target
// (and, with --budget-table, the configuration closest to it), and of an explicit configuration
// given on the command line, all from the one closed-form count in nestor/ParamCount.h.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/Report.h"

#include "nestor/ParamCount.h"
#include "nestor/Spec.h"

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>

using namespace nestor;
using namespace nestor::spec;

namespace {

struct ParamsOptions {
  std::string specPath;
  std::string set;
  int64_t dropLayers = 0;
  bool budgetTable = false;
  bool json = false;
};

/// Counts are integers for integral sizes; keep them integers in JSON.
nlohmann::ordered_json number(double n) {
  if (n == std::round(n) && std::abs(n) < 9e15)
    return static_cast<int64_t>(n);
  return n;
}

/// One width axis: its name (the spec's field name, also the --set key), where its size lives in
/// LayerSizes (nullptr: the global hidden size), and what constrains its values.
struct WidthAxis {
  const char *name;
  double LayerSizes<double>::*field;
  int64_t parent;
  int64_t groups;         // values are multiples of this (heads trimmed per group)
  const char *groupField; // the architecture field `groups` comes from
  std::optional<LayerKind> kind;
  const AxisChoices *elastic;
  /// The elastic choices, or the parent size alone when the axis is not elastic.
  std::vector<int64_t> choices() const {
    if (elastic->choices_size() == 0)
      return {parent};
    return {elastic->choices().begin(), elastic->choices().end()};
  }
};

std::vector<WidthAxis> widthAxes(const ModelSpec &spec) {
  const Architecture &a = spec.architecture();
  const Elastic &e = spec.elastic();
  return {
      {"hidden_size", nullptr, a.hidden_size(), 1, "", std::nullopt, &e.hidden_size()},
      {"intermediate_size", &LayerSizes<double>::ffn, a.intermediate_size(), 1, "", LayerKind::MLP,
       &e.intermediate_size()},
      {"num_attention_heads", &LayerSizes<double>::attnHeads, a.num_attention_heads(),
       a.num_key_value_heads(), "num_key_value_heads", LayerKind::Attention,
       &e.num_attention_heads()},
      {"mamba_num_heads", &LayerSizes<double>::mambaHeads, a.mamba_num_heads(), a.n_groups(),
       "n_groups", LayerKind::Mamba, &e.mamba_num_heads()},
      {"mamba_head_dim", &LayerSizes<double>::mambaHeadDim, a.mamba_head_dim(), 1, "",
       LayerKind::Mamba, &e.mamba_head_dim()},
  };
}

void setAxis(ModelSizes<double> &sizes, const WidthAxis &axis, int64_t value) {
  if (!axis.field)
    sizes.hidden = double(value);
  else
    for (auto &l : sizes.layers)
      l.*axis.field = double(value);
}

/// Drops the last `k` layers: without an importance ranking (nestor train computes one), the
/// last layers stand in for the least important.
void dropLast(ModelSizes<double> &sizes, int64_t k) {
  for (int64_t i = 0; i < k; ++i)
    sizes.layers[sizes.layers.size() - 1 - i].keep = 0.0;
}

/// Applies "key=value,key=value" to `sizes` (every layer of the key's type), with the same
/// rules a spec's choices obey.
llvm::Error applySet(llvm::StringRef text, const ModelSpec &spec, ModelSizes<double> &sizes) {
  std::vector<WidthAxis> axes = widthAxes(spec);
  std::vector<LayerKind> layers = fixedSizes(spec).layers;
  llvm::SmallVector<llvm::StringRef> items;
  text.split(items, ',', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef item : items) {
    auto keyValue = item.split('=');
    llvm::StringRef key = keyValue.first.trim(), valueText = keyValue.second.trim();
    auto axis = llvm::find_if(axes, [&](const WidthAxis &a) { return key == a.name; });
    if (axis == axes.end())
      return llvm::createStringError(
          ("--set: unknown key '" + key +
           "' (expected hidden_size, intermediate_size, num_attention_heads, mamba_num_heads, "
           "mamba_head_dim)")
              .str());
    int64_t value = 0;
    if (valueText.getAsInteger(10, value) || value <= 0)
      return llvm::createStringError(
          ("--set " + item + ": expected " + key + "=N with N a positive integer").str());
    if (axis->kind && !llvm::is_contained(layers, *axis->kind))
      return llvm::createStringError(
          ("--set " + key + ": the pattern has no " + layerKindName(*axis->kind) + " layers")
              .str());
    if (value > axis->parent)
      return llvm::createStringError(
          llvm::formatv("--set {0}: {1} is larger than the parent's {2}", key, value, axis->parent)
              .str());
    if (axis->groups > 1 && value % axis->groups != 0)
      return llvm::createStringError(llvm::formatv("--set {0}: {1} is not a multiple of {2} ({3})",
                                                   key, value, axis->groupField, axis->groups)
                                         .str());
    setAxis(sizes, *axis, value);
  }
  return llvm::Error::success();
}

/// A homogeneous configuration: one choice per width axis and a number of dropped layers.
struct Configuration {
  std::vector<int64_t> widths; // in widthAxes() order
  int64_t dropped = 0;
  double params = 0;
};

/// Keeps `nestor params` interactive; the reference specs have a few thousand combinations.
constexpr uint64_t kMaxCombinations = 4'000'000;

/// The homogeneous configuration whose count is closest to `target`, by exhaustive search over
/// every combination of choices and 0..max_dropped_layers dropped layers (the last ones). Ties
/// keep the first found: the larger widths, then fewer dropped layers.
llvm::Expected<Configuration> closestConfiguration(const ModelSpec &spec, double target) {
  std::vector<WidthAxis> axes = widthAxes(spec);
  std::vector<std::vector<int64_t>> choices;
  for (const WidthAxis &axis : axes)
    choices.push_back(axis.choices());
  int64_t depthChoices = spec.elastic().max_dropped_layers() + 1;
  uint64_t combinations = uint64_t(depthChoices);
  for (const auto &c : choices) {
    combinations *= c.size();
    if (combinations > kMaxCombinations)
      return llvm::createStringError(
          llvm::formatv("--budget-table: more than {0} combinations of choices to search",
                        kMaxCombinations)
              .str());
  }
  FixedSizes fixed = fixedSizes(spec);
  ModelSizes<double> parent = parentSizes(spec);
  std::vector<size_t> index(axes.size(), 0);
  Configuration best;
  double bestDistance = std::numeric_limits<double>::infinity();
  while (true) {
    ModelSizes<double> s = parent;
    for (size_t a = 0; a < axes.size(); ++a)
      setAxis(s, axes[a], choices[a][index[a]]);
    for (int64_t k = 0; k < depthChoices; ++k) {
      if (k > 0)
        dropLast(s, k);
      double n = countParams(fixed, s).total();
      if (std::abs(n - target) < bestDistance) {
        bestDistance = std::abs(n - target);
        best.widths.clear();
        for (size_t a = 0; a < axes.size(); ++a)
          best.widths.push_back(choices[a][index[a]]);
        best.dropped = k;
        best.params = n;
      }
    }
    // Odometer over the width choices, the last axis fastest.
    size_t a = axes.size();
    while (a > 0 && ++index[a - 1] == choices[a - 1].size())
      index[--a] = 0;
    if (a == 0)
      break;
  }
  return best;
}

nlohmann::ordered_json breakdownJson(const ParamBreakdown<double> &b) {
  return {{"total", number(b.total())},  {"embedding", number(b.embedding)},
          {"lm_head", number(b.lmHead)}, {"final_norm", number(b.finalNorm)},
          {"mamba", number(b.mamba)},    {"attention", number(b.attention)},
          {"mlp", number(b.mlp)}};
}

} // namespace

cli::Action cli::addParamsCommand(CLI::App &app) {
  auto opts = std::make_shared<ParamsOptions>();
  app.add_option("SPEC", opts->specPath, "Model spec (.pbtxt)")->required();
  app.add_option("--set", opts->set,
                 "Explicit configuration to count, e.g. hidden_size=3840,mamba_num_heads=96 "
                 "(keys: hidden_size, intermediate_size, num_attention_heads, mamba_num_heads, "
                 "mamba_head_dim)");
  // Checked in the action, for a message as clear as every other input error.
  app.add_option("--drop-layers", opts->dropLayers,
                 "Drop this many layers in the explicit configuration (the last ones: no "
                 "importance ranking exists before training)");
  app.add_flag("--budget-table", opts->budgetTable,
               "For each budget, the homogeneous configuration of choices (and dropped last "
               "layers) whose count is closest to the budget's target");
  app.add_flag("--json", opts->json, "Print the counts as JSON");

  return [opts]() -> int {
    auto spec = loadSpecFile(opts->specPath);
    if (!spec)
      return reportError(spec.takeError());
    FixedSizes fixed = fixedSizes(*spec);
    ModelSizes<double> parent = parentSizes(*spec);
    ParamBreakdown<double> full = countParams(fixed, parent);
    double total = full.total();
    int64_t numLayers = static_cast<int64_t>(fixed.layers.size());
    int64_t counts[3] = {0, 0, 0};
    for (LayerKind k : fixed.layers)
      ++counts[static_cast<int>(k)];
    const Elastic &e = spec->elastic();
    std::vector<WidthAxis> axes = widthAxes(*spec);

    nlohmann::ordered_json out;
    out["name"] = spec->name();
    out["layers"] = {
        {"total", numLayers}, {"mamba", counts[0]}, {"attention", counts[1]}, {"mlp", counts[2]}};
    out["parent"] = breakdownJson(full);

    // Each choice of each axis: the parent with only that axis changed.
    nlohmann::ordered_json choicesJson = nlohmann::ordered_json::array();
    for (const WidthAxis &axis : axes) {
      for (int64_t k : axis.elastic->choices()) {
        ModelSizes<double> s = parent;
        setAxis(s, axis, k);
        double n = countParams(fixed, s).total();
        choicesJson.push_back({{"axis", axis.name}, {"choice", k}, {"params", number(n)}});
      }
    }
    for (int64_t k = 1; k <= e.max_dropped_layers(); ++k) {
      ModelSizes<double> s = parent;
      dropLast(s, k);
      choicesJson.push_back(
          {{"axis", "depth"}, {"choice", k}, {"params", number(countParams(fixed, s).total())}});
    }
    out["choices"] = choicesJson;
    nlohmann::ordered_json budgets = nlohmann::ordered_json::array();
    for (const Budget &b : e.budgets())
      budgets.push_back({{"name", b.name()},
                         {"fraction", b.fraction()},
                         {"target", std::llround(b.fraction() * total)}});
    out["budgets"] = budgets;

    std::vector<Configuration> closest;
    if (opts->budgetTable) {
      nlohmann::ordered_json table = nlohmann::ordered_json::array();
      for (const Budget &b : e.budgets()) {
        auto c = closestConfiguration(*spec, b.fraction() * total);
        if (!c)
          return reportError(c.takeError());
        nlohmann::ordered_json config;
        for (size_t a = 0; a < axes.size(); ++a)
          config[axes[a].name] = c->widths[a];
        config["dropped_layers"] = c->dropped;
        table.push_back({{"name", b.name()},
                         {"fraction", b.fraction()},
                         {"target", std::llround(b.fraction() * total)},
                         {"configuration", config},
                         {"params", number(c->params)},
                         {"ratio", c->params / total}});
        closest.push_back(*c);
      }
      out["budget_table"] = table;
    }

    bool custom = !opts->set.empty() || opts->dropLayers != 0;
    if (custom) {
      ModelSizes<double> s = parent;
      if (llvm::Error err = applySet(opts->set, *spec, s))
        return reportError(std::move(err));
      if (opts->dropLayers < 0)
        return reportError(llvm::createStringError(
            llvm::formatv("--drop-layers {0}: must not be negative", opts->dropLayers).str()));
      if (opts->dropLayers >= numLayers)
        return reportError(llvm::createStringError(
            llvm::formatv("--drop-layers {0}: the model has only {1} layers", opts->dropLayers,
                          numLayers)
                .str()));
      dropLast(s, opts->dropLayers);
      nlohmann::ordered_json c = breakdownJson(countParams(fixed, s));
      c["set"] = opts->set;
      c["dropped_layers"] = opts->dropLayers;
      out["configuration"] = c;
    }

    if (opts->json) {
      std::cout << out.dump(2) << "\n";
      return 0;
    }

    fmt::print("{}: {} layers ({} Mamba2, {} attention, {} MLP)\n\n", spec->name(), numLayers,
               counts[0], counts[1], counts[2]);
    fmt::print("parent\n");
    auto row = [&](const std::string &label, double n) {
      fmt::print("  {:<24} {:>18}  {:6.2f}%\n", label, report::groupThousands(n),
                 100.0 * n / total);
    };
    row("total", total);
    row("embedding", full.embedding);
    row(fixed.tiedEmbeddings ? "lm head (tied)" : "lm head", full.lmHead);
    row("final norm", full.finalNorm);
    row(fmt::format("mamba ({} layers)", counts[0]), full.mamba);
    row(fmt::format("attention ({} layers)", counts[1]), full.attention);
    row(fmt::format("mlp ({} layers)", counts[2]), full.mlp);
    row("all but embedding/head", total - full.embedding - full.lmHead);

    if (spec->has_elastic()) {
      fmt::print("\nelastic choices (the parent with one axis changed)\n");
      fmt::print("  {:<22} {:>8} {:>18} {:>8}\n", "axis", "choice", "params", "ratio");
      for (const auto &c : choicesJson) {
        std::string axis = c["axis"];
        std::string choice = axis == "depth" ? fmt::format("-{}", c["choice"].get<int64_t>())
                                             : std::to_string(c["choice"].get<int64_t>());
        double n = c["params"].get<double>();
        fmt::print("  {:<22} {:>8} {:>18} {:>8.4f}\n", axis, choice, report::groupThousands(n),
                   n / total);
      }
      if (e.max_dropped_layers() > 0)
        fmt::print("  (depth -k drops k layers; until an importance ranking exists, the last k)\n");
      fmt::print("\nbudgets\n");
      fmt::print("  {:<22} {:>8} {:>18}\n", "name", "fraction", "target params");
      for (const Budget &b : e.budgets())
        fmt::print("  {:<22} {:>8.3f} {:>18}\n", b.name(), b.fraction(),
                   report::groupThousands(b.fraction() * total));
    }
    if (opts->budgetTable && !spec->has_elastic())
      fmt::print("\nbudget table: none (a dense spec has no budgets)\n");
    if (opts->budgetTable && spec->has_elastic()) {
      fmt::print(
          "\nbudget table: the homogeneous configuration closest to each target\n"
          "  (dropped layers are the last ones; the trained router makes the real choice)\n");
      fmt::print("  {:<10} {:>7} {:>7} {:>5} {:>8} {:>8} {:>8} {:>18} {:>7}\n", "name", "hidden",
                 "ffn", "attn", "mamba_h", "mamba_p", "dropped", "params", "ratio");
      for (size_t i = 0; i < closest.size(); ++i) {
        const Configuration &c = closest[i];
        fmt::print("  {:<10} {:>7} {:>7} {:>5} {:>8} {:>8} {:>8} {:>18} {:>7.4f}\n",
                   e.budgets(int(i)).name(), c.widths[0], c.widths[1], c.widths[2], c.widths[3],
                   c.widths[4], c.dropped, report::groupThousands(c.params), c.params / total);
      }
    }
    if (custom) {
      const auto &c = out["configuration"];
      double n = c["total"].get<double>();
      fmt::print("\nconfiguration{}{}\n",
                 opts->set.empty() ? "" : fmt::format(" --set {}", opts->set),
                 opts->dropLayers ? fmt::format(" --drop-layers {} (the last {})", opts->dropLayers,
                                                opts->dropLayers)
                                  : "");
      fmt::print("  {:<24} {:>18}  {:6.4f} of the parent\n", "total", report::groupThousands(n),
                 n / total);
      fmt::print("  {:<24} {:>18}\n", "mamba", report::groupThousands(c["mamba"].get<double>()));
      fmt::print("  {:<24} {:>18}\n", "attention",
                 report::groupThousands(c["attention"].get<double>()));
      fmt::print("  {:<24} {:>18}\n", "mlp", report::groupThousands(c["mlp"].get<double>()));
    }
    return 0;
  };
}
