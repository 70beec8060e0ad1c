//===- ExportCommand.cpp - `nestor export` and `nestor import-hf` ----------===//
//
// Standard formats for the dense models `nestor slice` writes: a Hugging Face NemotronH folder
// (config.json + model.safetensors) out, and one back in as a spec and checkpoint. The
// conversion and the config format are documented in nestor/HuggingFace.h.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/Checkpoint.h"
#include "nestor/HuggingFace.h"

#include "CLI/CLI.hpp"
#include "fmt/format.h"

#include <chrono>
#include <iostream>

using namespace nestor;

namespace {

struct ExportOptions {
  std::string denseDir, format, outDir;
  bool force = false;
  ckpt::WeightPolicy weights;
};

struct ImportOptions {
  std::string hfDir, outDir;
  bool force = false;
  ckpt::WeightPolicy weights;
};

int64_t parameterCount(const train::TensorMap &tensors) {
  int64_t total = 0;
  for (const auto &[name, tensor] : tensors)
    total += static_cast<int64_t>(tensor.data.size());
  return total;
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

nestor::cli::Action nestor::cli::addExportCommand(CLI::App &app) {
  auto opts = std::make_shared<ExportOptions>();
  app.add_option("DIR", opts->denseDir,
                 "A dense model folder (spec.pbtxt, model.safetensors), e.g. from `nestor slice`")
      ->required();
  app.add_option("--format", opts->format,
                 "The format to write: hf (a Hugging Face NemotronH folder: config.json, "
                 "model.safetensors)")
      ->required()
      ->check(CLI::IsMember({"hf"}));
  app.add_option("--out", opts->outDir, "Folder for the exported model")->required();
  app.add_flag("--force", opts->force, "Replace an earlier export in --out");
  addWeightPolicyFlags(app, opts->weights);
  return [opts]() -> int {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> inputs = {opts->denseDir};
    if (llvm::Error err =
            ckpt::checkOutputFolder(opts->outDir, hf::kExportKind, inputs, opts->force))
      return reportError(std::move(err));
    auto model = hf::loadDenseAsHuggingFace(opts->denseDir, opts->weights);
    if (!model)
      return reportError(model.takeError());
    if (llvm::Error err = ckpt::claimOutputFolder(opts->outDir, hf::kExportKind, "nestor export",
                                                  inputs, opts->force))
      return reportError(std::move(err));
    if (llvm::Error err = hf::writeHuggingFaceFolder(*model, opts->outDir))
      return reportError(std::move(err), 1);
    std::cout << fmt::format("wrote {}/config.json, model.safetensors ({} tensors, {} "
                             "parameters) in {:.2f} s\n",
                             opts->outDir, model->tensors.size(), parameterCount(model->tensors),
                             secondsSince(t0));
    // The one case stock transformers cannot load; say so where the user will see it.
    if (model->config.find("_per_layer\"") != std::string::npos)
      std::cout << "  layers of one kind differ in size: config.json lists them per layer "
                   "(*_per_layer); stock transformers NemotronH reads only the scalar sizes, so "
                   "load it with a loader that reads the lists\n";
    return 0;
  };
}

nestor::cli::Action nestor::cli::addImportHfCommand(CLI::App &app) {
  auto opts = std::make_shared<ImportOptions>();
  app.add_option("HF_DIR", opts->hfDir,
                 "A Hugging Face NemotronH folder (config.json, model.safetensors or sharded "
                 "safetensors with model.safetensors.index.json)")
      ->required();
  app.add_option("--out", opts->outDir, "Folder for spec.pbtxt and model.safetensors")->required();
  app.add_flag("--force", opts->force, "Replace an earlier import in --out");
  addWeightPolicyFlags(app, opts->weights);
  return [opts]() -> int {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::string> inputs = {opts->hfDir};
    if (llvm::Error err =
            ckpt::checkOutputFolder(opts->outDir, hf::kImportKind, inputs, opts->force))
      return reportError(std::move(err));
    auto model = hf::loadHuggingFaceAsDense(opts->hfDir, opts->weights);
    if (!model)
      return reportError(model.takeError());
    if (llvm::Error err = ckpt::claimOutputFolder(opts->outDir, hf::kImportKind, "nestor import-hf",
                                                  inputs, opts->force))
      return reportError(std::move(err));
    if (llvm::Error err = hf::writeDenseFolder(*model, opts->outDir, opts->hfDir))
      return reportError(std::move(err), 1);
    const spec::Architecture &a = model->spec.architecture();
    std::cout << fmt::format("{}: pattern {} ({} layers{}), hidden {}, {} parameters\n",
                             model->spec.name(), a.hybrid_override_pattern(),
                             a.hybrid_override_pattern().size(),
                             a.layer_overrides_size() ? ", per-layer sizes" : "", a.hidden_size(),
                             parameterCount(model->tensors));
    std::cout << fmt::format("  wrote {}/spec.pbtxt, model.safetensors in {:.2f} s\n", opts->outDir,
                             secondsSince(t0));
    return 0;
  };
}
