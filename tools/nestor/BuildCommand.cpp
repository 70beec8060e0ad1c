//===- BuildCommand.cpp - `nestor build` -----------------------------------===//
//
// A standalone inference executable for one budget of a finished run: the run is sliced at the
// budget (as `nestor slice` does), and the dense model is generated as C++ with its sizes as
// compile-time constants and compiled; the weights go beside the executable.
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
  std::string runDir, budget, output, compiler, cudaArch = build::BuildOptions().cudaArch;
  bool keepSource = false, noCuda = false;
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
  app.add_option("--cxx", opts->compiler, "C++ compiler (default: $CXX, else c++)");
  app.add_flag("--keep-source", opts->keepSource, "Also write the generated OUTPUT.cpp");
  app.add_flag("--no-cuda", opts->noCuda,
               "CPU only: leave out the GPU kernels (PTX, compiled here with NVRTC)");
  app.add_option("--cuda-arch", opts->cudaArch,
                 "The GPU kernels' architecture: the program runs on GPUs of this one and every "
                 "later one")
      ->check([](const std::string &arch) {
        llvm::StringRef a(arch);
        unsigned n = 0;
        return (a.consume_front("sm_") || a.consume_front("compute_")) && !a.empty() &&
                       !a.consumeInteger(10, n) && (a.empty() || a == "a" || a == "f")
                   ? std::string()
                   : "expected sm_XY (sm_80, sm_90, ...), got '" + arch + "'";
      })
      ->capture_default_str();
  return [opts]() -> int {
    auto t0 = std::chrono::steady_clock::now();
    int exitCode = kBadInput;
    auto sliced = sliceRun(opts->runDir, opts->budget, exitCode);
    if (!sliced)
      return reportError(sliced.takeError(), exitCode);
    llvm::StringRef parent = llvm::sys::path::parent_path(opts->output);
    if (!parent.empty())
      if (std::error_code ec = llvm::sys::fs::create_directories(parent))
        return reportError(
            llvm::createStringError("%s: %s", parent.str().c_str(), ec.message().c_str()));
    build::BuildOptions options;
    options.compiler = opts->compiler;
    options.keepSource = opts->keepSource;
    options.cuda = !opts->noCuda;
    options.cudaArch = opts->cudaArch;
    if (llvm::Error err =
            build::buildBinary(sliced->sliced.spec, sliced->weights, opts->output, options))
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
    if (opts->noCuda)
      std::cout << "  CPU only (--no-cuda)\n";
    else if (!build::cudaAvailable())
      std::cout << "  CPU only: this nestor was built without the CUDA toolkit (NVRTC)\n";
    else
      std::cout << fmt::format("  runs on a CUDA GPU ({} or later) where the driver finds one, "
                               "else on the CPU (--device)\n",
                               opts->cudaArch);
    return 0;
  };
}
