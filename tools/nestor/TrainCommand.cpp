//===- TrainCommand.cpp - `nestor train` -----------------------------------===//
//
// Runs the whole pipeline (nestor/Trainer.h) on a spec and its data into RUN/, showing a
// progress bar on a terminal (plain lines otherwise), and prints the final table: parameters,
// validation loss and exact-match accuracy of the parent and of every budget, next to the same
// sub-network cut from the parent without elastic training.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/Report.h"

#include "nestor/Checkpoint.h"
#include "nestor/Data.h"
#include "nestor/Trainer.h"
#ifdef NESTOR_HAVE_CUDA
#include "lib/codegen/cuda/KernelCache.h"
#include "nestor/DeviceProgram.h"
#endif

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <atomic>
#include <csignal>
#include <iostream>
#include <unistd.h>

using namespace nestor;
using namespace nestor::train;

namespace {

/// Set by SIGINT/SIGTERM: the run checkpoints after the step in flight and stops.
std::atomic<bool> interrupted{false};
extern "C" void onInterrupt(int) { interrupted.store(true); }

struct TrainOptions {
  std::string specPath, outDir, parentPath;
  bool resume = false;
  std::string device = "cpu";
  ckpt::WeightPolicy weights;
};

std::string duration(double seconds) {
  auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600)
    return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
  if (s >= 60)
    return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

/// A progress bar on a terminal, a line every few steps otherwise (logs stay readable).
class Progressbar : public Listener {
public:
  Progressbar(const spec::ModelSpec &spec) : spec(spec), tty(isatty(2)) {}
  void onStep(const StepReport &r, const Progress &p) override {
    std::string budget = r.phase == "parent" ? "parent" : spec.elastic().budgets(r.budget).name();
    std::string text = fmt::format(
        "{:<7} {:>5}/{:<5} budget {:<6} loss {:7.4f}  {:>6.0f} tok/s  ETA {}", r.phase,
        p.stepInPhase + 1, p.phaseSteps, budget, r.loss, r.tokensPerSecond, duration(p.etaSeconds));
    bool phaseEnd = p.stepInPhase + 1 == p.phaseSteps;
    if (tty) {
      constexpr int kWidth = 24;
      int filled =
          static_cast<int>(kWidth * double(p.done) / double(std::max<int64_t>(p.total, 1)));
      std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
      std::cerr << "\r\033[K[" << bar << "] " << text << (phaseEnd ? "\n" : "") << std::flush;
    } else if ((p.stepInPhase + 1) % 20 == 0 || phaseEnd) {
      std::cerr << fmt::format("[{}/{}] ", p.done, p.total) << text << "\n";
    }
  }
  void onMessage(const std::string &m) override { std::cerr << m << "\n"; }

private:
  const spec::ModelSpec &spec;
  bool tty;
};

std::string percent(const std::optional<double> &v) {
  return v ? fmt::format("{:.1f}%", 100 * *v) : "-";
}

void printTable(const RunResult &run, bool elastic) {
  std::cout << fmt::format("\n{:<8} {:>12} {:>7} {:>9} {:>7} {:>7}", "model", "params", "share",
                           "val loss", "solved", "tokens");
  if (elastic)
    std::cout << fmt::format("  | {:>9} {:>7} {:>7}", "cut: loss", "solved", "tokens");
  std::cout << "\n";
  for (const ModelEval &e : run.evals) {
    std::cout << fmt::format("{:<8} {:>12} {:>6.1f}% {:>9.4f} {:>7} {:>7}", e.name,
                             report::groupThousands(e.params), 100 * e.fraction, e.validationLoss,
                             percent(e.accuracy), percent(e.tokenAccuracy));
    if (elastic && e.baselineLoss)
      std::cout << fmt::format("  | {:>9.4f} {:>7} {:>7}", *e.baselineLoss,
                               percent(e.baselineAccuracy), percent(e.baselineTokenAccuracy));
    std::cout << "\n";
  }
  std::cout << "(solved: held-out problems whose whole completion, working and answer, is the "
               "model's greedy choice; tokens: completion tokens that are)\n";
  if (elastic)
    std::cout << "(cut: the same sub-network cut from the parent without elastic training)\n";
}

} // namespace

nestor::cli::Action nestor::cli::addTrainCommand(CLI::App &app) {
  auto opts = std::make_shared<TrainOptions>();
  app.add_option("SPEC", opts->specPath,
                 "Model spec (.pbtxt); without an elastic section, a dense model is trained")
      ->required();
  app.add_option("--out", opts->outDir,
                 "Run folder: checkpoints, metrics.jsonl, summary.json, report.html")
      ->required();
  app.add_flag("--resume", opts->resume, "Continue the run in --out from its last checkpoint");
  app.add_option("--parent", opts->parentPath,
                 "Start from this parent (safetensors, the parent's tensor names) instead of "
                 "training one");
  app.add_option("--device", opts->device,
                 "Where the train steps run: cpu, or cuda (the generated CUDA kernels on GPU 0; "
                 "the optimizer and the importance ranking stay on the CPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  addWeightPolicyFlags(app, opts->weights);
  return [opts]() -> int {
    auto spec = spec::loadSpecFile(opts->specPath);
    if (!spec)
      return reportError(spec.takeError());
    // The run folder keeps a copy of the spec (for --resume and nestor slice), so the text
    // files it names must be found from there too: make their paths absolute.
    for (std::string &file : *spec->mutable_data()->mutable_text_files()) {
      llvm::SmallString<256> path(spec::resolveSpecRelativePath(opts->specPath, file));
      llvm::sys::fs::make_absolute(path);
      llvm::sys::path::remove_dots(path, /*remove_dot_dot=*/true);
      file = std::string(path);
    }
    const spec::Training &tr = spec->training();
    if (spec->has_elastic() && tr.stages_size() == 0)
      return reportError(llvm::createStringError(
          "%s: training.stages: an elastic spec needs at least one stage to train",
          opts->specPath.c_str()));
    if (!spec->has_elastic() && tr.parent().steps() <= 0 && opts->parentPath.empty())
      return reportError(llvm::createStringError(
          "%s: training.parent.steps: a dense spec trains its parent phase only; it has none",
          opts->specPath.c_str()));
    if (!spec->has_elastic() &&
        (tr.parent().batch_size() <= 0 || tr.parent().sequence_length() <= 0))
      return reportError(llvm::createStringError(
          "%s: training.parent: a dense spec needs batch_size and sequence_length",
          opts->specPath.c_str()));
    auto source = data::makeDataSource(*spec, llvm::sys::path::parent_path(opts->specPath));
    if (!source)
      return reportError(source.takeError());
    std::optional<TensorMap> parent;
    if (!opts->parentPath.empty()) {
      auto w = ckpt::loadModelWeights(opts->parentPath, train::parentSpec(*spec), opts->weights);
      if (!w)
        return reportError(w.takeError());
      parent = std::move(*w);
    }
    if (opts->resume && !llvm::sys::fs::exists(opts->outDir + "/state.json"))
      return reportError(
          llvm::createStringError("%s: no run to resume (no state.json)", opts->outDir.c_str()));

    RunOptions ro;
#ifdef NESTOR_HAVE_CUDA
    std::unique_ptr<runtime::KernelDevice> device;
    if (opts->device == "cuda") {
      auto d = runtime::openCudaKernelDevice(0, cuda::defaultKernelCacheDirectory());
      if (!d)
        return reportError(d.takeError(), 1);
      device = std::move(*d);
      std::cerr << "nestor train: device " << device->description() << "\n";
      ro.device = device.get();
    }
#else
    if (opts->device == "cuda")
      return reportError(llvm::createStringError(
          "this nestor was built without the CUDA toolkit (NVRTC): --device cuda is unavailable"));
#endif
    ro.runDir = opts->outDir;
    ro.resume = opts->resume;
    ro.inputs = {opts->specPath};
    if (!opts->parentPath.empty())
      ro.inputs.push_back(opts->parentPath);
    ro.initialParent = parent ? &*parent : nullptr;
    const data::DataSource &src = **source;
    ro.problems = [&src](Difficulty d, int64_t n) { return src.heldOutProblems(d, n); };
    std::cerr << "nestor train: " << spec->name() << ", data: " << src.describe() << "\n";
    Progressbar bar(*spec);
    mlir::MLIRContext context;
    ro.interrupt = &interrupted;
    std::signal(SIGINT, onInterrupt);
    std::signal(SIGTERM, onInterrupt);
    auto run = runPipeline(context, *spec, src.batchFn(), bar, ro);
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    if (!run)
      return reportError(run.takeError(), 1);
    if (run->interrupted) {
      std::cerr << "\nnestor train: interrupted; the run is checkpointed, and `nestor train "
                << opts->specPath << " --out " << opts->outDir << " --resume` continues it\n";
      return 130; // the shell's code for a run stopped by SIGINT
    }
    printTable(*run, spec->has_elastic());
    std::cout << "\nrun folder: " << opts->outDir << " (report: " << opts->outDir
              << "/report.html)\n";
    return 0;
  };
}
