//===- nestor.cpp - The Nestor driver ---------------------------------------===//
//
// One driver with subcommands (DESIGN.md, "The command line"); `--help` works on each.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "CLI/CLI.hpp"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstdlib>
#include <map>

#include <unistd.h>

using namespace nestor::cli;

void nestor::cli::addWeightPolicyFlags(CLI::App &app, ckpt::WeightPolicy &policy) {
  app.add_flag("--allow-unknown-tensors", policy.allowUnknown,
               "Drop tensors of the weights file that are not parameters of the model (default: "
               "refuse the file)");
  app.add_flag("--allow-non-finite", policy.allowNonFinite,
               "Load weights that hold NaN or infinite values (default: refuse the file, naming "
               "the tensor and index)");
}

void nestor::cli::addPrefillChunkOption(CLI::App &app, int64_t &chunk) {
  app.add_option("--prefill-chunk", chunk,
                 "Longest prompt piece one call reads: the program gets @prefill_N entry points "
                 "of N, N/16, ... tokens beside @decode_step (1: prompts token by token)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->capture_default_str();
}

int nestor::cli::reportError(llvm::Error error, int exitCode) {
  llvm::handleAllErrors(std::move(error), [&](const llvm::ErrorInfoBase &info) {
    llvm::WithColor::error(llvm::errs(), "nestor") << info.message() << "\n";
    if (info.convertToErrorCode() == std::errc::invalid_argument)
      exitCode = kBadInput;
  });
  return exitCode;
}

/// The CPU backend alternates between OpenBLAS GEMMs (OpenBLAS's own threads) and OpenMP
/// kernels many times per step. Threads of either pool that keep spinning after their work
/// steal the cores the other pool needs: OpenMP's default wait policy and OpenBLAS's default
/// thread timeout (2^28 cycles) made a tiny-spec step ~40% slower on two cores. Both libraries
/// read their settings when they load, so when the user has set neither, set them and restart
/// the process (a user's explicit setting is kept).
void preferPassiveThreads(char **argv) {
  if (std::getenv("NESTOR_NO_REEXEC"))
    return;
  bool changed = false;
  for (auto [name, value] :
       {std::pair{"OMP_WAIT_POLICY", "passive"}, std::pair{"OPENBLAS_THREAD_TIMEOUT", "4"}})
    if (!std::getenv(name)) {
      ::setenv(name, value, 1);
      changed = true;
    }
  if (!changed)
    return;
  ::setenv("NESTOR_NO_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);
  // execv only returns on failure: go on with the defaults.
}

int main(int argc, char **argv) {
  preferPassiveThreads(argv);
  llvm::InitLLVM initLLVM(argc, argv);
  CLI::App app{"Nestor: compiler and runtime for elastic hybrid Mamba2/Attention models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "nestor 0.1.0");

  std::map<CLI::App *, Action> actions;
  CLI::App *params =
      app.add_subcommand("params", "Parameter counts of the parent and of each elastic choice");
  actions[params] = addParamsCommand(*params);
  CLI::App *compile = app.add_subcommand("compile", "Run the compiler pipeline and show a stage");
  actions[compile] = addCompileCommand(*compile);
  CLI::App *bench = app.add_subcommand(
      "bench", "Train-step time per budget on the CPU backend, as ratios to the full budget");
  actions[bench] = addBenchCommand(*bench);
  CLI::App *train = app.add_subcommand(
      "train", "The whole elastic training pipeline: parent, importance, stages, evaluation");
  actions[train] = addTrainCommand(*train);
  CLI::App *report =
      app.add_subcommand("report", "Write RUN/report.html: plots and tables of a training run");
  actions[report] = addReportCommand(*report);
  CLI::App *slice = app.add_subcommand(
      "slice", "Cut a trained budget out of a run: a dense spec and checkpoint (zero-shot)");
  actions[slice] = addSliceCommand(*slice);
  CLI::App *exportCmd = app.add_subcommand(
      "export", "Write a dense model folder in a standard format (hf: a Hugging Face NemotronH "
                "folder)");
  actions[exportCmd] = addExportCommand(*exportCmd);
  CLI::App *importHf = app.add_subcommand(
      "import-hf", "Read a Hugging Face NemotronH folder into a dense spec and checkpoint");
  actions[importHf] = addImportHfCommand(*importHf);
  CLI::App *generate = app.add_subcommand(
      "generate", "Decode text from a run's budgets (one loaded checkpoint) or a dense folder");
  actions[generate] = addGenerateCommand(*generate);
  CLI::App *buildCmd = app.add_subcommand(
      "build", "An inference executable for one budget of a run (the runtime with its compiled "
               "decode step attached)");
  actions[buildCmd] = addBuildCommand(*buildCmd);
  CLI::App *devices = app.add_subcommand(
      "devices", "The CUDA devices --device cuda can use (exit 1, saying why, without one)");
  actions[devices] = addDevicesCommand(*devices);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kBadInput;
  }
  for (CLI::App *sub : app.get_subcommands())
    return actions.at(sub)();
  return kBadInput;
}
