//===- ParamsCommand.cpp - `nestor params` ---------------------------------===//
//
// Parameter counts of the parent, of each choice of each elastic axis, of each budget's target,
// and of an explicit configuration given on the command line, all from the one closed-form
// count in nestor/ParamCount.h.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/ParamCount.h"
#include "nestor/Spec.h"

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

using namespace nestor;
using namespace nestor::spec;

namespace {

struct ParamsOptions {
  std::string specPath;
  std::string set;
  int64_t dropLayers = 0;
  bool json = false;
};

/// 12310001152 -> "12,310,001,152" (independent of the user's locale).
std::string grouped(double value) {
  std::string digits = std::to_string(std::llround(value));
  std::string out;
  size_t lead = digits[0] == '-' ? 1 : 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > lead && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

/// Counts are integers for integral sizes; keep them integers in JSON.
nlohmann::ordered_json number(double n) {
  if (n == std::round(n) && std::abs(n) < 9e15)
    return static_cast<int64_t>(n);
  return n;
}

/// Applies "key=value,key=value" to `sizes` (every layer of the key's type).
llvm::Error applySet(llvm::StringRef text, const ModelSpec &spec, ModelSizes<double> &sizes) {
  const Architecture &a = spec.architecture();
  llvm::SmallVector<llvm::StringRef> items;
  text.split(items, ',', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef item : items) {
    auto [key, valueText] = item.split('=');
    key = key.trim(), valueText = valueText.trim();
    int64_t value = 0;
    if (valueText.getAsInteger(10, value) || value <= 0)
      return llvm::createStringError(
          ("--set " + item + ": the value must be a positive integer").str());
    auto check = [&](int64_t parent, int64_t groups, const char *groupName) -> llvm::Error {
      if (value > parent)
        return llvm::createStringError(
            llvm::formatv("--set {0}: {1} is larger than the parent's {2}", key, value, parent)
                .str());
      if (groups > 1 && value % groups != 0)
        return llvm::createStringError(
            llvm::formatv("--set {0}: {1} is not a multiple of {2} ({3})", key, value, groupName,
                          groups)
                .str());
      return llvm::Error::success();
    };
    llvm::Error err = llvm::Error::success();
    if (key == "hidden_size") {
      err = check(a.hidden_size(), 1, "");
      sizes.hidden = double(value);
    } else if (key == "intermediate_size") {
      err = check(a.intermediate_size(), 1, "");
      for (auto &l : sizes.layers)
        l.ffn = double(value);
    } else if (key == "num_attention_heads") {
      err = check(a.num_attention_heads(), a.num_key_value_heads(), "num_key_value_heads");
      for (auto &l : sizes.layers)
        l.attnHeads = double(value);
    } else if (key == "mamba_num_heads") {
      err = check(a.mamba_num_heads(), a.n_groups(), "n_groups");
      for (auto &l : sizes.layers)
        l.mambaHeads = double(value);
    } else if (key == "mamba_head_dim") {
      err = check(a.mamba_head_dim(), 1, "");
      for (auto &l : sizes.layers)
        l.mambaHeadDim = double(value);
    } else {
      return llvm::createStringError(
          ("--set: unknown key '" + key +
           "' (expected hidden_size, intermediate_size, num_attention_heads, mamba_num_heads, "
           "mamba_head_dim)")
              .str());
    }
    if (err)
      return err;
  }
  return llvm::Error::success();
}

/// Drops the last `k` layers: without an importance ranking (nestor train computes one), the
/// last layers stand in for the least important.
void dropLast(ModelSizes<double> &sizes, int64_t k) {
  for (int64_t i = 0; i < k; ++i)
    sizes.layers[sizes.layers.size() - 1 - i].keep = 0.0;
}

} // namespace

cli::Action cli::addParamsCommand(CLI::App &app) {
  auto opts = std::make_shared<ParamsOptions>();
  app.add_option("SPEC", opts->specPath, "Model spec (.pbtxt)")->required();
  app.add_option("--set", opts->set,
                 "Explicit configuration to count, e.g. hidden_size=3840,mamba_num_heads=96");
  app.add_option("--drop-layers", opts->dropLayers,
                 "Drop this many layers in the explicit configuration (the last ones)")
      ->check(CLI::NonNegativeNumber);
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

    nlohmann::ordered_json out;
    out["name"] = spec->name();
    out["layers"] = {
        {"total", numLayers}, {"mamba", counts[0]}, {"attention", counts[1]}, {"mlp", counts[2]}};
    out["parent"] = {{"total", number(total)},         {"embedding", number(full.embedding)},
                     {"lm_head", number(full.lmHead)}, {"final_norm", number(full.finalNorm)},
                     {"mamba", number(full.mamba)},    {"attention", number(full.attention)},
                     {"mlp", number(full.mlp)}};

    // Each choice of each axis: the parent with only that axis changed.
    const Elastic &e = spec->elastic();
    struct Axis {
      const char *name;
      const AxisChoices &choices;
      double LayerSizes<double>::*field; // nullptr: hidden
    } axes[] = {{"hidden_size", e.hidden_size(), nullptr},
                {"intermediate_size", e.intermediate_size(), &LayerSizes<double>::ffn},
                {"num_attention_heads", e.num_attention_heads(), &LayerSizes<double>::attnHeads},
                {"mamba_num_heads", e.mamba_num_heads(), &LayerSizes<double>::mambaHeads},
                {"mamba_head_dim", e.mamba_head_dim(), &LayerSizes<double>::mambaHeadDim}};
    nlohmann::ordered_json axesJson = nlohmann::ordered_json::array();
    for (const Axis &axis : axes) {
      for (int64_t k : axis.choices.choices()) {
        ModelSizes<double> s = parent;
        if (!axis.field)
          s.hidden = double(k);
        else
          for (auto &l : s.layers)
            l.*axis.field = double(k);
        double n = countParams(fixed, s).total();
        axesJson.push_back({{"axis", axis.name}, {"choice", k}, {"params", number(n)}});
      }
    }
    for (int64_t k = 1; k <= e.max_dropped_layers(); ++k) {
      ModelSizes<double> s = parent;
      dropLast(s, k);
      axesJson.push_back(
          {{"axis", "depth"}, {"choice", k}, {"params", number(countParams(fixed, s).total())}});
    }
    out["choices"] = axesJson;
    nlohmann::ordered_json budgets = nlohmann::ordered_json::array();
    for (const Budget &b : e.budgets())
      budgets.push_back({{"name", b.name()},
                         {"fraction", b.fraction()},
                         {"target", std::llround(b.fraction() * total)}});
    out["budgets"] = budgets;

    bool custom = !opts->set.empty() || opts->dropLayers > 0;
    if (custom) {
      ModelSizes<double> s = parent;
      if (llvm::Error err = applySet(opts->set, *spec, s))
        return reportError(std::move(err));
      if (opts->dropLayers >= numLayers)
        return reportError(llvm::createStringError(
            llvm::formatv("--drop-layers {0}: the model has only {1} layers", opts->dropLayers,
                          numLayers)
                .str()));
      dropLast(s, opts->dropLayers);
      ParamBreakdown<double> c = countParams(fixed, s);
      out["configuration"] = {{"set", opts->set},
                              {"dropped_layers", opts->dropLayers},
                              {"total", number(c.total())},
                              {"embedding", number(c.embedding)},
                              {"lm_head", number(c.lmHead)},
                              {"mamba", number(c.mamba)},
                              {"attention", number(c.attention)},
                              {"mlp", number(c.mlp)}};
    }

    if (opts->json) {
      std::cout << out.dump(2) << "\n";
      return 0;
    }

    fmt::print("{}: {} layers ({} Mamba2, {} attention, {} MLP)\n\n", spec->name(), numLayers,
               counts[0], counts[1], counts[2]);
    fmt::print("parent\n");
    auto row = [&](const std::string &label, double n) {
      fmt::print("  {:<24} {:>18}  {:6.2f}%\n", label, grouped(n), 100.0 * n / total);
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
      for (const auto &c : axesJson) {
        std::string axis = c["axis"];
        std::string choice = axis == "depth" ? fmt::format("-{}", c["choice"].get<int64_t>())
                                             : std::to_string(c["choice"].get<int64_t>());
        double n = c["params"].get<double>();
        fmt::print("  {:<22} {:>8} {:>18} {:>8.4f}\n", axis, choice, grouped(n), n / total);
      }
      if (e.max_dropped_layers() > 0)
        fmt::print("  (depth -k drops k layers; until an importance ranking exists, the last k)\n");
      fmt::print("\nbudgets\n");
      fmt::print("  {:<22} {:>8} {:>18}\n", "name", "fraction", "target params");
      for (const Budget &b : e.budgets())
        fmt::print("  {:<22} {:>8.3f} {:>18}\n", b.name(), b.fraction(),
                   grouped(b.fraction() * total));
    }
    if (custom) {
      const auto &c = out["configuration"];
      double n = c["total"].get<double>();
      fmt::print("\nconfiguration{}{}\n",
                 opts->set.empty() ? "" : fmt::format(" --set {}", opts->set),
                 opts->dropLayers ? fmt::format(" --drop-layers {} (the last {})", opts->dropLayers,
                                                opts->dropLayers)
                                  : "");
      fmt::print("  {:<24} {:>18}  {:6.4f} of the parent\n", "total", grouped(n), n / total);
      fmt::print("  {:<24} {:>18}\n", "mamba", grouped(c["mamba"].get<double>()));
      fmt::print("  {:<24} {:>18}\n", "attention", grouped(c["attention"].get<double>()));
      fmt::print("  {:<24} {:>18}\n", "mlp", grouped(c["mlp"].get<double>()));
    }
    return 0;
  };
}
