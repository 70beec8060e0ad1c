//===- Train.h - The elastic training loop on the CPU backend ---*- C++ -*-===//
//
// The pieces of `nestor train` that run compiled programs: parameter initialisation, the
// parameter store with its AdamW moments, the schedules of METHOD.md §4/§6/§7 (learning rate,
// Gumbel temperature, logit scale, hard samples, budget sampling), the parent phase (dense train
// step) and the elastic phase (the elastic train step with the frozen parent as teacher). Every
// random choice comes from a counter-based generator keyed by (seed, purpose, step), so a run
// is reproducible bit for bit on the CPU and a resumed run continues exactly.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TRAIN_H
#define NESTOR_TRAIN_H

#include "nestor/Batch.h"
#include "nestor/Compile.h"
#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace nestor::runtime {
class KernelDevice; // nestor/DeviceProgram.h
} // namespace nestor::runtime

namespace nestor::train {

/// A counter-based random number: the 64-bit mix of (seed, stream, index). Pure: the same
/// arguments give the same number on any machine.
uint64_t randomBits(uint64_t seed, uint64_t stream, uint64_t index);
/// Uniform in (0, 1) and standard normal, from randomBits.
double randomUniform(uint64_t seed, uint64_t stream, uint64_t index);
double randomNormal(uint64_t seed, uint64_t stream, uint64_t index);

/// Initial values of every parameter of `args` (the step's parameter arguments), following the
/// usual NemotronH/Mamba2 recipe: linear and embedding weights N(0, 0.02) (output projections
/// scaled by 1/sqrt(2 layers)), norm weights 1, conv weights U(+-1/sqrt(K)) and bias 0, A_log =
/// log U(1, 16), dt_bias = softplus^-1 of dt log-uniform in [1e-3, 1e-1], D = 1, router weights
/// N(0, init_std) and biases 0.
TensorMap initParams(const std::vector<StepArg> &args, const spec::ModelSpec &spec, uint64_t seed);

/// Linear warmup then cosine decay from lr to min_lr over `total` steps (METHOD.md §6).
double learningRate(const spec::Optimizer &opt, int64_t step, int64_t total);

/// The router schedules at elastic step `step` of `total` (METHOD.md §4).
struct RouterSchedule {
  double tau, logitScale;
  bool hardSample;
};
RouterSchedule routerSchedule(const spec::Elastic &elastic, int64_t step, int64_t total,
                              uint64_t seed);

/// The budget of a micro-batch: drawn from the stage's weights (uniform when empty).
int32_t sampleBudget(const spec::Stage &stage, int64_t numBudgets, int64_t step, uint64_t seed);

/// One optimisation step's report.
struct StepReport {
  int64_t step = 0;
  std::string phase; // "parent" or the stage name
  int stage = -1;    // index of the stage; -1 in the parent phase
  int32_t budget = 0;
  double loss = 0, kd = 0, ce = 0, routerLoss = 0, gradNorm = 0, lr = 0, tau = 0;
  double logitScale = 0;
  double seconds = 0, tokensPerSecond = 0;
};

/// A model and its optimizer state, trained by compiled programs.
class Session {
public:
  /// Compiles the train step of `spec` (elastic or dense) for batch x length, the teacher
  /// forward (@parent) for elastic specs, and the optimizer.
  /// With a `device` (the CUDA backend, nestor/DeviceProgram.h; it must outlive the session)
  /// the train step and the teacher run there and the optimizer on the host; the weights stay
  /// in `weights` on the host and go to the device every step.
  static llvm::Expected<std::unique_ptr<Session>>
  create(mlir::MLIRContext &context, const spec::ModelSpec &spec, int64_t batch, int64_t length,
         std::vector<int64_t> depthOrder = {}, runtime::KernelDevice *device = nullptr);
  ~Session();

  const std::vector<StepArg> &params() const { return paramArgs; }
  /// Model (and router) weights and AdamW moments, by parameter name.
  TensorMap weights, expAvg, expAvgSq;
  /// The frozen teacher's weights (elastic specs): the parent's names.
  TensorMap teacher;

  struct StepInputs {
    const int32_t *tokens, *targets;
    int32_t budget = 0;
    RouterSchedule router{1.0, 1.0, false};
    int64_t seed = 0;
    double lr = 0, routerLr = 0, clipNorm = 0;
    int64_t adamStep = 1;
  };
  /// Forward, backward and the AdamW update. Fails (naming the step's tensor) on a non-finite
  /// loss or gradient, leaving the weights untouched.
  llvm::Expected<StepReport> step(const StepInputs &in);
  /// Forward only (losses at a budget with the routers' argmax choice and scale 1).
  llvm::Expected<StepReport> evaluate(const int32_t *tokens, const int32_t *targets,
                                      int32_t budget);
  /// The logits [batch, length, vocab] of the last step or evaluation.
  const float *logits() const;
  int64_t batchSize() const { return batch; }
  int64_t sequenceLength() const { return length; }

  bool elastic() const { return isElastic; }

private:
  Session() = default;
  llvm::Error runTeacher(const int32_t *tokens);
  /// Runs the train step (on the device when there is one); `result(i)` then reads result i.
  llvm::Error runStep(llvm::ArrayRef<const void *> args);
  const void *result(unsigned i) const;

  /// The device programs (Train.cpp; only with the CUDA backend).
  struct DeviceSteps;
  std::shared_ptr<DeviceSteps> onDevice;
  std::vector<const void *> deviceResults;

  bool isElastic = false;
  int64_t batch = 0, length = 0;
  std::unique_ptr<CompiledStep> compiled;
  std::unique_ptr<engine::CpuExecutor> teacherProgram;
  mlir::func::FuncOp teacherFunc;
  std::unique_ptr<OptimizerProgram> optimizer;
  std::vector<StepArg> paramArgs;
  std::vector<float> teacherLogits;
};

} // namespace nestor::train

#endif // NESTOR_TRAIN_H
