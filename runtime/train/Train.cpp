//===- Train.cpp - The elastic training loop on the CPU backend ------------===//
#include "nestor/Train.h"

#ifdef NESTOR_HAVE_CUDA
#include "nestor/DeviceProgram.h"
#endif

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

using namespace mlir;
using namespace nestor;
using namespace nestor::train;

uint64_t nestor::train::randomBits(uint64_t seed, uint64_t stream, uint64_t index) {
  // SplitMix64 finaliser over a combination of the three keys (distinct odd multipliers keep
  // nearby keys apart).
  uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (stream + 1) * 0xC2B2AE3D27D4EB4Full ^
               (index + 1) * 0x165667B19E3779F9ull;
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double nestor::train::randomUniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (static_cast<double>(randomBits(seed, stream, index) >> 11) + 0.5) * 0x1.0p-53;
}

double nestor::train::randomNormal(uint64_t seed, uint64_t stream, uint64_t index) {
  // Box-Muller from two independent uniforms of the same index.
  double u1 = randomUniform(seed, stream, 2 * index),
         u2 = randomUniform(seed, stream, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

namespace {
/// Random streams, one per purpose, so that adding a draw somewhere changes nothing elsewhere.
enum Stream : uint64_t { kInit = 1, kBudget = 2, kHardSample = 3, kGumbelSeed = 4 };
} // namespace

TensorMap nestor::train::initParams(const std::vector<StepArg> &args, const spec::ModelSpec &spec,
                                    uint64_t seed) {
  const spec::Architecture &a = spec.architecture();
  double layers = static_cast<double>(a.hybrid_override_pattern().size());
  double routerStd =
      spec.elastic().router().has_init_std() ? spec.elastic().router().init_std() : 0.1;
  TensorMap out;
  for (auto entry : llvm::enumerate(args)) {
    // Named, not a structured binding: the fill lambdas below capture it (C++17).
    const auto &arg = entry.value();
    size_t index = entry.index();
    if (!arg.isParam)
      continue;
    Tensor t;
    t.shape = arg.shape;
    t.data.resize(arg.numel());
    llvm::StringRef name(arg.name);
    // Each parameter draws from its own stream (keyed by its position), so adding a layer does
    // not shift the others' values.
    uint64_t stream = kInit * 1000003 + index;
    auto fill = [&](auto value) {
      for (int64_t i = 0; i < arg.numel(); ++i)
        t.data[i] = static_cast<float>(value(i));
    };
    if (name.starts_with("routers.")) {
      if (name.ends_with(".weight"))
        fill([&](int64_t i) { return routerStd * randomNormal(seed, stream, i); });
      else
        fill([](int64_t) { return 0.0; });
    } else if (name.ends_with("norm.weight") || name.ends_with("norm_f.weight") ||
               name.ends_with(".D")) {
      fill([](int64_t) { return 1.0; });
    } else if (name.ends_with("conv1d.weight")) {
      double bound = 1.0 / std::sqrt(static_cast<double>(arg.shape.back()));
      fill([&](int64_t i) { return bound * (2 * randomUniform(seed, stream, i) - 1); });
    } else if (name.ends_with("conv1d.bias")) {
      fill([](int64_t) { return 0.0; });
    } else if (name.ends_with("A_log")) {
      fill([&](int64_t i) { return std::log(1.0 + 15.0 * randomUniform(seed, stream, i)); });
    } else if (name.ends_with("dt_bias")) {
      fill([&](int64_t i) {
        double dt = std::exp(std::log(1e-3) +
                             (std::log(1e-1) - std::log(1e-3)) * randomUniform(seed, stream, i));
        return dt + std::log(-std::expm1(-dt)); // softplus^-1(dt)
      });
    } else {
      bool output = name.ends_with("out_proj.weight") || name.ends_with("down_proj.weight") ||
                    name.ends_with("o_proj.weight");
      double std = output ? 0.02 / std::sqrt(2.0 * layers) : 0.02;
      fill([&](int64_t i) { return std * randomNormal(seed, stream, i); });
    }
    out[arg.name] = std::move(t);
  }
  return out;
}

double nestor::train::learningRate(const spec::Optimizer &opt, int64_t step, int64_t total) {
  double lr = opt.has_learning_rate() ? opt.learning_rate() : 1e-3;
  double minLr = opt.has_min_learning_rate() ? opt.min_learning_rate() : lr / 10;
  int64_t warmup = opt.has_warmup_steps() ? opt.warmup_steps() : 0;
  if (step < warmup)
    return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  double progress = total > warmup
                        ? static_cast<double>(step - warmup) / static_cast<double>(total - warmup)
                        : 1.0;
  progress = std::min(1.0, std::max(0.0, progress));
  return minLr + 0.5 * (lr - minLr) * (1.0 + std::cos(M_PI * progress));
}

RouterSchedule nestor::train::routerSchedule(const spec::Elastic &elastic, int64_t step,
                                             int64_t total, uint64_t seed) {
  const spec::Router &r = elastic.router();
  double tau0 = r.has_tau_initial() ? r.tau_initial() : 1.0;
  double tauN = r.has_tau_final() ? r.tau_final() : 0.05;
  double s0 = r.has_logit_scale_initial() ? r.logit_scale_initial() : 1.0;
  double sN = r.has_logit_scale_final() ? r.logit_scale_final() : 10.0;
  double hard = r.has_hard_sample_fraction() ? r.hard_sample_fraction() : 0.004;
  double t = total > 1 ? static_cast<double>(step) / static_cast<double>(total - 1) : 1.0;
  t = std::min(1.0, std::max(0.0, t));
  RouterSchedule s;
  s.tau = tau0 * std::pow(tauN / tau0, t); // tau_t = tau0 r^t, r = (tauN / tau0)^(1/T)
  s.logitScale = s0 + (sN - s0) * t;
  s.hardSample = randomUniform(seed, kHardSample, static_cast<uint64_t>(step)) < hard;
  return s;
}

int32_t nestor::train::sampleBudget(const spec::Stage &stage, int64_t numBudgets, int64_t step,
                                    uint64_t seed) {
  double u = randomUniform(seed, kBudget, static_cast<uint64_t>(step));
  if (stage.budget_weights_size() == 0)
    return static_cast<int32_t>(std::min<int64_t>(numBudgets - 1, u * numBudgets));
  double total = 0;
  for (double w : stage.budget_weights())
    total += w;
  double acc = 0;
  for (int i = 0; i < stage.budget_weights_size(); ++i) {
    acc += stage.budget_weights(i) / total;
    if (u < acc)
      return i;
  }
  return stage.budget_weights_size() - 1;
}

#ifdef NESTOR_HAVE_CUDA
struct Session::DeviceSteps {
  std::unique_ptr<runtime::DeviceProgram> step, teacher;
};
#else
struct Session::DeviceSteps {};
#endif

Session::~Session() = default;

llvm::Expected<std::unique_ptr<Session>>
Session::create(MLIRContext &context, const spec::ModelSpec &spec, int64_t batch, int64_t length,
                std::vector<int64_t> depthOrder, runtime::KernelDevice *device) {
#ifndef NESTOR_HAVE_CUDA
  if (device)
    return llvm::createStringError("this Nestor was built without the CUDA toolkit (NVRTC): no "
                                   "CUDA device support");
#endif
  std::unique_ptr<Session> s(new Session());
  s->isElastic = spec.has_elastic();
  s->batch = batch;
  s->length = length;
  StepOptions options;
  options.batch = batch;
  options.seqLen = length;
  options.depthOrder = std::move(depthOrder);
  auto compiled = compileTrainStep(context, spec, options);
  if (!compiled)
    return compiled.takeError();
  s->compiled = std::move(*compiled);
  for (const StepArg &a : s->compiled->args)
    if (a.isParam)
      s->paramArgs.push_back(a);
  if (s->isElastic) {
    s->teacherFunc = s->compiled->module->lookupSymbol<func::FuncOp>("parent");
    if (!s->teacherFunc)
      return llvm::createStringError("the elastic module has no @parent (the teacher)");
    auto teacher = prepareCpu(s->teacherFunc);
    if (!teacher)
      return teacher.takeError();
    s->teacherProgram = std::move(*teacher);
    s->teacherLogits.assign(batch * length * spec.architecture().vocab_size(), 0.0f);
  }
  auto optimizer = compileOptimizer(context, s->paramArgs,
                                    spec.has_elastic() || !spec.training().has_parent()
                                        ? spec.training().optimizer()
                                        : spec.training().parent().optimizer());
  if (!optimizer)
    return optimizer.takeError();
  s->optimizer = std::move(*optimizer);
#ifdef NESTOR_HAVE_CUDA
  if (device) {
    s->onDevice = std::make_shared<DeviceSteps>();
    auto step = runtime::DeviceProgram::create(s->compiled->step, *device);
    if (!step)
      return step.takeError();
    s->onDevice->step = std::move(*step);
    if (s->isElastic) {
      auto teacher = runtime::DeviceProgram::create(s->teacherFunc, *device);
      if (!teacher)
        return teacher.takeError();
      s->onDevice->teacher = std::move(*teacher);
    }
  }
#endif
  for (const StepArg &a : s->paramArgs) {
    s->expAvg[a.name] = Tensor{a.shape, std::vector<float>(a.numel(), 0.0f)};
    s->expAvgSq[a.name] = Tensor{a.shape, std::vector<float>(a.numel(), 0.0f)};
  }
  return s;
}

llvm::Error Session::runTeacher(const int32_t *tokens) {
  std::vector<const void *> args;
  for (unsigned i = 0; i < teacherFunc.getNumArguments(); ++i) {
    if (auto p = teacherFunc.getArgAttrOfType<StringAttr>(i, "elastic.param")) {
      auto it = teacher.find(p.str());
      if (it == teacher.end())
        return llvm::createStringError("teacher parameter '%s' is missing", p.str().c_str());
      args.push_back(it->second.data.data());
    } else {
      args.push_back(tokens);
    }
  }
#ifdef NESTOR_HAVE_CUDA
  if (onDevice) {
    if (llvm::Error err = onDevice->teacher->run(args))
      return err;
    auto logits = onDevice->teacher->result(0);
    if (!logits)
      return logits.takeError();
    std::memcpy(teacherLogits.data(), *logits, sizeof(float) * teacherLogits.size());
    return llvm::Error::success();
  }
#endif
  if (llvm::Error err = toError(teacherProgram->run(args)))
    return err;
  std::memcpy(teacherLogits.data(), teacherProgram->result(0),
              sizeof(float) * teacherLogits.size());
  return llvm::Error::success();
}

llvm::Error Session::runStep(llvm::ArrayRef<const void *> args) {
#ifdef NESTOR_HAVE_CUDA
  if (onDevice) {
    if (llvm::Error err = onDevice->step->run(args))
      return err;
    deviceResults.clear();
    for (unsigned i = 0; i < onDevice->step->numResults(); ++i) {
      auto r = onDevice->step->result(i);
      if (!r)
        return r.takeError();
      deviceResults.push_back(*r);
    }
    return llvm::Error::success();
  }
#endif
  return toError(compiled->program->run(args));
}

const void *Session::result(unsigned i) const {
  return onDevice ? deviceResults.at(i) : compiled->program->result(i);
}

namespace {
/// The step's scalar inputs, held while it runs.
struct Scalars {
  float tau = 1, scale = 1;
  uint8_t hard = 0;
  int64_t seed = 0;
  int32_t budget = 0;
};
} // namespace

llvm::Expected<StepReport> Session::step(const StepInputs &in) {
  if (isElastic)
    if (llvm::Error err = runTeacher(in.tokens))
      return err;
  Scalars sc;
  sc.tau = static_cast<float>(in.router.tau);
  sc.scale = static_cast<float>(in.router.logitScale);
  sc.hard = in.router.hardSample ? 1 : 0;
  sc.seed = in.seed;
  sc.budget = in.budget;
  std::vector<const void *> args;
  for (const StepArg &a : compiled->args) {
    if (a.isParam) {
      args.push_back(weights.at(a.name).data.data());
      continue;
    }
    if (a.name == "tokens")
      args.push_back(in.tokens);
    else if (a.name == "targets")
      args.push_back(in.targets);
    else if (a.name == "teacher_logits")
      args.push_back(teacherLogits.data());
    else if (a.name == "budget")
      args.push_back(&sc.budget);
    else if (a.name == "tau")
      args.push_back(&sc.tau);
    else if (a.name == "logit_scale")
      args.push_back(&sc.scale);
    else if (a.name == "hard_sample")
      args.push_back(&sc.hard);
    else if (a.name == "seed")
      args.push_back(&sc.seed);
    else
      return llvm::createStringError("the train step takes an unknown input '%s'", a.name.c_str());
  }
  if (llvm::Error err = runStep(args))
    return err;
  auto scalar = [&](unsigned i) { return double(*static_cast<const float *>(result(i))); };
  StepReport r;
  r.budget = in.budget;
  r.loss = scalar(1);
  if (isElastic) {
    r.kd = scalar(2);
    r.ce = scalar(3);
    r.routerLoss = scalar(4);
  } else {
    r.ce = r.loss;
  }
  r.lr = in.lr;
  r.tau = in.router.tau;
  r.logitScale = in.router.logitScale;
  if (!std::isfinite(r.loss)) {
    // Name where it comes from: the first weight (the student's, then the frozen teacher's)
    // or teacher logit that is not finite; none means the step's own arithmetic overflowed.
    std::string what = std::isnan(r.loss) ? "NaN" : "infinite";
    auto firstBad = [](const std::vector<float> &v) {
      return std::find_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); }) -
             v.begin();
    };
    auto scan = [&](const TensorMap &map, const char *whose) -> std::optional<std::string> {
      for (const auto &[name, t] : map)
        if (size_t at = firstBad(t.data); at < t.data.size())
          return llvm::formatv("{0} weight {1} holds {2} at element {3}", whose, name,
                               std::isnan(t.data[at]) ? "NaN" : "an infinity", at)
              .str();
      return std::nullopt;
    };
    std::optional<std::string> source = scan(weights, "the student's");
    if (!source && isElastic)
      source = scan(teacher, "the teacher's");
    if (!source && isElastic)
      if (size_t at = firstBad(teacherLogits); at < teacherLogits.size())
        source = llvm::formatv("the teacher's logits are not finite (element {0})", at).str();
    return llvm::createStringError(
        "the loss is %s: %s", what.c_str(),
        source ? source->c_str()
               : "every weight and teacher logit is finite, so the step's arithmetic overflowed "
                 "(try a lower learning rate)");
  }

  // Global gradient norm, then clipping and AdamW, in place.
  std::vector<const void *> grads;
  for (unsigned i = 0; i < paramArgs.size(); ++i)
    grads.push_back(result(compiled->numForwardResults + i));
  if (llvm::Error err = toError(optimizer->gradNorm->run(grads)))
    return err;
  double sq = *static_cast<const double *>(optimizer->gradNorm->result(0));
  if (!std::isfinite(sq)) {
    // Name the first gradient that is not finite.
    for (auto [i, a] : llvm::enumerate(paramArgs)) {
      const float *g = static_cast<const float *>(grads[i]);
      for (int64_t j = 0; j < a.numel(); ++j)
        if (!std::isfinite(g[j]))
          return llvm::createStringError("the gradient of %s is not finite (element %lld)",
                                         a.name.c_str(), static_cast<long long>(j));
    }
    return llvm::createStringError("the gradient norm is not finite");
  }
  r.gradNorm = std::sqrt(sq);
  double clip = in.clipNorm > 0 && r.gradNorm > in.clipNorm ? in.clipNorm / r.gradNorm : 1.0;
  double hyperModel[3] = {in.lr, double(in.adamStep), clip};
  double hyperRouter[3] = {in.routerLr, double(in.adamStep), clip};
  std::vector<const void *> opt;
  for (const StepArg &a : paramArgs)
    opt.push_back(weights.at(a.name).data.data());
  llvm::append_range(opt, grads);
  for (const StepArg &a : paramArgs)
    opt.push_back(expAvg.at(a.name).data.data());
  for (const StepArg &a : paramArgs)
    opt.push_back(expAvgSq.at(a.name).data.data());
  opt.push_back(hyperModel);
  opt.push_back(hyperRouter);
  if (llvm::Error err = toError(optimizer->step->run(opt)))
    return err;
  return r;
}

const float *Session::logits() const { return static_cast<const float *>(result(0)); }

llvm::Expected<StepReport> Session::evaluate(const int32_t *tokens, const int32_t *targets,
                                             int32_t budget) {
  // The step program computes gradients too; evaluation reads its losses and applies no update.
  if (isElastic)
    if (llvm::Error err = runTeacher(tokens))
      return err;
  // Inference choice: argmax of the router logits (a huge logit scale drowns the Gumbel
  // noise), a straight-through one-hot sample so the masks' scale is 1.
  Scalars sc;
  sc.tau = 1.0f;
  sc.scale = 1e6f;
  sc.hard = 1;
  sc.budget = budget;
  std::vector<const void *> args;
  for (const StepArg &a : compiled->args) {
    if (a.isParam)
      args.push_back(weights.at(a.name).data.data());
    else if (a.name == "tokens")
      args.push_back(tokens);
    else if (a.name == "targets")
      args.push_back(targets);
    else if (a.name == "teacher_logits")
      args.push_back(teacherLogits.data());
    else if (a.name == "budget")
      args.push_back(&sc.budget);
    else if (a.name == "tau")
      args.push_back(&sc.tau);
    else if (a.name == "logit_scale")
      args.push_back(&sc.scale);
    else if (a.name == "hard_sample")
      args.push_back(&sc.hard);
    else
      args.push_back(&sc.seed);
  }
  if (llvm::Error err = runStep(args))
    return err;
  auto scalar = [&](unsigned i) { return double(*static_cast<const float *>(result(i))); };
  StepReport r;
  r.budget = budget;
  r.loss = scalar(1);
  r.ce = isElastic ? scalar(3) : r.loss;
  r.kd = isElastic ? scalar(2) : 0;
  r.routerLoss = isElastic ? scalar(4) : 0;
  return r;
}
