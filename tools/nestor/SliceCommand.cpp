//===- SliceCommand.cpp - `nestor slice` -----------------------------------===//
//
// Zero-shot slicing of a finished run (METHOD.md §8): the elastic-slice pass evaluates the
// routers at one budget and builds the dense graph (model.mlir) with its slice map; the map
// gathers the kept prefixes into a dense checkpoint; and a dense spec (no elastic section)
// that every other command accepts describes the same model.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "SlicedRun.h"

#include "nestor/Checkpoint.h"
#include "nestor/Report.h"
#include "nestor/Slice.h"
#include "nestor/Trainer.h"

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "google/protobuf/text_format.h"
#include "nlohmann/json.hpp"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"

#include <chrono>
#include <iostream>

using namespace nestor;

namespace {

struct SliceOptions {
  std::string runDir, budget, outDir;
  bool force = false;
  ckpt::WeightPolicy weights;
};

/// The kind of output folder `nestor slice` writes (ckpt::claimOutputFolder).
constexpr llvm::StringLiteral kSliceKind = "slice";

/// Index lists as runs [start, length] (a prefix is one run), to keep slice.json small.
nlohmann::json runs(const std::vector<int64_t> &indices) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < indices.size();) {
    size_t j = i + 1;
    while (j < indices.size() && indices[j] == indices[j - 1] + 1)
      ++j;
    out.push_back({indices[i], static_cast<int64_t>(j - i)});
    i = j;
  }
  return out;
}

} // namespace

nestor::cli::Action nestor::cli::addSliceCommand(CLI::App &app) {
  auto opts = std::make_shared<SliceOptions>();
  app.add_option("RUN", opts->runDir, "A finished `nestor train` run folder")->required();
  app.add_option("--budget", opts->budget, "The budget to cut (a name from the spec)")->required();
  app.add_option("--out", opts->outDir,
                 "Folder for spec.pbtxt, model.safetensors, model.mlir, slice.json")
      ->required();
  app.add_flag("--force", opts->force, "Replace an earlier slice in --out");
  addWeightPolicyFlags(app, opts->weights);
  return [opts]() -> int {
    auto t0 = std::chrono::steady_clock::now();
    std::string run = opts->runDir;
    std::vector<std::string> inputs = {run};
    if (llvm::Error err = ckpt::checkOutputFolder(opts->outDir, kSliceKind, inputs, opts->force))
      return reportError(std::move(err));
    int exitCode = kBadInput;
    auto result = sliceRun(run, opts->budget, opts->weights, exitCode);
    if (!result)
      return reportError(result.takeError(), exitCode);
    const spec::ModelSpec *spec = &result->parent;
    slice::Sliced *sliced = &result->sliced;
    const train::RouterChoice &choice = result->choice;
    const train::TensorMap *dense = &result->weights;

    if (llvm::Error err =
            ckpt::claimOutputFolder(opts->outDir, kSliceKind, "nestor slice", inputs, opts->force))
      return reportError(std::move(err));
    std::string text;
    google::protobuf::TextFormat::PrintToString(sliced->spec, &text);
    text = "# The dense model cut from " + run + " at budget '" + opts->budget +
           "' by `nestor slice`.\n" + text;
    nlohmann::ordered_json map = nlohmann::ordered_json::object();
    for (const auto &[name, s] : sliced->map) {
      nlohmann::json dims = nlohmann::json::array();
      for (const auto &idx : s.indices)
        dims.push_back(runs(idx));
      map[name] = {{"source", s.source}, {"runs", dims}};
    }
    nlohmann::ordered_json info = {{"run", run},
                                   {"budget", opts->budget},
                                   {"choice", choice.indices},
                                   {"kept_layers", sliced->keptLayers},
                                   {"tensors", map}};
    if (llvm::Error err = ckpt::writeFileAtomic(opts->outDir + "/spec.pbtxt", text))
      return reportError(std::move(err), 1);
    if (llvm::Error err = ckpt::writeFileAtomic(opts->outDir + "/slice.json", info.dump(1) + "\n"))
      return reportError(std::move(err), 1);
    if (llvm::Error err = ckpt::writeFileAtomic(opts->outDir + "/model.mlir", result->graph))
      return reportError(std::move(err), 1);
    if (llvm::Error err = ckpt::writeSafetensors(opts->outDir + "/model.safetensors", *dense,
                                                 {{"format", "nestor"}, {"budget", opts->budget}}))
      return reportError(std::move(err), 1);

    const spec::Architecture &a = sliced->spec.architecture();
    double params =
        spec::countParams(spec::fixedSizes(sliced->spec), spec::parentSizes(sliced->spec)).total();
    double parent = spec::countParams(spec::fixedSizes(*spec), spec::parentSizes(*spec)).total();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << fmt::format("{} at budget {}: {} parameters ({:.1f}% of the parent)\n",
                             spec->name(), opts->budget, report::groupThousands(params),
                             100 * params / parent);
    std::cout << fmt::format("  pattern {} ({} of {} layers), hidden {}, ffn {}, attention "
                             "heads {}, mamba heads {} x {}\n",
                             a.hybrid_override_pattern(), sliced->keptLayers.size(),
                             spec->architecture().hybrid_override_pattern().size(), a.hidden_size(),
                             a.intermediate_size(), a.num_attention_heads(), a.mamba_num_heads(),
                             a.mamba_head_dim());
    std::cout << fmt::format(
        "  wrote {}/spec.pbtxt, model.safetensors, model.mlir, slice.json in {:.2f} s\n",
        opts->outDir, seconds);
    return 0;
  };
}
