//===- Trainer.cpp - The whole elastic training pipeline -------------------===//
#include "nestor/Trainer.h"

#include "nestor/Checkpoint.h"
#include "nestor/Report.h"

#include "nlohmann/json.hpp"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "google/protobuf/text_format.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <unistd.h>

using namespace mlir;
using namespace nestor;
using namespace nestor::train;
using json = nlohmann::ordered_json;

spec::ModelSpec nestor::train::parentSpec(const spec::ModelSpec &spec) {
  spec::ModelSpec parent = spec;
  parent.clear_elastic();
  return parent;
}

//===----------------------------------------------------------------------===//
// Router choice
//===----------------------------------------------------------------------===//

namespace {

/// z = W2 LeakyReLU(W1 one_hot(budget) + b1) + b2 (METHOD.md §4), in double.
std::vector<double> routerLogits(const spec::ModelSpec &spec, const TensorMap &w,
                                 const std::string &axis, int32_t budget) {
  std::string prefix = "routers." + axis;
  const Tensor &w1 = w.at(prefix + ".fc1.weight"), &b1 = w.at(prefix + ".fc1.bias");
  const Tensor &w2 = w.at(prefix + ".fc2.weight"), &b2 = w.at(prefix + ".fc2.bias");
  int64_t hidden = w1.shape[0], budgets = w1.shape[1], outputs = w2.shape[0];
  double slope = spec::routerLeakyReluSlope(spec.elastic());
  std::vector<double> a(hidden);
  for (int64_t j = 0; j < hidden; ++j) {
    double v = double(w1.data[j * budgets + budget]) + double(b1.data[j]);
    a[j] = v >= 0 ? v : slope * v;
  }
  std::vector<double> z(outputs);
  for (int64_t i = 0; i < outputs; ++i) {
    double v = b2.data[i];
    for (int64_t j = 0; j < hidden; ++j)
      v += double(w2.data[i * hidden + j]) * a[j];
    z[i] = v;
  }
  return z;
}

int64_t argmaxOf(const double *v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best])
      best = i;
  return best;
}

} // namespace

llvm::Expected<int32_t> nestor::train::budgetIndex(const spec::ModelSpec &spec,
                                                   llvm::StringRef name, llvm::StringRef where) {
  std::vector<std::string> names;
  for (const spec::Budget &b : spec.elastic().budgets()) {
    if (b.name() == name)
      return static_cast<int32_t>(names.size());
    names.push_back(b.name());
  }
  return llvm::createStringError("--budget: '%s' is not a budget of %s (%s)", name.str().c_str(),
                                 where.str().c_str(), llvm::join(names, ", ").c_str());
}

RouterChoice nestor::train::routerChoice(const spec::ModelSpec &spec, const TensorMap &weights,
                                         int32_t budget, llvm::ArrayRef<int64_t> depthOrder) {
  RouterChoice rc;
  rc.sizes = spec::parentSizes(spec);
  if (!spec.has_elastic())
    return rc;
  const spec::Elastic &el = spec.elastic();
  std::vector<spec::LayerKind> layers = spec::fixedSizes(spec).layers;
  for (const spec::RouterAxis &axis : spec::routerAxes()) {
    const spec::AxisChoices &choices = (el.*axis.choices)();
    int64_t n = choices.choices_size();
    if (n == 0)
      continue;
    std::vector<double> z = routerLogits(spec, weights, axis.name, budget);
    std::vector<int64_t> &idx = rc.indices[axis.name];
    for (size_t r = 0; r * n < z.size(); ++r)
      idx.push_back(argmaxOf(z.data() + r * n, n));
    if (!axis.kind) {
      rc.sizes.hidden = double(choices.choices(idx[0]));
      continue;
    }
    size_t row = 0;
    for (auto [l, kind] : llvm::enumerate(layers)) {
      if (kind != *axis.kind)
        continue;
      int64_t i = choices.heterogeneous() ? idx[row++] : idx[0];
      rc.sizes.layers[l].*axis.field = double(choices.choices(i));
    }
  }
  if (el.max_dropped_layers() > 0) {
    std::vector<double> z = routerLogits(spec, weights, "depth", budget);
    int64_t k = argmaxOf(z.data(), static_cast<int64_t>(z.size()));
    rc.indices["depth"] = {k};
    for (int64_t i = 0; i < k && i < static_cast<int64_t>(depthOrder.size()); ++i)
      rc.sizes.layers[depthOrder[i]].keep = 0;
  }
  return rc;
}

//===----------------------------------------------------------------------===//
// The run directory
//===----------------------------------------------------------------------===//

namespace {

uint64_t seedOf(const spec::ModelSpec &spec) {
  return spec.training().has_seed() ? spec.training().seed() : 0;
}

double clipOf(const spec::Optimizer &o) {
  return o.has_grad_clip_norm() ? o.grad_clip_norm() : 1.0;
}

Difficulty stageDifficulty(const spec::Stage &stage, int index) {
  switch (stage.difficulty()) {
  case spec::SHORT:
    return Difficulty::Short;
  case spec::LONG:
    return Difficulty::Long;
  default:
    return index == 0 ? Difficulty::Short : Difficulty::Long;
  }
}

/// The kinds of output folder the trainer writes (ckpt::claimOutputFolder): the run folder, and
/// each checkpoint folder inside it.
constexpr llvm::StringLiteral kRunKind = "run";
constexpr llvm::StringLiteral kCheckpointKind = "checkpoint";

/// What state.json holds: where the run stands.
struct RunState {
  std::string phase = "parent"; // parent, elastic, done
  int64_t step = 0;             // optimisation steps done in the phase
  std::string checkpoint;       // folder in the run directory, empty: none yet
  bool parentDone = false;      // the parent phase is complete (or was loaded)
  uint64_t metricsBytes = 0;
};

std::string joinPath(llvm::StringRef dir, llvm::StringRef name) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, name);
  return std::string(p);
}

/// The run directory: metrics, checkpoints, state. Every method is a no-op without one.
class RunDir {
public:
  RunDir(std::string dir) : dir(std::move(dir)) {}
  bool enabled() const { return !dir.empty(); }
  std::string path(llvm::StringRef name) const { return joinPath(dir, name); }

  /// Opens metrics.jsonl: truncated to `bytes` (a resume: what came after the checkpoint is
  /// recomputed) or created empty.
  llvm::Error openMetrics(uint64_t bytes) {
    if (!enabled())
      return llvm::Error::success();
    std::string p = path("metrics.jsonl");
    {
      std::ofstream touch(p, std::ios::app);
      if (!touch)
        return llvm::createStringError("%s: cannot open for writing", p.c_str());
    }
    uint64_t size = 0;
    llvm::sys::fs::file_size(p, size);
    if (size < bytes)
      return llvm::createStringError("%s: shorter (%llu bytes) than the state file records "
                                     "(%llu): the run folder was modified",
                                     p.c_str(), (unsigned long long)size,
                                     (unsigned long long)bytes);
    if (::truncate(p.c_str(), static_cast<off_t>(bytes)) != 0)
      return llvm::createStringError("%s: cannot truncate", p.c_str());
    metrics.open(p, std::ios::app | std::ios::binary);
    metricsBytes = bytes;
    return llvm::Error::success();
  }

  void log(const json &record) {
    if (!enabled())
      return;
    std::string line = record.dump() + "\n";
    metrics << line;
    metrics.flush();
    metricsBytes += line.size();
  }

  /// Writes a checkpoint folder, then the state that points at it, then removes the previous
  /// folder: a kill at any point leaves a state file naming a complete checkpoint.
  llvm::Error checkpoint(RunState &state, const TensorMap &weights, const TensorMap *expAvg,
                         const TensorMap *expAvgSq, const json &info) {
    if (!enabled())
      return llvm::Error::success();
    std::string name = llvm::formatv("ckpt-{0}-{1:6}", state.phase, state.step).str();
    std::replace(name.begin(), name.end(), ' ', '0');
    std::string folder = path(name);
    if (std::error_code ec = llvm::sys::fs::create_directories(folder))
      return llvm::createStringError("%s: %s", folder.c_str(), ec.message().c_str());
    // The marker first: a folder left half-written by a kill is recognisably the trainer's.
    if (llvm::Error err = ckpt::markOutput(folder, kCheckpointKind, "nestor train"))
      return err;
    ckpt::Metadata meta = {
        {"format", "nestor"}, {"phase", state.phase}, {"step", std::to_string(state.step)}};
    if (llvm::Error err =
            ckpt::writeSafetensors(joinPath(folder, "model.safetensors"), weights, meta))
      return err;
    if (expAvg) {
      TensorMap moments;
      for (auto &[n, t] : *expAvg)
        moments["exp_avg." + n] = t;
      for (auto &[n, t] : *expAvgSq)
        moments["exp_avg_sq." + n] = t;
      if (llvm::Error err =
              ckpt::writeSafetensors(joinPath(folder, "optimizer.safetensors"), moments, meta))
        return err;
    }
    state.checkpoint = name;
    if (llvm::Error err = writeState(state, info))
      return err;
    removeOldCheckpoints(state);
    return llvm::Error::success();
  }

  /// Once a state file naming a complete checkpoint (or none, at a phase boundary) is on
  /// disk: removes every other checkpoint folder the trainer wrote (its marker says so), the
  /// previous one and any a kill left half-written. Nothing else in the folder is touched.
  void removeOldCheckpoints(const RunState &state) {
    if (!enabled())
      return;
    std::error_code ec;
    std::vector<std::string> old;
    for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
      if (llvm::sys::path::filename(it->path()) != state.checkpoint &&
          ckpt::outputKind(it->path()) == std::string(kCheckpointKind))
        old.push_back(it->path());
    for (const std::string &folder : old)
      llvm::sys::fs::remove_directories(folder);
  }

  llvm::Error writeState(const RunState &state, const json &info) {
    if (!enabled())
      return llvm::Error::success();
    json j = {{"version", 1},
              {"phase", state.phase},
              {"step", state.step},
              {"checkpoint", state.checkpoint},
              {"parent_done", state.parentDone},
              {"metrics_bytes", metricsBytes}};
    for (auto &[k, v] : info.items())
      j[k] = v;
    return ckpt::writeFileAtomic(path("state.json"), j.dump(1) + "\n");
  }

  llvm::Expected<RunState> readState() {
    std::string file = path("state.json");
    auto j = ckpt::readJsonObject(file);
    if (!j)
      return j.takeError();
    // Reads `key` into `out` when it is there and `is` holds for it.
    auto field = [&](const char *key, bool (nlohmann::json::*is)() const, const char *what,
                     auto &out) -> llvm::Error {
      auto it = j->find(key);
      if (it == j->end())
        return llvm::createStringError("%s: '%s' is missing", file.c_str(), key);
      if (!((*it).*is)())
        return llvm::createStringError("%s: '%s' must be %s, got %s", file.c_str(), key, what,
                                       it->dump().c_str());
      it->get_to(out);
      return llvm::Error::success();
    };
    RunState s;
    uint64_t step = 0;
    const char *count = "a non-negative integer";
    if (llvm::Error err = field("phase", &nlohmann::json::is_string, "a string", s.phase))
      return err;
    if (llvm::Error err = field("step", &nlohmann::json::is_number_unsigned, count, step))
      return err;
    if (step > uint64_t(std::numeric_limits<int64_t>::max()))
      return llvm::createStringError("%s: 'step' is out of range", file.c_str());
    s.step = static_cast<int64_t>(step);
    if (llvm::Error err = field("checkpoint", &nlohmann::json::is_string, "a string", s.checkpoint))
      return err;
    if (llvm::Error err =
            field("parent_done", &nlohmann::json::is_boolean, "true or false", s.parentDone))
      return err;
    if (llvm::Error err =
            field("metrics_bytes", &nlohmann::json::is_number_unsigned, count, s.metricsBytes))
      return err;
    if (s.phase != "parent" && s.phase != "elastic" && s.phase != "done")
      return llvm::createStringError("%s: unknown phase '%s'", file.c_str(), s.phase.c_str());
    return s;
  }

  /// Weights (and moments) of the state's checkpoint.
  llvm::Error load(const RunState &state, TensorMap &weights, TensorMap *expAvg,
                   TensorMap *expAvgSq) {
    std::string folder = path(state.checkpoint);
    auto model = ckpt::readSafetensors(joinPath(folder, "model.safetensors"));
    if (!model)
      return model.takeError();
    if (llvm::Error err =
            replaceInto(weights, std::move(*model), folder + "/model.safetensors", ""))
      return err;
    if (!expAvg)
      return llvm::Error::success();
    auto moments = ckpt::readSafetensors(joinPath(folder, "optimizer.safetensors"));
    if (!moments)
      return moments.takeError();
    std::string opt = folder + "/optimizer.safetensors";
    if (llvm::Error err = replaceInto(*expAvg, *moments, opt, "exp_avg."))
      return err;
    return replaceInto(*expAvgSq, *moments, opt, "exp_avg_sq.");
  }

  /// Sets every tensor of `into` from `from[prefix + name]`, checking names and shapes.
  static llvm::Error replaceInto(TensorMap &into, const TensorMap &from, const std::string &file,
                                 const std::string &prefix) {
    for (auto &[name, t] : into) {
      auto it = from.find(prefix + name);
      if (it == from.end())
        return llvm::createStringError("%s: tensor '%s' is missing", file.c_str(),
                                       (prefix + name).c_str());
      if (it->second.shape != t.shape)
        return llvm::createStringError("%s: tensor '%s' has shape %s, the model needs %s",
                                       file.c_str(), (prefix + name).c_str(),
                                       ckpt::shapeString(it->second.shape).c_str(),
                                       ckpt::shapeString(t.shape).c_str());
      t.data = it->second.data;
    }
    return llvm::Error::success();
  }

private:
  std::string dir;
  std::ofstream metrics;
  uint64_t metricsBytes = 0;
};

json importanceJson(const Importance &imp) {
  return {{"hidden", imp.hidden},
          {"ffn", imp.ffn},
          {"attention_heads", imp.attnHeads},
          {"mamba_heads", imp.mambaHeads},
          {"mamba_channels", imp.mambaChannels},
          {"depth_order", imp.depthOrder},
          {"depth_scores", imp.depthScores}};
}

json sizesJson(const spec::ModelSpec &spec, const spec::ModelSizes<double> &s) {
  json layers = json::array();
  std::vector<spec::LayerKind> kinds = spec::fixedSizes(spec).layers;
  for (auto [l, kind] : llvm::enumerate(kinds)) {
    const spec::LayerSizes<double> &ls = s.layers[l];
    json j = {{"kind", std::string(1, spec::layerKindChar(kind))}, {"kept", ls.keep != 0}};
    switch (kind) {
    case spec::LayerKind::Mamba:
      j["mamba_num_heads"] = int64_t(ls.mambaHeads);
      j["mamba_head_dim"] = int64_t(ls.mambaHeadDim);
      break;
    case spec::LayerKind::Attention:
      j["num_attention_heads"] = int64_t(ls.attnHeads);
      break;
    case spec::LayerKind::MLP:
      j["intermediate_size"] = int64_t(ls.ffn);
      break;
    }
    layers.push_back(j);
  }
  return {{"hidden_size", int64_t(s.hidden)}, {"layers", layers}};
}

json optionalJson(const std::optional<double> &v) { return v ? json(*v) : json(nullptr); }

/// The pipeline, one object so that phases share the run's state.
class Pipeline {
public:
  Pipeline(MLIRContext &context, const spec::ModelSpec &spec, const BatchFn &data,
           Listener &listener, const RunOptions &options)
      : context(context), spec(spec), data(data), listener(listener), options(options),
        run(options.runDir), seed(seedOf(spec)), dense(parentSpec(spec)) {}

  llvm::Expected<RunResult> execute();

private:
  llvm::Error start();
  llvm::Error parentPhase();
  llvm::Error importancePhase();
  llvm::Error elasticPhase();
  llvm::Error evaluatePhase();
  llvm::Error writeSummary();

  void message(const std::string &m) {
    listener.onMessage(m);
    run.log({{"kind", "message"}, {"text", m}});
  }
  /// True when the test hook says to stop as if killed.
  bool stopNow() {
    ++stepsThisProcess;
    return (options.stopAfterSteps >= 0 && stepsThisProcess >= options.stopAfterSteps) ||
           (options.interrupt && options.interrupt->load());
  }
  Progress progress(const std::string &phase, int64_t inPhase, int64_t phaseSteps, double seconds);
  llvm::Error failure(const std::string &where, llvm::Error err);
  /// Checks, before a resume touches anything, that the state read from state.json is one
  /// this spec's run can be in and that every file the rest of the run reads is there.
  llvm::Error checkResumable();
  llvm::Expected<double> validationLoss(Session &s, Difficulty d, int32_t budget);
  /// The difficulties the run trains on: its stages' (elastic), both (dense: the parent
  /// phase alternates them).
  std::vector<Difficulty> evalDifficulties() const;
  /// The final validation loss: the mean of validationLoss over evalDifficulties().
  llvm::Expected<double> finalLoss(Session &s, int32_t budget);
  struct Accuracy {
    std::optional<double> exact, tokens;
  };
  llvm::Expected<Accuracy> accuracy(Session &s, int32_t budget);
  /// What state.json records beside the position: the stage, the schedules' values at the
  /// step and the random generator's state (its seed and the next step: draws are pure
  /// functions of both, nestor/Train.h).
  json schedules(int stage, double lr, double tau, double scale) const {
    return {
        {"stage", stage < 0
                      ? json("parent")
                      : json({{"index", stage}, {"name", spec.training().stages(stage).name()}})},
        {"seed", seed},
        {"rng", {{"generator", "counter-splitmix64"}, {"seed", seed}, {"next_step", state.step}}},
        {"schedule", {{"lr", lr}, {"tau", tau}, {"logit_scale", scale}}}};
  }

  MLIRContext &context;
  const spec::ModelSpec &spec;
  const BatchFn &data;
  Listener &listener;
  const RunOptions &options;
  RunDir run;
  uint64_t seed;
  spec::ModelSpec dense;
  RunState state;
  RunResult result;
  bool stopped = false;
  int64_t stepsThisProcess = 0, totalSteps = 0, stepsBefore = 0;
  double secondsThisProcess = 0;
  std::vector<int64_t> depthOrder;
};

Progress Pipeline::progress(const std::string &phase, int64_t inPhase, int64_t phaseSteps,
                            double seconds) {
  secondsThisProcess += seconds;
  Progress p;
  p.phase = phase;
  p.stepInPhase = inPhase;
  p.phaseSteps = phaseSteps;
  p.done = stepsBefore + 1;
  p.total = totalSteps;
  ++stepsBefore;
  p.etaSeconds = secondsThisProcess / double(std::max<int64_t>(stepsThisProcess, 1)) *
                 double(std::max<int64_t>(totalSteps - p.done, 0));
  return p;
}

llvm::Error Pipeline::failure(const std::string &where, llvm::Error err) {
  std::string m = where + ": " + llvm::toString(std::move(err));
  if (!run.enabled())
    return llvm::createStringError("%s", m.c_str());
  if (!state.checkpoint.empty())
    m += "; the last good checkpoint is " + run.path(state.checkpoint) +
         " (--resume continues from it)";
  else if (state.phase == "elastic")
    m += "; the run folder holds the start of the elastic phase (" +
         run.path("parent.safetensors") + ", --resume restarts from it)";
  else
    m += "; no checkpoint was written yet";
  return llvm::createStringError("%s", m.c_str());
}

llvm::Error Pipeline::checkResumable() {
  std::string statePath = run.path("state.json");
  auto inconsistent = [&](const llvm::Twine &what) {
    return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                   statePath + ": " + what +
                                       "; the run folder is inconsistent, nothing was changed");
  };
  if (std::optional<std::string> kind = ckpt::outputKind(options.runDir); kind && *kind != kRunKind)
    return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                   "%s: holds a '%s' output, not a training run",
                                   options.runDir.c_str(), kind->c_str());
  const spec::Training &tr = spec.training();
  int64_t elasticSteps = 0;
  for (const spec::Stage &st : tr.stages())
    elasticSteps += st.steps();
  if (state.phase == "parent") {
    if (state.step > tr.parent().steps())
      return inconsistent(llvm::formatv("step {0} is past the parent phase's {1} steps", state.step,
                                        tr.parent().steps()));
    if (state.step > 0 && state.checkpoint.empty())
      return inconsistent(
          llvm::formatv("parent step {0} names no checkpoint to continue from", state.step));
  } else if (state.phase == "elastic") {
    if (!spec.has_elastic())
      return inconsistent("phase 'elastic', but the spec is dense");
    if (state.step > elasticSteps)
      return inconsistent(llvm::formatv("step {0} is past the elastic phase's {1} steps",
                                        state.step, elasticSteps));
    if (state.step > 0 && state.checkpoint.empty())
      return inconsistent(
          llvm::formatv("elastic step {0} names no checkpoint to continue from", state.step));
    for (const char *file : {"importance.json", "parent.safetensors"})
      if (!llvm::sys::fs::is_regular_file(run.path(file)))
        return inconsistent(llvm::Twine("the elastic phase needs ") + run.path(file) +
                            ", which is missing");
  }
  if (!state.checkpoint.empty()) {
    llvm::StringRef name = state.checkpoint;
    if (name != llvm::sys::path::filename(name) || name == "." || name == "..")
      return inconsistent("checkpoint '" + name + "' is not a folder name");
    std::string folder = run.path(name);
    if (!llvm::sys::fs::is_directory(folder))
      return inconsistent("checkpoint " + folder + " is missing");
    bool moments = state.phase == "elastic" || (state.phase == "parent" && !state.parentDone);
    std::vector<std::string> files = {"model.safetensors"};
    if (moments)
      files.push_back("optimizer.safetensors");
    for (const std::string &file : files)
      if (!llvm::sys::fs::is_regular_file(joinPath(folder, file)))
        return inconsistent("checkpoint " + folder + " has no " + file);
  }
  uint64_t size = 0;
  if (llvm::sys::fs::file_size(run.path("metrics.jsonl"), size) || size < state.metricsBytes)
    return inconsistent(llvm::formatv("{0} is shorter than the {1} bytes the state records",
                                      run.path("metrics.jsonl"), state.metricsBytes));
  return llvm::Error::success();
}

llvm::Error Pipeline::start() {
  const spec::Training &tr = spec.training();
  if (spec.has_elastic() && tr.stages_size() == 0)
    return llvm::createStringError("training.stages is empty: nothing to train");
  if (!run.enabled()) {
    if (options.resume)
      return llvm::createStringError("--resume needs a run directory");
    return llvm::Error::success();
  }
  std::string specText;
  google::protobuf::TextFormat::PrintToString(spec, &specText);
  std::string specPath = run.path("spec.pbtxt");
  if (options.resume) {
    auto saved = ckpt::readFileBytes(specPath);
    if (!saved)
      return saved.takeError();
    auto parsed = spec::parseSpecText(*saved, specPath);
    if (!parsed)
      return parsed.takeError();
    if (parsed->SerializeAsString() != spec.SerializeAsString())
      return llvm::createStringError(
          "%s: the run was started with a different spec; resume it with that spec",
          specPath.c_str());
    auto s = run.readState();
    if (!s)
      return s.takeError();
    state = *s;
    if (llvm::Error err = checkResumable())
      return err;
    if (llvm::Error err = run.openMetrics(state.metricsBytes))
      return err;
    message(llvm::formatv("resuming: phase {0}, step {1}", state.phase, state.step).str());
    return llvm::Error::success();
  }
  if (llvm::sys::fs::exists(run.path("state.json")))
    return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                   "%s already holds a run: --resume continues it, or choose "
                                   "another --out",
                                   options.runDir.c_str());
  if (llvm::Error err = ckpt::claimOutputFolder(options.runDir, kRunKind, "nestor train",
                                                options.inputs, /*force=*/false))
    return err;
  if (llvm::Error err = ckpt::writeFileAtomic(specPath, specText))
    return err;
  return run.openMetrics(0);
}

llvm::Error Pipeline::parentPhase() {
  const spec::Training &tr = spec.training();
  const spec::ParentTraining &pt = tr.parent();
  if (state.parentDone) {
    // Trained, but what follows has not finished: the last checkpoint holds the parent.
    auto weights = ckpt::readSafetensors(run.path(state.checkpoint + "/model.safetensors"));
    if (!weights)
      return weights.takeError();
    result.parent = std::move(*weights);
    return llvm::Error::success();
  }
  int64_t batch = pt.batch_size() > 0 ? pt.batch_size() : tr.stages(0).batch_size();
  int64_t length = pt.sequence_length() > 0 ? pt.sequence_length() : tr.stages(0).sequence_length();
  auto created = Session::create(context, dense, batch, length, {}, options.device);
  if (!created)
    return created.takeError();
  Session &parent = **created;
  parent.weights = initParams(parent.params(), dense, seed);
  if (options.initialParent) {
    if (llvm::Error err =
            RunDir::replaceInto(parent.weights, *options.initialParent, "--parent", ""))
      return err;
    for (auto &[name, t] : *options.initialParent)
      if (!parent.weights.count(name))
        return llvm::createStringError("--parent: tensor '%s' is not a parameter of the parent",
                                       name.c_str());
    message("parent: loaded, not trained");
    state.parentDone = true;
    if (llvm::Error err = run.checkpoint(state, parent.weights, nullptr, nullptr, json::object()))
      return err;
    result.parent = std::move(parent.weights);
    return llvm::Error::success();
  }
  if (state.phase == "parent" && !state.checkpoint.empty())
    if (llvm::Error err = run.load(state, parent.weights, &parent.expAvg, &parent.expAvgSq))
      return err;
  const spec::Optimizer &opt = pt.has_optimizer() ? pt.optimizer() : tr.optimizer();
  int64_t every = tr.has_checkpoint_every() ? tr.checkpoint_every() : 100;
  int64_t evalEvery = tr.has_eval_every() ? tr.eval_every() : 100;
  std::vector<int32_t> tokens(batch * length), targets(batch * length);
  for (int64_t s = state.step; s < pt.steps(); ++s) {
    // The parent sees both kinds of problems, alternately.
    data(BatchRequest{false, s, batch, length, s % 2 ? Difficulty::Long : Difficulty::Short},
         tokens.data(), targets.data());
    Session::StepInputs in{tokens.data(), targets.data()};
    in.lr = learningRate(opt, s, pt.steps());
    in.clipNorm = clipOf(opt);
    in.adamStep = s + 1;
    auto t0 = std::chrono::steady_clock::now();
    auto r = parent.step(in);
    if (!r)
      return failure(llvm::formatv("parent step {0}", s).str(), r.takeError());
    r->step = s;
    r->phase = "parent";
    r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r->tokensPerSecond = double(batch * length) / std::max(r->seconds, 1e-9);
    run.log({{"kind", "step"},
             {"phase", "parent"},
             {"stage", -1},
             {"step", s},
             {"budget", "parent"},
             {"budget_index", 0},
             {"loss", r->loss},
             {"kd", 0.0},
             {"ce", r->ce},
             {"router_loss", 0.0},
             {"grad_norm", r->gradNorm},
             {"lr", r->lr},
             {"tau", 0.0},
             {"logit_scale", 0.0},
             {"tokens_per_s", r->tokensPerSecond},
             {"seconds", r->seconds}});
    bool stop = stopNow();
    listener.onStep(*r, progress("parent", s, pt.steps(), r->seconds));
    state.step = s + 1;
    if ((s + 1) % evalEvery == 0 || s + 1 == pt.steps()) {
      auto loss = validationLoss(parent, Difficulty::Short, 0);
      if (!loss)
        return loss.takeError();
      run.log({{"kind", "eval"},
               {"phase", "parent"},
               {"step", s},
               {"budget", "parent"},
               {"validation_loss", *loss},
               {"accuracy", nullptr}});
    }
    state.parentDone = s + 1 == pt.steps();
    if ((s + 1) % every == 0 || s + 1 == pt.steps() || stop)
      if (llvm::Error err = run.checkpoint(state, parent.weights, &parent.expAvg, &parent.expAvgSq,
                                           schedules(-1, in.lr, 0, 0)))
        return err;
    if (stop) {
      stopped = true;
      return llvm::Error::success();
    }
  }
  state.parentDone = true;
  if (pt.steps() == 0)
    if (llvm::Error err = run.checkpoint(state, parent.weights, nullptr, nullptr, json::object()))
      return err;
  result.parent = std::move(parent.weights);
  return llvm::Error::success();
}

llvm::Error Pipeline::importancePhase() {
  if (state.phase != "parent") { // done before: read it back
    auto imp = readImportance(run.path("importance.json"));
    if (!imp)
      return imp.takeError();
    result.importance = std::move(*imp);
    auto parent = ckpt::readSafetensors(run.path("parent.safetensors"));
    if (!parent)
      return parent.takeError();
    result.parent = std::move(*parent);
    depthOrder = result.importance.depthOrder;
    return llvm::Error::success();
  }
  const spec::Training &tr = spec.training();
  const spec::Importance &ip = tr.importance();
  int64_t batch = ip.has_batch_size() ? ip.batch_size() : 8;
  int64_t length = ip.has_sequence_length() ? ip.sequence_length() : tr.stages(0).sequence_length();
  int64_t batches = ip.has_calibration_batches() ? ip.calibration_batches() : 8;
  // Calibration batches: training data, numbered apart from every step's batch.
  constexpr int64_t kCalibration = int64_t(1) << 40;
  BatchFn calibration = [&](const BatchRequest &r, int32_t *tokens, int32_t *targets) {
    BatchRequest c = r;
    c.index += kCalibration;
    data(c, tokens, targets);
  };
  auto t0 = std::chrono::steady_clock::now();
  auto imp = estimateImportance(context, spec, result.parent, calibration, batches, batch, length);
  if (!imp)
    return imp.takeError();
  result.importance = std::move(*imp);
  ModelPermutation perm = permutationFor(spec, result.importance);
  if (llvm::Error err = permuteWeights(spec, perm, result.parent))
    return err;
  depthOrder = result.importance.depthOrder;
  message(
      llvm::formatv(
          "importance: {0} calibration batches in {1:F1} s; depth order (least "
          "important first) {2}",
          batches, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
          llvm::join(llvm::map_range(depthOrder, [](int64_t l) { return std::to_string(l); }), ","))
          .str());
  if (run.enabled()) {
    if (llvm::Error err = ckpt::writeFileAtomic(run.path("importance.json"),
                                                importanceJson(result.importance).dump(1) + "\n"))
      return err;
    if (llvm::Error err = ckpt::writeSafetensors(run.path("parent.safetensors"), result.parent,
                                                 {{"format", "nestor"}, {"role", "teacher"}}))
      return err;
    state = RunState{"elastic", 0, "", true, 0};
    if (llvm::Error err = run.writeState(state, json::object()))
      return err;
    run.removeOldCheckpoints(state);
  } else {
    state = RunState{"elastic", 0, "", true, 0};
  }
  return llvm::Error::success();
}

llvm::Error Pipeline::elasticPhase() {
  const spec::Training &tr = spec.training();
  int64_t total = 0;
  for (const spec::Stage &st : tr.stages())
    total += st.steps();
  int64_t every = tr.has_checkpoint_every() ? tr.checkpoint_every() : 100;
  int64_t evalEvery = tr.has_eval_every() ? tr.eval_every() : 100;
  double routerMult =
      spec.elastic().router().has_lr_multiplier() ? spec.elastic().router().lr_multiplier() : 100.0;
  int32_t numBudgets = spec.elastic().budgets_size();
  TensorMap weights, expAvg, expAvgSq;
  int64_t global = state.phase == "elastic" ? state.step : total;
  int64_t stageStart = 0;
  for (int si = 0; si < tr.stages_size(); ++si) {
    const spec::Stage &st = tr.stages(si);
    int64_t stageEnd = stageStart + st.steps();
    bool lastStage = si + 1 == tr.stages_size();
    if (global >= stageEnd && !lastStage) {
      stageStart = stageEnd;
      continue;
    }
    auto created = Session::create(context, spec, st.batch_size(), st.sequence_length(), depthOrder,
                                   options.device);
    if (!created)
      return created.takeError();
    Session &e = **created;
    e.teacher = result.parent;
    if (weights.empty()) {
      e.weights = initParams(e.params(), spec, seed + 1); // routers; model weights below
      for (auto &[name, t] : result.parent)
        e.weights.at(name) = t;
      if (!state.checkpoint.empty()) {
        bool moments = state.phase == "elastic";
        if (llvm::Error err = run.load(state, e.weights, moments ? &e.expAvg : nullptr,
                                       moments ? &e.expAvgSq : nullptr))
          return err;
      }
    } else {
      e.weights = std::move(weights);
      e.expAvg = std::move(expAvg);
      e.expAvgSq = std::move(expAvgSq);
    }
    Difficulty difficulty = stageDifficulty(st, si);
    std::vector<int32_t> tokens(st.batch_size() * st.sequence_length()),
        targets(st.batch_size() * st.sequence_length());
    for (; global < stageEnd; ++global) {
      // Batches of the elastic phase are numbered after the parent's.
      data(BatchRequest{false, tr.parent().steps() + global, st.batch_size(), st.sequence_length(),
                        difficulty},
           tokens.data(), targets.data());
      Session::StepInputs in{tokens.data(), targets.data()};
      in.budget = sampleBudget(st, numBudgets, global, seed);
      in.router = routerSchedule(spec.elastic(), global, total, seed);
      in.seed = static_cast<int64_t>(randomBits(seed, 4, static_cast<uint64_t>(global)) >> 1);
      in.lr = learningRate(tr.optimizer(), global, total);
      in.routerLr = in.lr * routerMult;
      in.clipNorm = clipOf(tr.optimizer());
      in.adamStep = global + 1;
      auto t0 = std::chrono::steady_clock::now();
      auto r = e.step(in);
      if (!r)
        return failure(llvm::formatv("stage '{0}' step {1} (elastic step {2})", st.name(),
                                     global - stageStart, global)
                           .str(),
                       r.takeError());
      r->step = global;
      r->phase = st.name();
      r->stage = si;
      r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      r->tokensPerSecond =
          double(st.batch_size() * st.sequence_length()) / std::max(r->seconds, 1e-9);
      json choices = json::object();
      for (int32_t b = 0; b < numBudgets; ++b)
        choices[spec.elastic().budgets(b).name()] =
            routerChoice(spec, e.weights, b, depthOrder).indices;
      run.log({{"kind", "step"},
               {"phase", st.name()},
               {"stage", si},
               {"step", global},
               {"budget", spec.elastic().budgets(in.budget).name()},
               {"budget_index", in.budget},
               {"loss", r->loss},
               {"kd", r->kd},
               {"ce", r->ce},
               {"router_loss", r->routerLoss},
               {"grad_norm", r->gradNorm},
               {"lr", r->lr},
               {"tau", r->tau},
               {"logit_scale", r->logitScale},
               {"tokens_per_s", r->tokensPerSecond},
               {"seconds", r->seconds},
               {"choices", choices}});
      bool stop = stopNow();
      listener.onStep(*r, progress(st.name(), global - stageStart, st.steps(), r->seconds));
      state.step = global + 1;
      if ((global + 1) % evalEvery == 0 || global + 1 == total) {
        for (int32_t b = 0; b < numBudgets; ++b) {
          auto loss = validationLoss(e, difficulty, b);
          if (!loss)
            return loss.takeError();
          run.log({{"kind", "eval"},
                   {"phase", st.name()},
                   {"step", global},
                   {"budget", spec.elastic().budgets(b).name()},
                   {"validation_loss", *loss},
                   {"accuracy", nullptr}});
        }
      }
      if ((global + 1) % every == 0 || global + 1 == total || stop)
        if (llvm::Error err =
                run.checkpoint(state, e.weights, &e.expAvg, &e.expAvgSq,
                               schedules(si, in.lr, in.router.tau, in.router.logitScale)))
          return err;
      if (stop) {
        stopped = true;
        return llvm::Error::success();
      }
    }
    weights = std::move(e.weights);
    expAvg = std::move(e.expAvg);
    expAvgSq = std::move(e.expAvgSq);
    stageStart = stageEnd;
  }
  result.elastic = std::move(weights);
  return llvm::Error::success();
}

llvm::Expected<double> Pipeline::validationLoss(Session &s, Difficulty d, int32_t budget) {
  int64_t batches = spec.training().has_eval_batches() ? spec.training().eval_batches() : 4;
  std::vector<int32_t> tokens(s.batchSize() * s.sequenceLength()),
      targets(s.batchSize() * s.sequenceLength());
  double total = 0;
  for (int64_t b = 0; b < batches; ++b) {
    data(BatchRequest{true, b, s.batchSize(), s.sequenceLength(), d}, tokens.data(),
         targets.data());
    auto r = s.evaluate(tokens.data(), targets.data(), budget);
    if (!r)
      return r.takeError();
    total += r->ce;
  }
  return total / double(std::max<int64_t>(batches, 1));
}

std::vector<Difficulty> Pipeline::evalDifficulties() const {
  std::vector<Difficulty> kinds;
  if (spec.has_elastic())
    for (int i = 0; i < spec.training().stages_size(); ++i)
      kinds.push_back(stageDifficulty(spec.training().stages(i), i));
  else
    kinds = {Difficulty::Short, Difficulty::Long};
  std::sort(kinds.begin(), kinds.end());
  kinds.erase(std::unique(kinds.begin(), kinds.end()), kinds.end());
  return kinds;
}

llvm::Expected<double> Pipeline::finalLoss(Session &s, int32_t budget) {
  std::vector<Difficulty> kinds = evalDifficulties();
  double total = 0;
  for (Difficulty d : kinds) {
    auto loss = validationLoss(s, d, budget);
    if (!loss)
      return loss.takeError();
    total += *loss;
  }
  return total / double(kinds.size());
}

/// Exact match on held-out problems: the prompt is given and every token of the completion
/// (the working, the answer, the end of document) must be the argmax of the logits at the
/// position before it. This is what greedy decoding would write, token for token, without
/// running the decoder: greedy decoding reproduces the reference completion exactly if and
/// only if the teacher-forced argmax does at every completion position.
llvm::Expected<Pipeline::Accuracy> Pipeline::accuracy(Session &s, int32_t budget) {
  if (!options.problems)
    return Accuracy{};
  std::vector<data::Problem> problems;
  for (Difficulty d : evalDifficulties())
    llvm::append_range(problems, options.problems(d, spec.training().has_eval_problems()
                                                         ? spec.training().eval_problems()
                                                         : 64));
  int64_t batch = s.batchSize(), length = s.sequenceLength();
  int64_t vocab = spec.architecture().vocab_size();
  std::vector<int32_t> tokens(batch * length), targets(batch * length);
  int64_t correct = 0, counted = 0, tokensRight = 0, tokensCounted = 0;
  size_t next = 0;
  while (next < problems.size()) {
    int64_t rows = 0;
    std::fill(tokens.begin(), tokens.end(), data::kPad);
    std::fill(targets.begin(), targets.end(), -1);
    for (; rows < batch && next < problems.size(); ++next)
      if (data::problemRow(problems[next], length, &tokens[rows * length], &targets[rows * length]))
        ++rows;
    if (rows == 0)
      break;
    auto r = s.evaluate(tokens.data(), targets.data(), budget);
    if (!r)
      return r.takeError();
    const float *logits = s.logits();
    for (int64_t row = 0; row < rows; ++row) {
      bool ok = true;
      for (int64_t t = 0; t < length; ++t) {
        int32_t target = targets[row * length + t];
        if (target < 0)
          continue;
        const float *z = logits + (row * length + t) * vocab;
        bool right = std::max_element(z, z + vocab) - z == target;
        ok &= right;
        tokensRight += right;
        ++tokensCounted;
      }
      correct += ok;
      ++counted;
    }
  }
  if (counted == 0)
    return Accuracy{};
  return Accuracy{double(correct) / double(counted),
                  double(tokensRight) / double(std::max<int64_t>(tokensCounted, 1))};
}

llvm::Error Pipeline::evaluatePhase() {
  const spec::Training &tr = spec.training();
  int64_t batch, length;
  if (spec.has_elastic()) {
    const spec::Stage &st = tr.stages(tr.stages_size() - 1);
    batch = st.batch_size(), length = st.sequence_length();
  } else {
    batch = tr.parent().batch_size(), length = tr.parent().sequence_length();
  }
  auto t0 = std::chrono::steady_clock::now();
  spec::FixedSizes fixed = spec::fixedSizes(spec);
  double parentParams = spec::countParams(fixed, spec::parentSizes(spec)).total();
  auto evalParent = Session::create(context, dense, batch, length, {}, options.device);
  if (!evalParent)
    return evalParent.takeError();
  (*evalParent)->weights = result.parent;
  ModelEval pe;
  pe.name = "parent";
  pe.params = parentParams;
  pe.sizes = spec::parentSizes(spec);
  auto loss = finalLoss(**evalParent, 0);
  if (!loss)
    return loss.takeError();
  pe.validationLoss = *loss;
  auto acc = accuracy(**evalParent, 0);
  if (!acc)
    return acc.takeError();
  pe.accuracy = acc->exact;
  pe.tokenAccuracy = acc->tokens;
  result.evals.push_back(pe);
  if (spec.has_elastic()) {
    auto created = Session::create(context, spec, batch, length, depthOrder, options.device);
    if (!created)
      return created.takeError();
    Session &e = **created;
    e.teacher = result.parent;
    TensorMap baseline = result.elastic;
    for (auto &[name, t] : result.parent)
      baseline.at(name) = t; // the parent's weights with the trained routers' choice
    for (int32_t b = 0; b < spec.elastic().budgets_size(); ++b) {
      ModelEval me;
      me.name = spec.elastic().budgets(b).name();
      me.sizes = routerChoice(spec, result.elastic, b, depthOrder).sizes;
      me.params = spec::countParams(fixed, me.sizes).total();
      me.fraction = me.params / parentParams;
      for (bool cut : {false, true}) {
        e.weights = cut ? baseline : result.elastic;
        auto l = finalLoss(e, b);
        if (!l)
          return l.takeError();
        auto a = accuracy(e, b);
        if (!a)
          return a.takeError();
        if (cut) {
          me.baselineLoss = *l;
          me.baselineAccuracy = a->exact;
          me.baselineTokenAccuracy = a->tokens;
        } else {
          me.validationLoss = *l;
          me.accuracy = a->exact;
          me.tokenAccuracy = a->tokens;
        }
      }
      result.evals.push_back(me);
    }
  }
  for (const ModelEval &me : result.evals)
    run.log({{"kind", "eval"},
             {"phase", "final"},
             {"step", state.step},
             {"budget", me.name},
             {"validation_loss", me.validationLoss},
             {"accuracy", optionalJson(me.accuracy)},
             {"token_accuracy", optionalJson(me.tokenAccuracy)}});
  message(
      llvm::formatv("evaluation: {0} models in {1:F1} s", result.evals.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count())
          .str());
  return llvm::Error::success();
}

llvm::Error Pipeline::writeSummary() {
  if (!run.enabled())
    return llvm::Error::success();
  const spec::Training &tr = spec.training();
  int64_t tokens = 0;
  for (const spec::Stage &st : tr.stages())
    tokens += st.steps() * st.batch_size() * st.sequence_length();
  if (!spec.has_elastic())
    tokens = tr.parent().steps() * tr.parent().batch_size() * tr.parent().sequence_length();
  json axes = json::object();
  if (spec.has_elastic()) {
    for (const spec::RouterAxis &axis : spec::routerAxes()) {
      const spec::AxisChoices &c = (spec.elastic().*axis.choices)();
      if (c.choices_size() > 0)
        axes[axis.name] = std::vector<int64_t>(c.choices().begin(), c.choices().end());
    }
    std::vector<int64_t> depth;
    for (int64_t k = 0; k <= spec.elastic().max_dropped_layers(); ++k)
      depth.push_back(k);
    axes["depth"] = depth;
  }
  json rows = json::array();
  for (const ModelEval &me : result.evals)
    rows.push_back({{"name", me.name},
                    {"fraction", me.fraction},
                    {"params", int64_t(me.params)},
                    {"validation_loss", me.validationLoss},
                    {"accuracy", optionalJson(me.accuracy)},
                    {"baseline_loss", optionalJson(me.baselineLoss)},
                    {"baseline_accuracy", optionalJson(me.baselineAccuracy)},
                    {"token_accuracy", optionalJson(me.tokenAccuracy)},
                    {"baseline_token_accuracy", optionalJson(me.baselineTokenAccuracy)},
                    {"architecture", sizesJson(spec, me.sizes)}});
  const spec::Architecture &a = spec.architecture();
  json summary = {{"name", spec.name()},
                  {"pattern", a.hybrid_override_pattern()},
                  {"tokens", tokens},
                  {"axes", axes},
                  {"rows", rows},
                  {"parent_sizes",
                   {{"hidden_size", a.hidden_size()},
                    {"intermediate_size", a.intermediate_size()},
                    {"num_attention_heads", a.num_attention_heads()},
                    {"mamba_num_heads", a.mamba_num_heads()},
                    {"mamba_head_dim", a.mamba_head_dim()}}}};
  if (llvm::Error err = ckpt::writeFileAtomic(run.path("summary.json"), summary.dump(1) + "\n"))
    return err;
  const TensorMap &final = spec.has_elastic() ? result.elastic : result.parent;
  if (llvm::Error err = ckpt::writeSafetensors(run.path("model.safetensors"), final,
                                               {{"format", "nestor"}, {"role", "model"}}))
    return err;
  auto page = report::writeReport(options.runDir);
  if (!page)
    return page.takeError();
  state.phase = "done";
  state.checkpoint.clear();
  if (llvm::Error err = run.writeState(state, json::object()))
    return err;
  run.removeOldCheckpoints(state);
  return llvm::Error::success();
}

llvm::Expected<RunResult> Pipeline::execute() {
  if (llvm::Error err = start())
    return err;
  const spec::Training &tr = spec.training();
  totalSteps = (state.parentDone || options.initialParent ? 0 : tr.parent().steps());
  if (spec.has_elastic())
    for (const spec::Stage &st : tr.stages())
      totalSteps += st.steps();
  stepsBefore = state.phase == "parent" ? (state.parentDone ? 0 : state.step) : state.step;
  if (state.phase == "done") {
    message("the run is complete; nothing to resume");
    return llvm::createStringError("%s: the run is already complete", options.runDir.c_str());
  }
  if (state.phase == "parent")
    if (llvm::Error err = parentPhase())
      return err;
  if (stopped) {
    result.interrupted = true;
    return result;
  }
  if (spec.has_elastic()) {
    if (llvm::Error err = importancePhase())
      return err;
    if (llvm::Error err = elasticPhase())
      return err;
    if (stopped) {
      result.interrupted = true;
      return result;
    }
  } else if (state.phase != "parent") {
    return llvm::createStringError("%s: a dense run has no elastic phase", options.runDir.c_str());
  }
  if (llvm::Error err = evaluatePhase())
    return err;
  if (llvm::Error err = writeSummary())
    return err;
  return result;
}

} // namespace

llvm::Expected<Importance> nestor::train::readImportance(llvm::StringRef path) {
  auto j = ckpt::readJsonObject(path);
  if (!j)
    return j.takeError();
  Importance imp;
  try {
    j->at("hidden").get_to(imp.hidden);
    j->at("ffn").get_to(imp.ffn);
    j->at("attention_heads").get_to(imp.attnHeads);
    j->at("mamba_heads").get_to(imp.mambaHeads);
    j->at("mamba_channels").get_to(imp.mambaChannels);
    j->at("depth_order").get_to(imp.depthOrder);
    j->at("depth_scores").get_to(imp.depthScores);
  } catch (const json::exception &e) {
    return llvm::createStringError("%s: %s", path.str().c_str(), e.what());
  }
  return imp;
}

llvm::Expected<RunResult> nestor::train::runPipeline(MLIRContext &context,
                                                     const spec::ModelSpec &spec,
                                                     const BatchFn &data, Listener &listener,
                                                     const RunOptions &options) {
  return Pipeline(context, spec, data, listener, options).execute();
}
