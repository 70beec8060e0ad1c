//===- Trainer.h - The whole elastic training pipeline ----------*- C++ -*-===//
//
// METHOD.md end to end on the CPU backend: train the parent (or start from given weights), rank
// importance and permute so every budget is a prefix, train the elastic model through the
// spec's stages with the frozen parent as teacher, and evaluate the parent and every budget
// (validation loss and exact-match accuracy), next to each budget's sub-network cut from the
// parent without elastic training. A dense spec (no elastic section) trains the parent phase
// only: the baseline a budget is compared with.
//
// With a run directory the pipeline is resumable: it writes checkpoints (safetensors) and a
// state file atomically, metrics as JSON lines, and a summary, and `resume` continues from the
// last checkpoint with exactly the losses an uninterrupted run has (every random draw is a
// pure function of the seed and the step, so the state to restore is the step counter).
//
// The run directory:
//   spec.pbtxt            the spec the run was started with (a resume must match it)
//   state.json            phase, step, checkpoint folder, metrics length, schedules, seed
//   ckpt-<phase>-<step>/  model.safetensors (weights, routers), optimizer.safetensors (AdamW
//                         moments, "exp_avg.<name>" and "exp_avg_sq.<name>")
//   importance.json       the rankings (METHOD.md §3)
//   parent.safetensors    the trained parent, permuted by importance: the teacher
//   model.safetensors     the final model (elastic: with its routers)
//   metrics.jsonl         one JSON object per step, evaluation and message (nestor/Report.h)
//   summary.json          the final table and each budget's architecture (nestor/Report.h)
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TRAINER_H
#define NESTOR_TRAINER_H

#include "nestor/Data.h"
#include "nestor/Importance.h"
#include "nestor/ParamCount.h"
#include "nestor/Train.h"

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace nestor::train {

/// Where a step stands in the run, for progress displays.
struct Progress {
  std::string phase;       // "parent" or the stage name
  int64_t stepInPhase = 0; // this step, counted from 0 within the phase
  int64_t phaseSteps = 0;
  int64_t done = 0, total = 0; // optimisation steps of the whole run (after this one)
  double etaSeconds = 0;       // from the mean step time of this process so far
};

/// What a run reports as it goes.
struct Listener {
  virtual ~Listener() = default;
  virtual void onStep(const StepReport &report, const Progress &progress) {}
  virtual void onMessage(const std::string &message) {}
};

/// One row of the final table: the parent or a budget, evaluated at the last stage's batch
/// shape (a dense spec: the parent phase's) on the same validation batches for every row.
/// The validation loss is the mean token cross-entropy over `eval_batches` held-out batches of
/// each difficulty the run trains on (its stages'; both for a dense spec).
struct ModelEval {
  std::string name;
  double fraction = 1; // of the parent's parameters
  double params = 0;
  double validationLoss = 0;
  /// On held-out problems (none for text data): the share solved exactly (every completion
  /// token the argmax, what greedy decoding would write) and the share of completion tokens
  /// that are the argmax.
  std::optional<double> accuracy, tokenAccuracy;
  /// Budgets only: the same sub-network cut from the parent without elastic training.
  std::optional<double> baselineLoss, baselineAccuracy, baselineTokenAccuracy;
  spec::ModelSizes<double> sizes; // the architecture (argmax router choice)
};

struct RunResult {
  TensorMap parent;  // the trained (and, for elastic specs, permuted) parent: the teacher
  TensorMap elastic; // the elastic model with its routers (empty for dense specs)
  Importance importance;
  std::vector<ModelEval> evals; // the parent first, then every budget in spec order
  /// The run stopped early (RunOptions::interrupt or stopAfterSteps) after a checkpoint;
  /// evals are empty and --resume continues it.
  bool interrupted = false;
};

struct RunOptions {
  /// Checkpoints, metrics and summary go here; empty: nothing is written (and no resume).
  std::string runDir;
  /// Continue the run in `runDir` from its last checkpoint. The state file, the checkpoint it
  /// names and every file the rest of the run reads are checked first; an inconsistent run is
  /// refused, saying what is wrong, and nothing is removed.
  bool resume = false;
  /// Files the run reads (the spec, --parent): `runDir` must not be, nor hold, one of them.
  std::vector<std::string> inputs;
  /// Given parent weights: the parent phase is skipped.
  const TensorMap *initialParent = nullptr;
  /// Held-out problems for exact-match accuracy (training.eval_problems of each difficulty the
  /// stages use); unset or returning none: no accuracy.
  std::function<std::vector<data::Problem>(Difficulty, int64_t)> problems;
  /// Stop (successfully, as if killed after a checkpoint) once this many optimisation steps
  /// have run in this process; -1: run to the end. For tests of resumption.
  int64_t stopAfterSteps = -1;
  /// When set (e.g. by a SIGINT handler), the run checkpoints after the current step and
  /// stops; RunResult::interrupted says so.
  const std::atomic<bool> *interrupt = nullptr;
  /// Where the train steps run: the CUDA backend's device (nestor/DeviceProgram.h), or null for
  /// the CPU. The importance ranking and the optimizer run on the CPU either way.
  runtime::KernelDevice *device = nullptr;
};

/// Runs the pipeline on `spec` with batches from `data`. Fails, naming the phase, the step and
/// the tensor, on a non-finite loss or gradient; the last checkpoint written stays valid.
llvm::Expected<RunResult> runPipeline(mlir::MLIRContext &context, const spec::ModelSpec &spec,
                                      const BatchFn &data, Listener &listener,
                                      const RunOptions &options = {});

/// Reads a run's importance.json (errors name the file).
llvm::Expected<Importance> readImportance(llvm::StringRef path);

/// The spec of the parent alone: `spec` without its elastic section.
spec::ModelSpec parentSpec(const spec::ModelSpec &spec);

/// The index of the budget called `name` in `spec`; the error names `where` (the run) and
/// lists the budgets there are: "--budget: 'x' is not a budget of RUN (full, 75%, 50%)".
llvm::Expected<int32_t> budgetIndex(const spec::ModelSpec &spec, llvm::StringRef name,
                                    llvm::StringRef where);

/// The routers' inference choice at `budget` (argmax of each router's logits, METHOD.md §4):
/// the choice index of every elastic axis (one per layer of the axis' kind for heterogeneous
/// axes; "depth" holds the number of layers dropped) and the sizes they give, with the dropped
/// layers (the first k of `depthOrder`) marked keep = 0.
struct RouterChoice {
  std::map<std::string, std::vector<int64_t>> indices;
  spec::ModelSizes<double> sizes;
};
RouterChoice routerChoice(const spec::ModelSpec &spec, const TensorMap &weights, int32_t budget,
                          llvm::ArrayRef<int64_t> depthOrder);

} // namespace nestor::train

#endif // NESTOR_TRAINER_H
