//===- Trainer.h - The whole elastic training pipeline ----------*- C++ -*-===//
//
// METHOD.md end to end on the CPU backend: train the parent (or start from given weights), rank
// importance and permute so every budget is a prefix, train the elastic model through the
// spec's stages with the frozen parent as teacher, and evaluate the parent and every budget.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TRAINER_H
#define NESTOR_TRAINER_H

#include "nestor/Importance.h"
#include "nestor/Train.h"

#include <string>
#include <vector>

namespace nestor::train {

/// What a run reports as it goes.
struct Listener {
  virtual ~Listener() = default;
  /// After every optimisation step; `stepInPhase` counts from 0 within the phase.
  virtual void onStep(const StepReport &report, int64_t stepInPhase, int64_t phaseSteps) {}
  virtual void onMessage(const std::string &message) {}
};

/// Validation loss of the parent or of a budget (argmax router choice, scale 1), and for a
/// budget the baseline: the same sub-network (the trained routers' choice) cut from the parent
/// without elastic training.
struct BudgetEval {
  std::string name;
  double validationLoss = 0;
  double baselineLoss = 0;
};

struct RunResult {
  TensorMap parent;  // the trained (and permuted) parent: the teacher
  TensorMap elastic; // the elastic model with its routers
  Importance importance;
  std::vector<BudgetEval> evals; // the parent first, then every budget in spec order
};

/// Runs the pipeline on `spec` (which must have an elastic section) with batches from `data`.
/// With `initialParent`, the parent phase is skipped and those weights are the parent.
llvm::Expected<RunResult> runPipeline(mlir::MLIRContext &context, const spec::ModelSpec &spec,
                                      const BatchFn &data, Listener &listener,
                                      const TensorMap *initialParent = nullptr);

/// The spec of the parent alone: `spec` without its elastic section.
spec::ModelSpec parentSpec(const spec::ModelSpec &spec);

} // namespace nestor::train

#endif // NESTOR_TRAINER_H
