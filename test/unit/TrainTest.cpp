//===- TrainTest.cpp - The training loop's pieces ---------------------------===//
//
// Schedules against their formulas, sampling frequencies, and short runs of the parent and the
// elastic phases on a small hybrid: the loss falls, the same seed gives the same weights bit for
// bit, the routers learn, and a non-finite loss stops the step with a clear message.
//
//===----------------------------------------------------------------------===//
#include "nestor/Train.h"
#include "nestor/Importance.h"
#include "nestor/Trainer.h"

#include "nestor/Checkpoint.h"
#include "nestor/Compile.h"
#include "nestor/Slice.h"

#include "nlohmann/json.hpp"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

using namespace nestor;
using namespace nestor::train;

namespace {

spec::ModelSpec smallSpec(bool elastic) {
  spec::ModelSpec spec;
  spec.set_name("small");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-*-");
  a->set_hidden_size(32);
  a->set_intermediate_size(48);
  a->set_mamba_num_heads(4);
  a->set_mamba_head_dim(8);
  a->set_n_groups(2);
  a->set_ssm_state_size(4);
  a->set_conv_kernel(4);
  a->set_num_attention_heads(4);
  a->set_num_key_value_heads(2);
  a->set_head_dim(8);
  a->set_vocab_size(16);
  spec::Optimizer *o = spec.mutable_training()->mutable_optimizer();
  o->set_learning_rate(1e-2);
  o->set_warmup_steps(2);
  o->set_weight_decay(0.0);
  if (elastic) {
    spec::Elastic *e = spec.mutable_elastic();
    for (auto [n, f] : {std::pair{"full", 1.0}, {"half", 0.5}}) {
      auto *b = e->add_budgets();
      b->set_name(n);
      b->set_fraction(f);
    }
    for (int64_t k : {32, 16})
      e->mutable_hidden_size()->add_choices(k);
    for (int64_t k : {48, 24})
      e->mutable_intermediate_size()->add_choices(k);
    for (int64_t k : {4, 2})
      e->mutable_mamba_num_heads()->add_choices(k);
    e->set_max_dropped_layers(1);
    e->set_mask_mode(spec::HARD);
    e->mutable_router()->set_hidden_size(8);
    e->mutable_router()->set_lr_multiplier(10);
  }
  return spec;
}

/// A learnable toy language: token t+1 = (token t * 3 + 1) mod 16, from a per-row start.
void toyBatch(const BatchRequest &r, int32_t *tokens, int32_t *targets) {
  int64_t step = r.index, batch = r.batch, length = r.length;
  for (int64_t b = 0; b < batch; ++b) {
    int32_t t = static_cast<int32_t>((step * 7 + b * 5) % 16);
    for (int64_t i = 0; i < length; ++i) {
      tokens[b * length + i] = t;
      t = (t * 3 + 1) % 16;
      targets[b * length + i] = t;
    }
  }
}

TEST(ScheduleTest, LearningRateWarmupAndCosine) {
  spec::Optimizer o;
  o.set_learning_rate(1.0);
  o.set_min_learning_rate(0.1);
  o.set_warmup_steps(4);
  EXPECT_DOUBLE_EQ(learningRate(o, 0, 104), 0.25);
  EXPECT_DOUBLE_EQ(learningRate(o, 3, 104), 1.0);
  EXPECT_DOUBLE_EQ(learningRate(o, 4, 104), 1.0);
  EXPECT_NEAR(learningRate(o, 54, 104), 0.55, 1e-12); // half way down the cosine
  EXPECT_NEAR(learningRate(o, 104, 104), 0.1, 1e-12);
}

TEST(ScheduleTest, RouterScheduleEndpoints) {
  spec::Elastic e;
  e.mutable_router()->set_tau_initial(1.0);
  e.mutable_router()->set_tau_final(0.05);
  e.mutable_router()->set_hard_sample_fraction(0.25);
  RouterSchedule first = routerSchedule(e, 0, 101, 3), last = routerSchedule(e, 100, 101, 3);
  EXPECT_DOUBLE_EQ(first.tau, 1.0);
  EXPECT_NEAR(last.tau, 0.05, 1e-12);
  EXPECT_NEAR(routerSchedule(e, 50, 101, 3).tau, std::sqrt(0.05), 1e-12); // exponential
  EXPECT_DOUBLE_EQ(first.logitScale, 1.0);
  EXPECT_DOUBLE_EQ(last.logitScale, 10.0);
  int hard = 0;
  for (int s = 0; s < 4000; ++s)
    hard += routerSchedule(e, s, 4000, 3).hardSample;
  EXPECT_NEAR(hard / 4000.0, 0.25, 0.03);
}

TEST(ScheduleTest, BudgetSamplingFollowsTheStageWeights) {
  spec::Stage weighted, uniform;
  for (double w : {0.5, 0.3, 0.2})
    weighted.add_budget_weights(w);
  int counts[3] = {0, 0, 0}, ucounts[3] = {0, 0, 0};
  for (int s = 0; s < 20000; ++s) {
    ++counts[sampleBudget(weighted, 3, s, 9)];
    ++ucounts[sampleBudget(uniform, 3, s, 9)];
  }
  EXPECT_NEAR(counts[0] / 20000.0, 0.5, 0.015);
  EXPECT_NEAR(counts[1] / 20000.0, 0.3, 0.015);
  EXPECT_NEAR(counts[2] / 20000.0, 0.2, 0.015);
  for (int c : ucounts)
    EXPECT_NEAR(c / 20000.0, 1.0 / 3, 0.015);
  // Counter-based: the draw for a step does not depend on the draws before it.
  EXPECT_EQ(sampleBudget(weighted, 3, 1234, 9), sampleBudget(weighted, 3, 1234, 9));
}

/// Trains `steps` parent steps; returns the session.
std::unique_ptr<Session> trainParent(mlir::MLIRContext &ctx, int steps,
                                     std::vector<double> *losses) {
  spec::ModelSpec spec = smallSpec(false);
  auto s = Session::create(ctx, spec, 2, 12);
  EXPECT_TRUE(static_cast<bool>(s)) << llvm::toString(s.takeError());
  if (!s)
    return nullptr;
  (*s)->weights = initParams((*s)->params(), spec, 42);
  std::vector<int32_t> tokens(24), targets(24);
  for (int step = 0; step < steps; ++step) {
    toyBatch(BatchRequest{false, step, 2, 12}, tokens.data(), targets.data());
    Session::StepInputs in{tokens.data(), targets.data()};
    in.lr = learningRate(spec.training().optimizer(), step, steps);
    in.clipNorm = 1.0;
    in.adamStep = step + 1;
    auto r = (*s)->step(in);
    EXPECT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
    if (r && losses)
      losses->push_back(r->loss);
  }
  return std::move(*s);
}

TEST(SessionTest, ParentLossFallsAndRunsAreReproducible) {
  mlir::MLIRContext ctx1, ctx2;
  std::vector<double> losses;
  auto a = trainParent(ctx1, 60, &losses);
  auto b = trainParent(ctx2, 60, nullptr);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(losses.size(), 60u);
  EXPECT_NEAR(losses.front(), std::log(16.0), 0.3); // uniform guess at the start
  EXPECT_LT(losses.back(), 0.3 * losses.front()) << "the toy sequence is deterministic";
  for (auto &[name, t] : a->weights)
    EXPECT_EQ(
        std::memcmp(t.data.data(), b->weights.at(name).data.data(), sizeof(float) * t.data.size()),
        0)
        << name << " differs between two runs with the same seed";
}

TEST(SessionTest, ElasticPhaseDistillsAndTrainsTheRouters) {
  mlir::MLIRContext ctx;
  auto parent = trainParent(ctx, 40, nullptr);
  ASSERT_TRUE(parent);
  spec::ModelSpec spec = smallSpec(true);
  auto s = Session::create(ctx, spec, 2, 12);
  ASSERT_TRUE(static_cast<bool>(s)) << llvm::toString(s.takeError());
  Session &e = **s;
  e.weights = initParams(e.params(), spec, 42);
  for (auto &[name, t] : parent->weights) {
    e.weights.at(name) = t; // the elastic model starts from the parent...
    e.teacher[name] = t;    // ...which is also the frozen teacher
  }
  TensorMap routersBefore;
  for (auto &[name, t] : e.weights)
    if (llvm::StringRef(name).starts_with("routers."))
      routersBefore[name] = t;
  std::vector<int32_t> tokens(24), targets(24);
  double firstHalf = 0, lastHalf = 0;
  int steps = 40;
  for (int step = 0; step < steps; ++step) {
    toyBatch(BatchRequest{false, step, 2, 12}, tokens.data(), targets.data());
    Session::StepInputs in{tokens.data(), targets.data()};
    in.budget = step % 2;
    in.router = routerSchedule(spec.elastic(), step, steps, 1);
    in.seed = step;
    in.lr = 3e-3;
    in.routerLr = 3e-2;
    in.clipNorm = 1.0;
    in.adamStep = step + 1;
    auto r = e.step(in);
    ASSERT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
    ASSERT_TRUE(std::isfinite(r->kd) && std::isfinite(r->routerLoss));
    (step < steps / 2 ? firstHalf : lastHalf) += r->kd;
  }
  EXPECT_LT(lastHalf, firstHalf) << "distillation loss should fall";
  double moved = 0;
  for (auto &[name, t] : routersBefore)
    for (size_t i = 0; i < t.data.size(); ++i)
      moved += std::abs(e.weights.at(name).data[i] - t.data[i]);
  EXPECT_GT(moved, 1e-3) << "the routers receive gradient";
  // Evaluation at each budget: finite, and the full budget reproduces the teacher closely.
  auto full = e.evaluate(tokens.data(), targets.data(), 0);
  auto half = e.evaluate(tokens.data(), targets.data(), 1);
  ASSERT_TRUE(full && half);
  EXPECT_TRUE(std::isfinite(full->ce) && std::isfinite(half->ce));
}

TEST(SessionTest, NonFiniteLossStopsTheStep) {
  mlir::MLIRContext ctx;
  spec::ModelSpec spec = smallSpec(false);
  auto s = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(s));
  (*s)->weights = initParams((*s)->params(), spec, 1);
  (*s)->weights.at("lm_head.weight").data[0] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> before = (*s)->weights.at("backbone.embeddings.weight").data;
  std::vector<int32_t> tokens = {1, 2, 3, 4}, targets = {2, 3, 4, 5};
  Session::StepInputs in{tokens.data(), targets.data()};
  in.lr = 1e-2;
  auto r = (*s)->step(in);
  ASSERT_FALSE(static_cast<bool>(r));
  EXPECT_NE(llvm::toString(r.takeError()).find("the loss is NaN"), std::string::npos);
  EXPECT_EQ((*s)->weights.at("backbone.embeddings.weight").data, before)
      << "a failed step must not update the weights";
}

/// The whole pipeline on the toy language: parent, importance, two stages, evaluation. The
/// smaller budget after elastic training beats the same sub-network cut from the parent.
spec::ModelSpec pipelineSpec() {
  spec::ModelSpec spec = smallSpec(true);
  spec::Training *t = spec.mutable_training();
  t->set_seed(3);
  t->mutable_parent()->set_steps(40);
  t->mutable_parent()->set_batch_size(2);
  t->mutable_parent()->set_sequence_length(12);
  t->mutable_importance()->set_calibration_batches(2);
  t->mutable_importance()->set_batch_size(2);
  t->mutable_importance()->set_sequence_length(12);
  t->set_eval_batches(2);
  auto *s1 = t->add_stages();
  s1->set_name("short");
  s1->set_steps(30);
  s1->set_batch_size(2);
  s1->set_sequence_length(12);
  auto *s2 = t->add_stages();
  s2->set_name("long");
  s2->set_steps(20);
  s2->set_batch_size(1);
  s2->set_sequence_length(24);
  for (double w : {0.7, 0.3})
    s2->add_budget_weights(w);
  return spec;
}

TEST(PipelineTest, ParentImportanceStagesAndEvaluation) {
  mlir::MLIRContext ctx;
  spec::ModelSpec spec = pipelineSpec();
  struct Counter : Listener {
    std::map<std::string, int> steps;
    void onStep(const StepReport &r, const Progress &) override { ++steps[r.phase]; }
  } listener;
  auto run = runPipeline(ctx, spec, toyBatch, listener);
  ASSERT_TRUE(static_cast<bool>(run)) << llvm::toString(run.takeError());
  EXPECT_EQ(listener.steps["parent"], 40);
  EXPECT_EQ(listener.steps["short"], 30);
  EXPECT_EQ(listener.steps["long"], 20);
  ASSERT_EQ(run->evals.size(), 3u);
  EXPECT_EQ(run->evals[0].name, "parent");
  EXPECT_EQ(run->evals[2].name, "half");
  for (const ModelEval &e : run->evals)
    EXPECT_TRUE(std::isfinite(e.validationLoss) && e.validationLoss < std::log(16.0)) << e.name;
  ASSERT_TRUE(run->evals[2].baselineLoss.has_value());
  EXPECT_LE(run->evals[2].validationLoss, *run->evals[2].baselineLoss)
      << "elastic training should help the small budget";
  EXPECT_EQ(run->importance.depthOrder.size(), 4u);
}

/// Importance finds what was made unimportant on purpose: a hidden channel whose pre-norm
/// weights are zero, FFN neurons whose up rows are zero, a Mamba head and a Mamba channel whose
/// x rows are zero, and a layer whose output projection is zero (bypassing it changes nothing).
TEST(ImportanceTest, RanksDeadChannelsHeadsAndLayersLast) {
  mlir::MLIRContext ctx;
  spec::ModelSpec spec = smallSpec(true);
  auto probe = Session::create(ctx, spec, 2, 12);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap w = initParams((*probe)->params(), spec, 5);
  for (auto &[name, t] : w) // larger weights: activations well above rounding
    if (!llvm::StringRef(name).starts_with("routers.") && t.shape.size() == 2)
      for (float &v : t.data)
        v *= 10;
  for (int l = 0; l < 4; ++l)
    w.at("backbone.layers." + std::to_string(l) + ".norm.weight").data[5] = 0;
  for (int neuron : {3, 7})
    for (int c = 0; c < 32; ++c)
      w.at("backbone.layers.1.mixer.up_proj.weight").data[neuron * 32 + c] = 0;
  // Mamba layer 0: H = 4, P = 8, HP = 32; x rows are HP .. 2HP of in_proj.
  auto &in = w.at("backbone.layers.0.mixer.in_proj.weight").data;
  for (int c = 0; c < 32; ++c) {
    for (int p = 0; p < 8; ++p)
      in[(32 + 3 * 8 + p) * 32 + c] = 0; // head 3 (group 1)
    for (int h = 0; h < 4; ++h)
      in[(32 + h * 8 + 6) * 32 + c] = 0; // channel 6 of every head
  }
  std::fill(w.at("backbone.layers.3.mixer.down_proj.weight").data.begin(),
            w.at("backbone.layers.3.mixer.down_proj.weight").data.end(), 0.0f);

  auto imp = estimateImportance(ctx, spec, w, toyBatch, 2, 2, 12);
  ASSERT_TRUE(static_cast<bool>(imp)) << llvm::toString(imp.takeError());
  EXPECT_EQ(imp->hidden[5], 0.0);
  EXPECT_GT(imp->hidden[4], 0.0);
  EXPECT_EQ(imp->ffn[1][3], 0.0);
  EXPECT_EQ(imp->mambaHeads[0][3], 0.0);
  EXPECT_EQ(imp->mambaChannels[0][6], 0.0);
  EXPECT_EQ(imp->depthOrder.front(), 3) << "bypassing the dead layer changes nothing";
  EXPECT_EQ(imp->depthScores[3], 0.0);
  EXPECT_GT(imp->depthScores[0], 0.0);

  ModelPermutation perm = permutationFor(spec, *imp);
  EXPECT_EQ(perm.hidden.back(), 5);
  EXPECT_EQ(perm.ffn[1][46], 3);
  EXPECT_EQ(perm.ffn[1][47], 7);
  EXPECT_EQ(perm.mambaHeads[0][3], 3); // last of group 1 (heads 2, 3)
  EXPECT_EQ(perm.mambaChannels[0].back(), 6);
  EXPECT_FALSE(static_cast<bool>(verifyPermutation(spec, perm)));

  // The permuted weights compute the same parent function (the run continues from them).
  TensorMap permuted = w;
  ASSERT_FALSE(static_cast<bool>(permuteWeights(spec, perm, permuted)));
  EXPECT_EQ(permuted.at("backbone.layers.0.norm.weight").data.back(), 0.0f);
  auto after = estimateImportance(ctx, spec, permuted, toyBatch, 2, 2, 12);
  ASSERT_TRUE(static_cast<bool>(after));
  // Importance follows the channels: the dead ones are now at the end, scores sorted.
  EXPECT_EQ(after->hidden.back(), 0.0);
  EXPECT_TRUE(std::is_sorted(after->hidden.rbegin(), after->hidden.rend()));
  EXPECT_TRUE(std::is_sorted(after->ffn[1].rbegin(), after->ffn[1].rend()));
}

/// A fresh temporary run folder, removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    llvm::SmallString<128> p;
    EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-run", p));
    path = std::string(p);
  }
  ~TempDir() { llvm::sys::fs::remove_directories(path); }
  std::string operator/(const std::string &name) const { return path + "/" + name; }
};

/// The "step" records of a run's metrics.jsonl as (phase, step) -> (loss, grad norm, budget,
/// choices); timing fields left out (they differ between runs).
std::map<std::pair<std::string, int64_t>, std::string> stepRecords(const std::string &runDir) {
  auto buf = llvm::MemoryBuffer::getFile(runDir + "/metrics.jsonl");
  EXPECT_TRUE(static_cast<bool>(buf)) << runDir;
  std::map<std::pair<std::string, int64_t>, std::string> out;
  if (!buf)
    return out;
  llvm::SmallVector<llvm::StringRef> lines;
  (*buf)->getBuffer().split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines) {
    auto j = nlohmann::json::parse(line.str());
    if (j["kind"] != "step" && j["kind"] != "eval")
      continue;
    j.erase("seconds");
    j.erase("tokens_per_s");
    auto key = std::pair{j["kind"].get<std::string>() + ":" + j["phase"].get<std::string>() + ":" +
                             j["budget"].get<std::string>(),
                         j["step"].get<int64_t>()};
    EXPECT_FALSE(out.count(key)) << "a record appears twice: " << line.str();
    out[key] = j.dump();
  }
  return out;
}

/// A run stopped after k steps (as if killed right after its checkpoint) and resumed ends
/// with exactly the metrics, losses bit for bit, and the weights of an uninterrupted run, for
/// a stop in the parent phase and one in the elastic phase; a second uninterrupted run with
/// the same seed is identical too.
TEST(RunTest, ResumeReproducesTheUninterruptedRun) {
  spec::ModelSpec spec = pipelineSpec();
  spec.mutable_training()->set_checkpoint_every(7);
  spec.mutable_training()->set_eval_every(25);
  Listener quiet;
  TempDir whole;
  RunResult reference;
  {
    mlir::MLIRContext ctx;
    RunOptions o;
    o.runDir = whole.path;
    auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
    ASSERT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
    EXPECT_FALSE(r->interrupted);
    reference = std::move(*r);
  }
  auto expected = stepRecords(whole.path);
  EXPECT_EQ(expected.size(),
            40u + 50u + 2u /*parent evals*/ + 2u * 2 /*elastic evals*/ + 3u /*final*/);
  for (int64_t stopAt : {12, 40 + 9}) {
    TempDir dir;
    {
      mlir::MLIRContext ctx;
      RunOptions o;
      o.runDir = dir.path;
      o.stopAfterSteps = stopAt;
      auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
      ASSERT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
      EXPECT_TRUE(r->interrupted);
      EXPECT_FALSE(llvm::sys::fs::exists(dir / "summary.json")) << "stopped early";
    }
    mlir::MLIRContext ctx;
    RunOptions o;
    o.runDir = dir.path;
    o.resume = true;
    auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
    ASSERT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
    EXPECT_EQ(stepRecords(dir.path), expected) << "stopped after " << stopAt;
    for (auto &[name, t] : reference.elastic)
      EXPECT_EQ(std::memcmp(t.data.data(), r->elastic.at(name).data.data(),
                            sizeof(float) * t.data.size()),
                0)
          << name << " differs after a resume at " << stopAt;
    auto saved = ckpt::readSafetensors(dir / "model.safetensors");
    ASSERT_TRUE(static_cast<bool>(saved)) << llvm::toString(saved.takeError());
    EXPECT_EQ(saved->at("lm_head.weight").data, reference.elastic.at("lm_head.weight").data);
    // Only the final files remain: no checkpoint folder is left behind.
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(dir.path, ec), end; it != end && !ec;
         it.increment(ec))
      EXPECT_FALSE(llvm::StringRef(llvm::sys::path::filename(it->path())).starts_with("ckpt-"))
          << it->path();
  }
  TempDir again;
  mlir::MLIRContext ctx;
  RunOptions o;
  o.runDir = again.path;
  ASSERT_TRUE(static_cast<bool>(runPipeline(ctx, spec, toyBatch, quiet, o)));
  EXPECT_EQ(stepRecords(again.path), expected) << "same seed, same run";
}

/// A run folder that already holds a run is not overwritten; a resume with another spec is
/// refused; a complete run has nothing to resume.
TEST(RunTest, RefusesToOverwriteOrMixRuns) {
  spec::ModelSpec spec = pipelineSpec();
  Listener quiet;
  TempDir dir;
  mlir::MLIRContext ctx;
  RunOptions o;
  o.runDir = dir.path;
  o.stopAfterSteps = 3;
  ASSERT_TRUE(static_cast<bool>(runPipeline(ctx, spec, toyBatch, quiet, o)));
  o.stopAfterSteps = -1;
  auto again = runPipeline(ctx, spec, toyBatch, quiet, o);
  ASSERT_FALSE(static_cast<bool>(again));
  EXPECT_NE(llvm::toString(again.takeError()).find("already holds a run"), std::string::npos);
  spec::ModelSpec other = spec;
  other.mutable_training()->set_seed(99);
  o.resume = true;
  auto mixed = runPipeline(ctx, other, toyBatch, quiet, o);
  ASSERT_FALSE(static_cast<bool>(mixed));
  EXPECT_NE(llvm::toString(mixed.takeError()).find("different spec"), std::string::npos);
}

/// The names of the entries of `dir`, sorted.
std::vector<std::string> entriesOf(const std::string &dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    names.push_back(llvm::sys::path::filename(it->path()).str());
  std::sort(names.begin(), names.end());
  return names;
}

void writeText(const std::string &path, const std::string &text) {
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(path, text))) << path;
}

/// A resume checks state.json, the checkpoint it names and the files the rest of the run needs
/// before it removes anything: each inconsistent state is refused with what is wrong, and the
/// folder is left as it was. Only checkpoint folders the trainer marked as its own are ever
/// removed; a user's entries named ckpt-* (a copied checkpoint among them) survive the whole run.
TEST(RunTest, ResumeRefusesInconsistentStatesAndRemovesOnlyItsOwnCheckpoints) {
  spec::ModelSpec spec = pipelineSpec();
  spec.mutable_training()->set_checkpoint_every(7);
  Listener quiet;
  TempDir dir;
  mlir::MLIRContext ctx;
  RunOptions o;
  o.runDir = dir.path;
  o.stopAfterSteps = 40 + 9; // 9 elastic steps: the checkpoint of elastic step 9
  ASSERT_TRUE(static_cast<bool>(runPipeline(ctx, spec, toyBatch, quiet, o)));
  auto state = ckpt::readJsonObject(dir / "state.json");
  ASSERT_TRUE(static_cast<bool>(state)) << llvm::toString(state.takeError());
  std::string checkpoint = (*state)["checkpoint"];
  ASSERT_EQ(checkpoint, "ckpt-elastic-000009");

  // The user's entries: a copy of the checkpoint, a folder and a file named ckpt-*.
  ASSERT_FALSE(llvm::sys::fs::create_directories(dir / "ckpt-notes"));
  writeText(dir / "ckpt-notes/todo.txt", "mine");
  writeText(dir / "ckpt-list.txt", "mine");
  ASSERT_FALSE(llvm::sys::fs::create_directories(dir / (checkpoint + ".bak")));
  for (const std::string &name : entriesOf(dir / checkpoint)) {
    auto bytes = ckpt::readFileBytes(dir / (checkpoint + "/" + name));
    ASSERT_TRUE(static_cast<bool>(bytes));
    writeText(dir / (checkpoint + ".bak/" + name), *bytes);
  }
  // A checkpoint folder a kill left half-written: the trainer's marker, no weights.
  ASSERT_FALSE(llvm::sys::fs::create_directories(dir / "ckpt-elastic-000012"));
  ASSERT_FALSE(static_cast<bool>(
      ckpt::markOutput(dir / "ckpt-elastic-000012", "checkpoint", "nestor train")));
  std::vector<std::string> before = entriesOf(dir.path);

  o.stopAfterSteps = -1;
  o.resume = true;
  auto refused = [&](const std::function<void(nlohmann::json &)> &edit) {
    nlohmann::json bad = *state;
    edit(bad);
    writeText(dir / "state.json", bad.dump(1));
    auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
    EXPECT_EQ(entriesOf(dir.path), before) << "a refused resume changed the folder";
    EXPECT_TRUE(llvm::sys::fs::exists(dir / (checkpoint + "/model.safetensors")));
    return r ? std::string("<resumed>") : llvm::toString(r.takeError());
  };
  std::string statePath = dir / "state.json";
  std::string tail = "; the run folder is inconsistent, nothing was changed";
  EXPECT_EQ(refused([](nlohmann::json &j) { j["checkpoint"] = "ckpt-elastic-999999"; }),
            statePath + ": checkpoint " + (dir / "ckpt-elastic-999999") + " is missing" + tail);
  EXPECT_EQ(refused([](nlohmann::json &j) { j["checkpoint"] = ""; }),
            statePath + ": elastic step 9 names no checkpoint to continue from" + tail);
  EXPECT_EQ(refused([](nlohmann::json &j) { j["step"] = 1000; }),
            statePath + ": step 1000 is past the elastic phase's 50 steps" + tail);
  EXPECT_EQ(refused([](nlohmann::json &j) { j["checkpoint"] = "../elsewhere"; }),
            statePath + ": checkpoint '../elsewhere' is not a folder name" + tail);
  EXPECT_EQ(refused([](nlohmann::json &j) { j["step"] = -3; }),
            statePath + ": 'step' must be a non-negative integer, got -3");
  EXPECT_EQ(refused([](nlohmann::json &j) { j["step"] = 9.5; }),
            statePath + ": 'step' must be a non-negative integer, got 9.5");
  EXPECT_EQ(refused([](nlohmann::json &j) { j.erase("parent_done"); }),
            statePath + ": 'parent_done' is missing");
  writeText(statePath, R"({"phase": "elastic", "step": 1e400})");
  auto overflow = runPipeline(ctx, spec, toyBatch, quiet, o);
  ASSERT_FALSE(static_cast<bool>(overflow));
  EXPECT_EQ(llvm::toString(overflow.takeError()),
            statePath + ": not valid JSON: number overflow parsing '1e400'");
  ASSERT_FALSE(llvm::sys::fs::rename(dir / "parent.safetensors", dir / "parent.moved"));
  before = entriesOf(dir.path);
  EXPECT_EQ(refused([](nlohmann::json &) {}), statePath + ": the elastic phase needs " +
                                                  (dir / "parent.safetensors") +
                                                  ", which is missing" + tail);
  ASSERT_FALSE(llvm::sys::fs::rename(dir / "parent.moved", dir / "parent.safetensors"));

  // The state restored, the run resumes and completes. The trainer's checkpoints are gone;
  // everything of the user's is still there.
  writeText(statePath, state->dump(1));
  auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
  ASSERT_TRUE(static_cast<bool>(r)) << llvm::toString(r.takeError());
  std::vector<std::string> after = entriesOf(dir.path);
  for (const char *gone : {"ckpt-elastic-000009", "ckpt-elastic-000012"})
    EXPECT_EQ(std::count(after.begin(), after.end(), gone), 0) << gone;
  for (std::string kept :
       {std::string("ckpt-notes"), std::string("ckpt-list.txt"), checkpoint + ".bak"})
    EXPECT_EQ(std::count(after.begin(), after.end(), kept), 1) << kept;
  EXPECT_TRUE(llvm::sys::fs::exists(dir / "ckpt-notes/todo.txt"));
  EXPECT_TRUE(llvm::sys::fs::exists(dir / (checkpoint + ".bak/model.safetensors")));
}

/// A new run is refused in a folder that holds someone else's files, and writes nothing there.
TEST(RunTest, RefusesAForeignRunFolder) {
  spec::ModelSpec spec = pipelineSpec();
  Listener quiet;
  TempDir dir;
  writeText(dir / "notes.txt", "mine");
  mlir::MLIRContext ctx;
  RunOptions o;
  o.runDir = dir.path;
  auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
  ASSERT_FALSE(static_cast<bool>(r));
  EXPECT_EQ(llvm::toString(r.takeError()),
            "--out: " + dir.path +
                " is not empty and Nestor did not write it; choose another folder (nothing was "
                "written)");
  EXPECT_EQ(entriesOf(dir.path), std::vector<std::string>{"notes.txt"});
}

/// A non-finite loss stops the run with the phase, the step and the tensor in the message,
/// and the last good checkpoint stays what the state file names.
TEST(RunTest, NonFiniteLossStopsTheRunAndKeepsTheCheckpoint) {
  spec::ModelSpec spec = pipelineSpec();
  spec.mutable_training()->set_checkpoint_every(4);
  Listener quiet;
  TempDir dir;
  mlir::MLIRContext ctx;
  // A parent whose LM head holds a NaN: the teacher's logits, and so the KD loss, are NaN.
  auto probe = Session::create(ctx, parentSpec(spec), 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe));
  TensorMap parent = initParams((*probe)->params(), parentSpec(spec), 1);
  parent.at("lm_head.weight").data[3] = std::numeric_limits<float>::quiet_NaN();
  RunOptions o;
  o.runDir = dir.path;
  o.initialParent = &parent;
  auto r = runPipeline(ctx, spec, toyBatch, quiet, o);
  ASSERT_FALSE(static_cast<bool>(r));
  std::string m = llvm::toString(r.takeError());
  EXPECT_NE(m.find("stage 'short' step 0 (elastic step 0): the loss is NaN: the student's weight "
                   "lm_head.weight holds NaN at element "), // where importance permuted it
            std::string::npos)
      << m;
  auto state = llvm::MemoryBuffer::getFile(dir / "state.json");
  ASSERT_TRUE(static_cast<bool>(state));
  auto j = nlohmann::json::parse((*state)->getBuffer().str());
  EXPECT_EQ(j["phase"], "elastic");
  EXPECT_EQ(j["step"], 0);
  EXPECT_TRUE(llvm::sys::fs::exists(dir / "parent.safetensors"));
}

/// The routers' inference choice is the argmax of each router's logits, applied to the axis'
/// layers, with the depth choice dropping the first layers of the depth order.
TEST(RunTest, RouterChoiceIsTheArgmaxOfEachRouter) {
  spec::ModelSpec spec = smallSpec(true);
  spec.mutable_elastic()->mutable_intermediate_size()->set_heterogeneous(true);
  mlir::MLIRContext ctx;
  auto probe = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap w = initParams((*probe)->params(), spec, 2);
  for (auto &[name, t] : w)
    if (llvm::StringRef(name).starts_with("routers."))
      std::fill(t.data.begin(), t.data.end(), 0.0f);
  // fc2.bias decides when everything else is zero. Budget-dependence through fc1: hidden
  // unit 0 is on for budget 1 only, and fc2 reads it.
  w.at("routers.hidden_size.fc2.bias").data = {0.0f, 1.0f};       // 16
  w.at("routers.intermediate_size.fc2.bias").data = {1, 0, 0, 1}; // layers 1, 3: 48, 24
  w.at("routers.mamba_num_heads.fc1.weight").data[0 * 2 + 1] = 1; // unit 0 <- budget 1
  w.at("routers.mamba_num_heads.fc2.weight").data[1 * 8 + 0] = 5; // logit 1 <- unit 0
  w.at("routers.depth.fc2.bias").data = {0.0f, 2.0f};             // drop 1 layer
  std::vector<int64_t> order = {2, 0, 1, 3};
  RouterChoice full = routerChoice(spec, w, 0, order), half = routerChoice(spec, w, 1, order);
  EXPECT_EQ(full.indices["hidden_size"], std::vector<int64_t>{1});
  EXPECT_EQ(full.indices["intermediate_size"], (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(full.indices["mamba_num_heads"], std::vector<int64_t>{0});
  EXPECT_EQ(half.indices["mamba_num_heads"], std::vector<int64_t>{1});
  EXPECT_EQ(full.indices["depth"], std::vector<int64_t>{1});
  EXPECT_EQ(full.sizes.hidden, 16);
  EXPECT_EQ(full.sizes.layers[1].ffn, 48);
  EXPECT_EQ(full.sizes.layers[3].ffn, 24);
  EXPECT_EQ(full.sizes.layers[0].mambaHeads, 4);
  EXPECT_EQ(half.sizes.layers[0].mambaHeads, 2);
  EXPECT_EQ(full.sizes.layers[2].keep, 0) << "layer 2 is the least important";
  EXPECT_EQ(full.sizes.layers[0].keep, 1);
}

/// The dense model cut at each budget's router choice computes the masked parent's logits at
/// that budget (float32 kernels, <= 1e-5); returns the dense parameter count per budget.
std::vector<int64_t> expectSlicedEqualsMasked(mlir::MLIRContext &ctx, const spec::ModelSpec &spec,
                                              const TensorMap &elasticWeights,
                                              const RunResult &run) {
  int64_t batch = 2, length = 24;
  std::vector<int32_t> tokens(batch * length), targets(batch * length);
  toyBatch(BatchRequest{true, 3, batch, length}, tokens.data(), targets.data());
  auto elastic = Session::create(ctx, spec, batch, length, run.importance.depthOrder);
  EXPECT_TRUE(static_cast<bool>(elastic)) << llvm::toString(elastic.takeError());
  if (!elastic)
    return {};
  (*elastic)->weights = elasticWeights;
  (*elastic)->teacher = run.parent;
  std::vector<int64_t> denseSizes;
  for (int32_t b = 0; b < spec.elastic().budgets_size(); ++b) {
    RouterChoice choice = routerChoice(spec, elasticWeights, b, run.importance.depthOrder);
    auto sliced = slice::sliceModel(spec, choice.sizes);
    EXPECT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
    if (!sliced)
      return {};
    EXPECT_FALSE(sliced->spec.has_elastic());
    // The elastic-slice pass, evaluating the same routers in the IR, records the same map.
    const std::string &budget = spec.elastic().budgets(b).name();
    auto pass = sliceToDense(ctx, spec, elasticWeights, budget, run.importance.depthOrder);
    EXPECT_TRUE(static_cast<bool>(pass)) << llvm::toString(pass.takeError());
    if (!pass)
      return {};
    EXPECT_EQ(pass->map.size(), sliced->map.size()) << budget;
    for (const auto &[name, s] : sliced->map) {
      auto it = pass->map.find(name);
      EXPECT_NE(it, pass->map.end()) << budget << ": the pass has no dense '" << name << "'";
      if (it == pass->map.end())
        continue;
      EXPECT_EQ(it->second.source, s.source) << name;
      EXPECT_EQ(it->second.indices, s.indices) << budget << ": " << name;
    }
    auto weights = slice::applySliceMap(sliced->map, elasticWeights);
    EXPECT_TRUE(static_cast<bool>(weights)) << llvm::toString(weights.takeError());
    auto dense = Session::create(ctx, sliced->spec, batch, length);
    EXPECT_TRUE(static_cast<bool>(dense)) << llvm::toString(dense.takeError());
    if (!weights || !dense)
      return {};
    EXPECT_EQ((*dense)->params().size(), weights->size()) << "every dense tensor is sliced";
    (*dense)->weights = *weights;
    EXPECT_TRUE(static_cast<bool>((*elastic)->evaluate(tokens.data(), targets.data(), b)));
    std::vector<float> masked((*elastic)->logits(), (*elastic)->logits() + batch * length * 16);
    EXPECT_TRUE(static_cast<bool>((*dense)->evaluate(tokens.data(), targets.data(), 0)));
    double diff = 0;
    for (size_t i = 0; i < masked.size(); ++i)
      diff = std::max(diff, double(std::abs(masked[i] - (*dense)->logits()[i])));
    EXPECT_LE(diff, 1e-5) << spec.elastic().budgets(b).name();
    int64_t n = 0;
    for (const auto &[name, t] : *weights)
      n += static_cast<int64_t>(t.data.size());
    EXPECT_EQ(
        double(n),
        spec::countParams(spec::fixedSizes(sliced->spec), spec::parentSizes(sliced->spec)).total());
    denseSizes.push_back(n);
  }
  return denseSizes;
}

/// Zero-shot slicing (METHOD.md §8) after a short elastic run: the sliced model equals the
/// masked parent at every budget, and the cut really is smaller for the smaller budget.
TEST(SliceTest, SlicedModelEqualsTheMaskedParentAtEveryBudget) {
  spec::ModelSpec spec = pipelineSpec();
  mlir::MLIRContext ctx;
  Listener quiet;
  auto run = runPipeline(ctx, spec, toyBatch, quiet);
  ASSERT_TRUE(static_cast<bool>(run)) << llvm::toString(run.takeError());
  std::vector<int64_t> sizes = expectSlicedEqualsMasked(ctx, spec, run->elastic, *run);
  ASSERT_EQ(sizes.size(), 2u);
  EXPECT_LT(sizes[1], sizes[0]) << "the routers cut the small budget";
}

/// A heterogeneous choice (the two MLP layers at different widths, a layer dropped) slices to
/// a dense spec with per-layer sizes that still equals the masked parent.
TEST(SliceTest, HeterogeneousChoiceSlicesWithLayerOverrides) {
  spec::ModelSpec spec = pipelineSpec();
  spec.mutable_elastic()->mutable_intermediate_size()->set_heterogeneous(true);
  mlir::MLIRContext ctx;
  Listener quiet;
  auto run = runPipeline(ctx, spec, toyBatch, quiet);
  ASSERT_TRUE(static_cast<bool>(run)) << llvm::toString(run.takeError());
  // Force the routers: MLP layer 1 keeps 48 neurons, layer 3 keeps 24; drop one layer.
  TensorMap forced = run->elastic;
  auto force = [&](const std::string &axis, std::vector<float> bias) {
    for (const char *w : {".fc1.weight", ".fc1.bias", ".fc2.weight"})
      std::fill(forced.at("routers." + axis + w).data.begin(),
                forced.at("routers." + axis + w).data.end(), 0.0f);
    forced.at("routers." + axis + ".fc2.bias").data = std::move(bias);
  };
  force("intermediate_size", {50, 0, 0, 50});
  force("depth", {0, 50});
  RouterChoice choice = routerChoice(spec, forced, 1, run->importance.depthOrder);
  ASSERT_EQ(choice.indices["intermediate_size"], (std::vector<int64_t>{0, 1}));
  auto sliced = slice::sliceModel(spec, choice.sizes);
  ASSERT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
  EXPECT_EQ(sliced->spec.architecture().hybrid_override_pattern().size(), 3u);
  EXPECT_EQ(sliced->spec.architecture().layer_overrides_size(), 3);
  std::vector<int64_t> sizes = expectSlicedEqualsMasked(ctx, spec, forced, *run);
  EXPECT_EQ(sizes.size(), 2u);
}

/// The structure of the 12B spec slices at homogeneous and per-layer choices, with parameter
/// counts that follow the formula; broken groups are refused by name.
TEST(SliceTest, Nano12BStructure) {
  auto spec =
      spec::loadSpecFile(std::string(std::getenv("NESTOR_SRC") ? std::getenv("NESTOR_SRC") : ".") +
                         "/examples/specs/nemotron-nano-12b-v2.pbtxt");
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  spec::ModelSizes<double> sizes = spec::parentSizes(*spec);
  sizes.hidden = 4480;
  for (spec::LayerSizes<double> &l : sizes.layers)
    l.ffn = 15680, l.mambaHeads = 112, l.attnHeads = 32;
  for (int l : {3, 17, 40})
    sizes.layers[l].keep = 0;
  auto sliced = slice::sliceModel(*spec, sizes);
  ASSERT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
  EXPECT_EQ(sliced->spec.architecture().hybrid_override_pattern().size(), 59u);
  EXPECT_EQ(sliced->keptLayers.size(), 59u);
  double fromMap = 0;
  for (const auto &[name, s] : sliced->map) {
    double n = 1;
    for (const auto &idx : s.indices)
      n *= double(idx.size());
    fromMap += n;
  }
  EXPECT_EQ(fromMap, spec::countParams(spec::fixedSizes(*spec), sizes).total());
  if (llvm::Error err = spec::validateSpec(sliced->spec, "sliced"))
    ADD_FAILURE() << "the sliced spec does not validate: " << llvm::toString(std::move(err));

  EXPECT_EQ(sliced->spec.architecture().layer_overrides_size(), 0) << "homogeneous";

  spec::ModelSizes<double> hetero = sizes;
  hetero.layers[1].ffn = 10240; // layer 1 is an MLP layer
  auto perLayer = slice::sliceModel(*spec, hetero);
  ASSERT_TRUE(static_cast<bool>(perLayer)) << llvm::toString(perLayer.takeError());
  const spec::Architecture &pa = perLayer->spec.architecture();
  ASSERT_EQ(pa.layer_overrides_size(), 59);
  EXPECT_EQ(pa.intermediate_size(), 15680) << "the largest kept MLP width";
  EXPECT_EQ(pa.layer_overrides(1).intermediate_size(), 10240);
  EXPECT_EQ(spec::countParams(spec::fixedSizes(perLayer->spec), spec::parentSizes(perLayer->spec))
                .total(),
            spec::countParams(spec::fixedSizes(*spec), hetero).total());
  if (llvm::Error err = spec::validateSpec(perLayer->spec, "sliced"))
    ADD_FAILURE() << llvm::toString(std::move(err));
  spec::ModelSizes<double> broken = sizes;
  for (spec::LayerSizes<double> &l : broken.layers)
    l.mambaHeads = 100; // not a multiple of 8 groups
  auto bad = slice::sliceModel(*spec, broken);
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("mamba_num_heads 100"), std::string::npos);
}

} // namespace
