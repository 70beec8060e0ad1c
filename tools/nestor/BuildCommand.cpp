//===- BuildCommand.cpp - `nestor build` -----------------------------------===//
//
// An inference executable for one budget of a finished run: the run is sliced at the budget
// (as `nestor slice` does), the dense model's decode step is compiled and attached to the
// runtime executable (nestor-run), and the weights go beside it (nestor/Build.h).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "SlicedRun.h"

#include "nestor/Build.h"
#include "nestor/Report.h"

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <chrono>
#include <iostream>

using namespace nestor;

namespace {

struct BuildCommandOptions {
  std::string runDir, budget, output, runtime;
  int64_t context = build::BuildOptions().context;
  int64_t prefillChunk = build::BuildOptions().prefillChunk;
  bool force = false;
  ckpt::WeightPolicy weights;
};

} // namespace

nestor::cli::Action nestor::cli::addBuildCommand(CLI::App &app) {
  auto opts = std::make_shared<BuildCommandOptions>();
  app.add_option("RUN", opts->runDir, "A finished `nestor train` run folder")->required();
  app.add_option("--budget", opts->budget, "The budget to build (a name from the spec)")
      ->required();
  app.add_option("-o,--output", opts->output,
                 "The executable to write (its weights go to OUTPUT.safetensors)")
      ->required();
  app.add_option("--context", opts->context,
                 "Tokens the executable serves: its KV caches' length (prompt with BOS plus "
                 "generated tokens); only memory grows with it")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--runtime", opts->runtime,
                 "The runtime executable to attach the program to (default: nestor-run beside "
                 "nestor)");
  app.add_flag("--force", opts->force,
               "Replace an executable (and its weights) that nestor build wrote earlier at -o");
  addPrefillChunkOption(app, opts->prefillChunk);
  addWeightPolicyFlags(app, opts->weights);
  return [opts]() -> int {
    auto t0 = std::chrono::steady_clock::now();
    int exitCode = kBadInput;
    auto sliced = sliceRun(opts->runDir, opts->budget, opts->weights, exitCode);
    if (!sliced)
      return reportError(sliced.takeError(), exitCode);
    llvm::StringRef parent = llvm::sys::path::parent_path(opts->output);
    if (!parent.empty())
      if (std::error_code ec = llvm::sys::fs::create_directories(parent))
        return reportError(
            llvm::createStringError("%s: %s", parent.str().c_str(), ec.message().c_str()));
    build::BuildOptions options;
    options.runtime = opts->runtime;
    options.context = opts->context;
    options.prefillChunk = opts->prefillChunk;
    options.force = opts->force;
    options.inputs = {opts->runDir};
    if (llvm::Error err =
            build::buildExecutable(sliced->sliced.spec, sliced->weights, opts->output, options))
      return reportError(std::move(err), 1);
    double params = spec::countParams(spec::fixedSizes(sliced->sliced.spec),
                                      spec::parentSizes(sliced->sliced.spec))
                        .total();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << fmt::format("{} at budget {}: {} parameters, pattern {}\n", sliced->parent.name(),
                             opts->budget, report::groupThousands(params),
                             sliced->sliced.spec.architecture().hybrid_override_pattern());
    std::cout << fmt::format("  wrote {} and {}.safetensors in {:.1f} s; run: {} --prompt TEXT "
                             "[--max-tokens N]\n",
                             opts->output, opts->output, seconds, opts->output);
    std::cout << fmt::format("  the runtime with the compiled decode step and prefill attached "
                             "(context {} tokens); runs on the CPU\n",
                             opts->context);
    return 0;
  };
}
