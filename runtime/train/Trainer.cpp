//===- Trainer.cpp - The whole elastic training pipeline -------------------===//
#include "nestor/Trainer.h"

#include "llvm/ADT/StringExtras.h"

#include <chrono>

using namespace mlir;
using namespace nestor;
using namespace nestor::train;

spec::ModelSpec nestor::train::parentSpec(const spec::ModelSpec &spec) {
  spec::ModelSpec parent = spec;
  parent.clear_elastic();
  return parent;
}

namespace {

uint64_t seedOf(const spec::ModelSpec &spec) {
  return spec.training().has_seed() ? spec.training().seed() : 0;
}

int64_t evalBatches(const spec::ModelSpec &spec) {
  return spec.training().has_eval_batches() ? spec.training().eval_batches() : 4;
}

double clipOf(const spec::Optimizer &o) {
  return o.has_grad_clip_norm() ? o.grad_clip_norm() : 1.0;
}

/// Mean validation loss of `session` at `budget` over the spec's evaluation batches.
llvm::Expected<double> validate(Session &session, const BatchFn &data, int64_t batches,
                                int64_t batch, int64_t length, int32_t budget) {
  std::vector<int32_t> tokens(batch * length), targets(batch * length);
  double total = 0;
  for (int64_t b = 0; b < batches; ++b) {
    data(true, b, batch, length, tokens.data(), targets.data());
    auto r = session.evaluate(tokens.data(), targets.data(), budget);
    if (!r)
      return r.takeError();
    total += r->ce;
  }
  return total / static_cast<double>(std::max<int64_t>(batches, 1));
}

} // namespace

llvm::Expected<RunResult> nestor::train::runPipeline(MLIRContext &context,
                                                     const spec::ModelSpec &spec,
                                                     const BatchFn &data, Listener &listener,
                                                     const TensorMap *initialParent) {
  if (!spec.has_elastic())
    return llvm::createStringError("the pipeline needs a spec with an elastic section");
  if (spec.training().stages_size() == 0)
    return llvm::createStringError("training.stages is empty: nothing to train");
  uint64_t seed = seedOf(spec);
  RunResult result;
  spec::ModelSpec dense = parentSpec(spec);
  const spec::Training &tr = spec.training();

  // 1. The parent.
  const spec::ParentTraining &pt = tr.parent();
  int64_t pBatch = pt.batch_size() > 0 ? pt.batch_size() : tr.stages(0).batch_size();
  int64_t pLength =
      pt.sequence_length() > 0 ? pt.sequence_length() : tr.stages(0).sequence_length();
  auto parent = Session::create(context, dense, pBatch, pLength);
  if (!parent)
    return parent.takeError();
  if (initialParent) {
    (*parent)->weights = *initialParent;
    listener.onMessage("parent: loaded, not trained");
  } else {
    (*parent)->weights = initParams((*parent)->params(), dense, seed);
    const spec::Optimizer &opt = pt.has_optimizer() ? pt.optimizer() : tr.optimizer();
    std::vector<int32_t> tokens(pBatch * pLength), targets(pBatch * pLength);
    for (int64_t s = 0; s < pt.steps(); ++s) {
      data(false, s, pBatch, pLength, tokens.data(), targets.data());
      Session::StepInputs in{tokens.data(), targets.data()};
      in.lr = learningRate(opt, s, pt.steps());
      in.clipNorm = clipOf(opt);
      in.adamStep = s + 1;
      auto start = std::chrono::steady_clock::now();
      auto r = (*parent)->step(in);
      if (!r)
        return llvm::createStringError("parent step %lld: %s", static_cast<long long>(s),
                                       llvm::toString(r.takeError()).c_str());
      r->step = s;
      r->phase = "parent";
      r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      listener.onStep(*r, s, pt.steps());
    }
  }

  // 2. Importance and the permutation that makes every budget a prefix.
  const spec::Importance &ip = tr.importance();
  int64_t iBatch = ip.has_batch_size() ? ip.batch_size() : 8;
  int64_t iLength =
      ip.has_sequence_length() ? ip.sequence_length() : tr.stages(0).sequence_length();
  int64_t iBatches = ip.has_calibration_batches() ? ip.calibration_batches() : 8;
  auto imp = estimateImportance(context, spec, (*parent)->weights, data, iBatches, iBatch, iLength);
  if (!imp)
    return imp.takeError();
  result.importance = std::move(*imp);
  ModelPermutation perm = permutationFor(spec, result.importance);
  result.parent = (*parent)->weights;
  if (llvm::Error err = permuteWeights(spec, perm, result.parent))
    return err;
  listener.onMessage("importance: depth order (least important first) " +
                     llvm::join(llvm::map_range(result.importance.depthOrder,
                                                [](int64_t l) { return std::to_string(l); }),
                                ","));

  // 3. The elastic stages.
  int64_t total = 0;
  for (const spec::Stage &st : tr.stages())
    total += st.steps();
  TensorMap weights, expAvg, expAvgSq;
  int64_t global = 0;
  double routerMult =
      spec.elastic().router().has_lr_multiplier() ? spec.elastic().router().lr_multiplier() : 100.0;
  std::unique_ptr<Session> last;
  for (const spec::Stage &st : tr.stages()) {
    auto session = Session::create(context, spec, st.batch_size(), st.sequence_length(),
                                   result.importance.depthOrder);
    if (!session)
      return session.takeError();
    Session &e = **session;
    if (weights.empty()) {
      e.weights = initParams(e.params(), spec, seed + 1); // routers; model weights below
      for (auto &[name, t] : result.parent)
        e.weights.at(name) = t;
    } else {
      e.weights = std::move(weights);
      e.expAvg = std::move(expAvg);
      e.expAvgSq = std::move(expAvgSq);
    }
    e.teacher = result.parent;
    std::vector<int32_t> tokens(st.batch_size() * st.sequence_length()),
        targets(st.batch_size() * st.sequence_length());
    for (int64_t s = 0; s < st.steps(); ++s, ++global) {
      // Batches of the elastic phase are numbered after the parent's.
      data(false, pt.steps() + global, st.batch_size(), st.sequence_length(), tokens.data(),
           targets.data());
      Session::StepInputs in{tokens.data(), targets.data()};
      in.budget = sampleBudget(st, spec.elastic().budgets_size(), global, seed);
      in.router = routerSchedule(spec.elastic(), global, total, seed);
      in.seed = static_cast<int64_t>(randomBits(seed, 4, static_cast<uint64_t>(global)) >> 1);
      in.lr = learningRate(tr.optimizer(), global, total);
      in.routerLr = in.lr * routerMult;
      in.clipNorm = clipOf(tr.optimizer());
      in.adamStep = global + 1;
      auto start = std::chrono::steady_clock::now();
      auto r = e.step(in);
      if (!r)
        return llvm::createStringError("stage '%s' step %lld: %s", st.name().c_str(),
                                       static_cast<long long>(s),
                                       llvm::toString(r.takeError()).c_str());
      r->step = global;
      r->phase = st.name();
      r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      listener.onStep(*r, s, st.steps());
    }
    weights = std::move(e.weights);
    expAvg = std::move(e.expAvg);
    expAvgSq = std::move(e.expAvgSq);
    last = std::move(*session);
  }
  result.elastic = weights;
  last->weights = std::move(weights);

  // 4. Evaluation on the same validation batches: the parent, then every budget, and each
  // budget's sub-network cut from the parent without elastic training (the baseline).
  const spec::Stage &evalStage = tr.stages(tr.stages_size() - 1);
  int64_t eBatch = evalStage.batch_size(), eLength = evalStage.sequence_length();
  auto evalParent = Session::create(context, dense, eBatch, eLength);
  if (!evalParent)
    return evalParent.takeError();
  (*evalParent)->weights = result.parent;
  auto parentLoss = validate(**evalParent, data, evalBatches(spec), eBatch, eLength, 0);
  if (!parentLoss)
    return parentLoss.takeError();
  result.evals.push_back({"parent", *parentLoss, *parentLoss});
  TensorMap baseline = last->weights;
  for (auto &[name, t] : result.parent)
    baseline.at(name) = t; // parent weights, trained routers
  for (int b = 0; b < spec.elastic().budgets_size(); ++b) {
    last->weights = result.elastic;
    auto loss = validate(*last, data, evalBatches(spec), eBatch, eLength, b);
    if (!loss)
      return loss.takeError();
    last->weights = baseline;
    auto base = validate(*last, data, evalBatches(spec), eBatch, eLength, b);
    if (!base)
      return base.takeError();
    result.evals.push_back({spec.elastic().budgets(b).name(), *loss, *base});
  }
  last->weights = result.elastic;
  return result;
}
