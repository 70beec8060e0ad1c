//===- DecodeTest.cpp - The compiled decode step against the compiled forward ---===//
//
// The `@decode_step` program (nestor/Compile.h, compileDecodeStep; run by
// engine::ProgramDecoder) is tied to the training semantics three ways: teacher-forced decoding
// of a dense model reproduces the compiled full-sequence forward at every position; decoding
// an elastic parent at a choice (prefix-dense, the choices as inputs) reproduces decoding the
// model `nestor slice` cuts at that choice (homogeneous, per layer, with a dropped Mamba or
// attention layer; head prefixes narrower and wider than the row kernels' lanes); and it
// reproduces the compiled masked elastic forward at a budget whose router choice is forced.
// The prefill entry points (compileInference) read a prompt in chunks with the result of
// reading it token by token.
//
//===----------------------------------------------------------------------===//
#include "engine/decode/ProgramDecoder.h"
#include "nestor/Compile.h"

#include "nestor/ParamCount.h"
#include "nestor/Slice.h"
#include "nestor/Train.h"
#include "nestor/Trainer.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/StringRef.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

using namespace nestor;
using namespace nestor::train;

namespace {

constexpr int64_t kVocab = 256;

spec::ModelSpec denseSpec() {
  spec::ModelSpec spec;
  spec.set_name("decode");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-*M-");
  a->set_hidden_size(24);
  a->set_intermediate_size(40);
  a->set_mamba_num_heads(4);
  a->set_mamba_head_dim(6);
  a->set_n_groups(2);
  a->set_ssm_state_size(4);
  a->set_conv_kernel(4);
  a->set_num_attention_heads(4);
  a->set_num_key_value_heads(2);
  a->set_head_dim(6);
  a->set_vocab_size(kVocab);
  return spec;
}

/// An elastic parent on every width axis (hidden, FFN, attention heads, Mamba heads and head
/// channels) and depth; `heterogeneous` gives the FFN and Mamba axes one choice per layer.
spec::ModelSpec elasticSpec(bool heterogeneous, int64_t headDim = 8, int64_t attnHeadDim = 8) {
  spec::ModelSpec spec;
  spec.set_name("decode-elastic");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M-*M-");
  a->set_hidden_size(32);
  a->set_intermediate_size(48);
  a->set_mamba_num_heads(4);
  a->set_mamba_head_dim(headDim);
  a->set_n_groups(2);
  a->set_ssm_state_size(4);
  a->set_conv_kernel(4);
  a->set_num_attention_heads(4);
  a->set_num_key_value_heads(2);
  a->set_head_dim(attnHeadDim);
  a->set_vocab_size(kVocab);
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
    e->mutable_num_attention_heads()->add_choices(k);
  for (int64_t k : {4, 2})
    e->mutable_mamba_num_heads()->add_choices(k);
  for (int64_t k : {headDim, headDim / 2})
    e->mutable_mamba_head_dim()->add_choices(k);
  e->mutable_intermediate_size()->set_heterogeneous(heterogeneous);
  e->mutable_mamba_num_heads()->set_heterogeneous(heterogeneous);
  e->set_max_dropped_layers(1);
  e->set_mask_mode(spec::HARD);
  e->mutable_router()->set_hidden_size(8);
  return spec;
}

/// initParams scaled so the model is far from the identity (logits of order one, states that
/// matter), with norm weights, D and the conv bias perturbed so their indexing shows.
TensorMap randomWeights(const std::vector<StepArg> &args, const spec::ModelSpec &spec,
                        uint64_t seed) {
  TensorMap w = initParams(args, spec, seed);
  uint64_t index = 0;
  for (auto &[name, t] : w) {
    llvm::StringRef n(name);
    if (n.starts_with("routers."))
      continue;
    if (t.shape.size() == 2 && !n.contains("conv1d")) {
      for (float &v : t.data)
        v *= 4.0f;
    } else if (n.ends_with("norm.weight") || n.ends_with("norm_f.weight") ||
               n.ends_with("mixer.D") || n.ends_with("conv1d.bias")) {
      for (float &v : t.data)
        v += 0.3f * static_cast<float>(randomNormal(seed, 99, index++));
    }
  }
  return w;
}

std::vector<int32_t> randomTokens(int64_t n, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i)
    t[i] = static_cast<int32_t>(randomBits(seed, 7, i) % kVocab);
  return t;
}

double maxAbsDiff(const std::vector<float> &a, const float *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i)
    m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

double maxAbs(const std::vector<float> &a) {
  double m = 0;
  for (float v : a)
    m = std::max(m, double(std::abs(v)));
  return m;
}

/// Forces `axis`'s router to `logits` at every budget: only fc2.bias is left.
void forceRouter(TensorMap &w, const std::string &axis, std::vector<float> logits) {
  for (const char *part : {".fc1.weight", ".fc1.bias", ".fc2.weight"}) {
    Tensor &t = w.at("routers." + axis + part);
    std::fill(t.data.begin(), t.data.end(), 0.0f);
  }
  w.at("routers." + axis + ".fc2.bias").data = std::move(logits);
}

//===----------------------------------------------------------------------===//
// The compiled decode step
//===----------------------------------------------------------------------===//

/// A ProgramDecoder of `spec`'s compiled decode step reading `weights`.
std::unique_ptr<engine::ProgramDecoder>
compiledDecoder(mlir::MLIRContext &ctx, const spec::ModelSpec &spec, const TensorMap &weights,
                int64_t context, const std::map<std::string, std::vector<int64_t>> &choices = {},
                llvm::ArrayRef<int64_t> depthOrder = {}) {
  auto fn = compileDecodeStep(ctx, spec, context, depthOrder);
  EXPECT_TRUE(static_cast<bool>(fn)) << llvm::toString(fn.takeError());
  if (!fn)
    return nullptr;
  auto dec = engine::ProgramDecoder::create(*fn, weights, choices);
  EXPECT_TRUE(dec.ok()) << dec.status().message();
  return dec.ok() ? std::move(*dec) : nullptr;
}

std::vector<float> decodeAll(engine::ProgramDecoder &decoder, const std::vector<int32_t> &tokens) {
  decoder.reset();
  std::vector<float> out;
  for (int32_t t : tokens) {
    auto logits = decoder.step(t);
    EXPECT_TRUE(logits.ok()) << logits.status().message();
    if (!logits.ok())
      return out;
    out.insert(out.end(), *logits, *logits + decoder.vocabSize());
  }
  return out;
}

TEST(DecodeTest, TeacherForcedDecodeEqualsTheCompiledForward) {
  for (bool tied : {false, true}) {
    spec::ModelSpec spec = denseSpec();
    spec.mutable_architecture()->set_tie_word_embeddings(tied);
    mlir::MLIRContext ctx;
    TensorMap weights;
    for (int64_t length : {1, 7, 70}) {
      SCOPED_TRACE(std::string(tied ? "tied embeddings" : "separate head") + ", length " +
                   std::to_string(length));
      auto session = Session::create(ctx, spec, 1, length);
      ASSERT_TRUE(static_cast<bool>(session)) << llvm::toString(session.takeError());
      if (weights.empty())
        weights = randomWeights((*session)->params(), spec, 5);
      ASSERT_EQ(weights.count("lm_head.weight"), tied ? 0u : 1u);
      (*session)->weights = weights;
      std::vector<int32_t> tokens = randomTokens(length, 11), targets = randomTokens(length, 12);
      ASSERT_TRUE(static_cast<bool>((*session)->evaluate(tokens.data(), targets.data(), 0)));

      auto compiled = compiledDecoder(ctx, spec, weights, length);
      ASSERT_TRUE(compiled);
      EXPECT_EQ(compiled->context(), length);
      std::vector<float> logits = decodeAll(*compiled, tokens);
      ASSERT_EQ(logits.size(), size_t(length * kVocab));
      EXPECT_GT(maxAbs(logits), 0.5) << "the logits are not trivial";
      EXPECT_LE(maxAbsDiff(logits, (*session)->logits(), logits.size()), 1e-4);
      EXPECT_EQ(compiled->position(), length);
      // Reset really forgets: a second pass gives the same logits.
      std::vector<float> again = decodeAll(*compiled, tokens);
      EXPECT_EQ(again, logits);
    }
  }
}

/// Run on the model `nestor slice` cuts, the parent's decode step at the same choice does the
/// same arithmetic up to the order of the sums, so the two agree to float32 rounding. The wide
/// spec has head prefixes longer than the row kernels' vector lanes.
TEST(DecodeTest, DecodeAtAChoiceEqualsTheSlicedModel) {
  struct Case {
    const char *name;
    int dropped; // the layer the choice drops, or -1
    std::vector<int64_t> depthOrder;
    std::map<std::string, std::vector<float>> logits; // forced router logits per axis
  };
  // "M-*M-": Mamba layers 0 and 3, MLP layers 1 and 4, attention layer 2; per-layer logits are
  // [layer][choice] over the axis' layers in order.
  std::vector<Case> cases = {
      {"homogeneous",
       -1,
       {3, 2, 0, 1, 4},
       {{"hidden_size", {0, 50}},
        {"num_attention_heads", {0, 50}},
        {"mamba_head_dim", {0, 50}},
        {"intermediate_size", {0, 50, 0, 50}},
        {"mamba_num_heads", {0, 50, 0, 50}},
        {"depth", {50, 0}}}},
      {"heterogeneous",
       -1,
       {3, 2, 0, 1, 4},
       {{"hidden_size", {0, 50}},
        {"num_attention_heads", {0, 50}},
        {"mamba_head_dim", {50, 0}},
        {"intermediate_size", {50, 0, 0, 50}},
        {"mamba_num_heads", {0, 50, 50, 0}},
        {"depth", {50, 0}}}},
      {"dropped Mamba layer",
       3,
       {3, 2, 0, 1, 4},
       {{"hidden_size", {0, 50}},
        {"num_attention_heads", {50, 0}},
        {"mamba_head_dim", {0, 50}},
        {"intermediate_size", {50, 0, 0, 50}},
        {"mamba_num_heads", {0, 50, 50, 0}},
        {"depth", {0, 50}}}},
      {"dropped attention layer",
       2,
       {2, 3, 0, 1, 4},
       {{"hidden_size", {50, 0}},
        {"num_attention_heads", {0, 50}},
        {"mamba_head_dim", {0, 50}},
        {"intermediate_size", {0, 50, 0, 50}},
        {"mamba_num_heads", {0, 50, 0, 50}},
        {"depth", {0, 50}}}},
  };
  for (auto [headDim, attnHeadDim] : {std::pair<int64_t, int64_t>{8, 8}, {40, 20}}) {
    SCOPED_TRACE("mamba_head_dim " + std::to_string(headDim));
    spec::ModelSpec spec = elasticSpec(true, headDim, attnHeadDim);
    mlir::MLIRContext ctx;
    auto probe = Session::create(ctx, spec, 1, 4, {3, 2, 0, 1, 4});
    ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
    TensorMap weights = randomWeights((*probe)->params(), spec, 21);
    std::vector<int32_t> tokens = randomTokens(23, 22);
    for (const Case &c : cases) {
      SCOPED_TRACE(c.name);
      for (const auto &[axis, logits] : c.logits)
        forceRouter(weights, axis, logits);
      RouterChoice choice = routerChoice(spec, weights, 1, c.depthOrder);
      for (int l = 0; l < 5; ++l)
        ASSERT_EQ(choice.sizes.layers[l].keep, l == c.dropped ? 0 : 1) << "layer " << l;
      ASSERT_LT(choice.sizes.layers[0].mambaHeads * choice.sizes.layers[0].mambaHeadDim +
                    choice.sizes.layers[1].ffn + choice.sizes.hidden,
                4 * headDim + 48 + 32)
          << "the choice is narrower than the parent";
      auto prefix = compiledDecoder(ctx, spec, weights, 32, choice.indices, c.depthOrder);
      ASSERT_TRUE(prefix);
      auto sliced = slice::sliceModel(spec, choice.sizes);
      ASSERT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
      auto dense = slice::applySliceMap(sliced->map, weights);
      ASSERT_TRUE(static_cast<bool>(dense)) << llvm::toString(dense.takeError());
      auto cut = compiledDecoder(ctx, sliced->spec, *dense, 32);
      ASSERT_TRUE(cut);
      std::vector<float> a = decodeAll(*prefix, tokens), b = decodeAll(*cut, tokens);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_GT(maxAbs(a), 0.5);
      EXPECT_LE(maxAbsDiff(a, b.data(), a.size()), 1e-5);
    }
  }
}

/// One program for every budget: the parent's decode step at the router's choice reproduces
/// the masked elastic forward at that budget, and the dense decode step of the model
/// `nestor slice` cuts at the same choice (<= 1e-5).
TEST(DecodeTest, CompiledDecodeAtAChoiceEqualsTheMaskedForwardAndTheSlicedModel) {
  for (bool heterogeneous : {false, true}) {
    SCOPED_TRACE(heterogeneous ? "heterogeneous" : "homogeneous");
    spec::ModelSpec spec = elasticSpec(heterogeneous);
    mlir::MLIRContext ctx;
    int64_t length = 19;
    std::vector<int64_t> depthOrder = {3, 2, 0, 1, 4};
    auto session = Session::create(ctx, spec, 1, length, depthOrder);
    ASSERT_TRUE(static_cast<bool>(session)) << llvm::toString(session.takeError());
    TensorMap weights = randomWeights((*session)->params(), spec, 31);
    forceRouter(weights, "hidden_size", {0, 50});
    forceRouter(weights, "num_attention_heads", {0, 50});
    forceRouter(weights, "mamba_head_dim", {0, 50});
    forceRouter(weights, "intermediate_size",
                heterogeneous ? std::vector<float>{50, 0, 0, 50} : std::vector<float>{0, 50});
    forceRouter(weights, "mamba_num_heads",
                heterogeneous ? std::vector<float>{0, 50, 50, 0} : std::vector<float>{0, 50});
    forceRouter(weights, "depth", {0, 50});
    int32_t budget = 1;
    RouterChoice choice = routerChoice(spec, weights, budget, depthOrder);
    ASSERT_EQ(choice.sizes.layers[3].keep, 0);
    (*session)->weights = weights;
    for (const auto &[name, t] : weights)
      if (!llvm::StringRef(name).starts_with("routers."))
        (*session)->teacher[name] = t;
    std::vector<int32_t> tokens = randomTokens(length, 32), targets = randomTokens(length, 33);
    ASSERT_TRUE(static_cast<bool>((*session)->evaluate(tokens.data(), targets.data(), budget)));

    auto compiled = compiledDecoder(ctx, spec, weights, 32, choice.indices, depthOrder);
    ASSERT_TRUE(compiled);
    std::vector<float> logits = decodeAll(*compiled, tokens);
    ASSERT_EQ(logits.size(), size_t(length * kVocab));
    EXPECT_GT(maxAbs(logits), 0.5);
    EXPECT_LE(maxAbsDiff(logits, (*session)->logits(), logits.size()), 1e-4);

    auto sliced = slice::sliceModel(spec, choice.sizes);
    ASSERT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
    auto dense = slice::applySliceMap(sliced->map, weights);
    ASSERT_TRUE(static_cast<bool>(dense)) << llvm::toString(dense.takeError());
    auto cut = compiledDecoder(ctx, sliced->spec, *dense, 32);
    ASSERT_TRUE(cut);
    std::vector<float> cutLogits = decodeAll(*cut, tokens);
    ASSERT_EQ(cutLogits.size(), logits.size());
    EXPECT_LE(maxAbsDiff(logits, cutLogits.data(), logits.size()), 1e-5);

    // The full choice (every axis' first choice, nothing dropped) is the parent: the dense
    // model sliced at the parent's sizes.
    auto parent = compiledDecoder(ctx, spec, weights, 32, {}, depthOrder);
    auto whole = slice::sliceModel(spec, spec::parentSizes(spec));
    ASSERT_TRUE(static_cast<bool>(whole)) << llvm::toString(whole.takeError());
    auto wholeWeights = slice::applySliceMap(whole->map, weights);
    ASSERT_TRUE(static_cast<bool>(wholeWeights)) << llvm::toString(wholeWeights.takeError());
    auto wholeDense = compiledDecoder(ctx, whole->spec, *wholeWeights, 32);
    ASSERT_TRUE(parent && wholeDense);
    std::vector<float> p = decodeAll(*parent, tokens), d = decodeAll(*wholeDense, tokens);
    EXPECT_LE(maxAbsDiff(p, d.data(), p.size()), 1e-5);
  }
}

TEST(DecodeTest, GreedyStopsAtTheStopTokenRespectsMaxTokensAndErrorsAreNamed) {
  spec::ModelSpec spec = denseSpec();
  mlir::MLIRContext ctx;
  auto probe = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap weights = randomWeights((*probe)->params(), spec, 41);
  auto compiled = compiledDecoder(ctx, spec, weights, 20);
  ASSERT_TRUE(compiled);
  engine::ProgramDecoder &dec = *compiled;
  std::vector<int32_t> prompt = {1, 72, 105, 33};

  auto free = dec.greedy(prompt, 12, -1);
  ASSERT_TRUE(free.ok()) << free.status().message();
  ASSERT_EQ(free->size(), 12u) << "no stop token: exactly maxTokens";
  EXPECT_EQ(dec.position(), int64_t(prompt.size() + 11)) << "the last token is not fed back";

  // The same tokens by hand: argmax of each step, fed back.
  dec.reset();
  const float *logits = nullptr;
  for (int32_t t : prompt)
    logits = *dec.step(t);
  std::vector<int32_t> manual;
  for (int i = 0; i < 12; ++i) {
    manual.push_back(int32_t(std::max_element(logits, logits + kVocab) - logits));
    logits = *dec.step(manual.back());
  }
  EXPECT_EQ(*free, manual);
  EXPECT_GT(std::set<int32_t>(manual.begin(), manual.end()).size(), 2u) << "not trivial";

  auto shorter = dec.greedy(prompt, 5, -1);
  ASSERT_TRUE(shorter.ok());
  EXPECT_EQ(*shorter, std::vector<int32_t>(free->begin(), free->begin() + 5));

  int32_t stop = (*free)[3];
  size_t first = std::find(free->begin(), free->end(), stop) - free->begin();
  auto stopped = dec.greedy(prompt, 12, stop);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(*stopped, std::vector<int32_t>(free->begin(), free->begin() + first + 1))
      << "stops right after the stop token, which is included";

  auto nothing = dec.greedy(prompt, 0, -1);
  ASSERT_TRUE(nothing.ok());
  EXPECT_TRUE(nothing->empty());

  auto bad = compiled->greedy({1, 300}, 4, -1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("token 300 at index 1 is outside the vocabulary of 256"),
            std::string::npos)
      << bad.status().message();
  EXPECT_EQ(compiled->position(), 0) << "a refused prompt appends nothing";
  auto badStep = compiled->step(300);
  ASSERT_FALSE(badStep.ok());
  EXPECT_NE(badStep.status().message().find("decode at position 0"), std::string::npos)
      << badStep.status().message();
  EXPECT_NE(badStep.status().message().find("token 300"), std::string::npos);

  // Past the KV cache: a clear error, and the decoder still works after a reset.
  auto full = compiled->greedy(prompt, 40, -1);
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("the context is full (20 tokens"), std::string::npos)
      << full.status().message();
  EXPECT_TRUE(compiled->greedy(prompt, 3, -1).ok());

  auto fn = compileDecodeStep(ctx, spec, 20);
  ASSERT_TRUE(static_cast<bool>(fn));
  auto none = [](const std::string &, int64_t) -> const float * { return nullptr; };
  auto missing = engine::ProgramDecoder::create(std::vector<const program::Function *>{&*fn}, none);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no weight 'backbone.embeddings.weight' of shape "
                                            "256x24"),
            std::string::npos)
      << missing.status().message();
  auto axis = engine::ProgramDecoder::create(*fn, weights, {{"hidden_size", {1}}});
  ASSERT_FALSE(axis.ok());
  EXPECT_NE(axis.status().message().find("no elastic axis 'hidden_size'"), std::string::npos);
  // A weight of the right size but another shape is named with both shapes.
  TensorMap transposed = weights;
  Tensor &up = transposed.at("backbone.layers.1.mixer.up_proj.weight");
  std::swap(up.shape[0], up.shape[1]);
  auto shaped = engine::ProgramDecoder::create(*fn, transposed);
  ASSERT_FALSE(shaped.ok());
  EXPECT_NE(shaped.status().message().find("weight 'backbone.layers.1.mixer.up_proj.weight' has "
                                           "shape [24, 40], the program reads [40, 24]"),
            std::string::npos)
      << shaped.status().message();

  // At an elastic parent, a choice out of range or with the wrong number of rows is named.
  spec::ModelSpec elastic = elasticSpec(true);
  auto elasticProbe = Session::create(ctx, elastic, 1, 4, {3, 2, 0, 1, 4});
  ASSERT_TRUE(static_cast<bool>(elasticProbe)) << llvm::toString(elasticProbe.takeError());
  TensorMap parent = randomWeights((*elasticProbe)->params(), elastic, 42);
  auto parentFn = compileDecodeStep(ctx, elastic, 8, {3, 2, 0, 1, 4});
  ASSERT_TRUE(static_cast<bool>(parentFn)) << llvm::toString(parentFn.takeError());
  auto outOfRange = engine::ProgramDecoder::create(*parentFn, parent, {{"hidden_size", {2}}});
  ASSERT_FALSE(outOfRange.ok());
  EXPECT_NE(outOfRange.status().message().find("choice 2 of 'hidden_size' is not one of its 2"),
            std::string::npos)
      << outOfRange.status().message();
  auto rows = engine::ProgramDecoder::create(*parentFn, parent, {{"mamba_num_heads", {0, 1, 0}}});
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("choice 'mamba_num_heads' has 3 entries for 2 rows"),
            std::string::npos)
      << rows.status().message();
}

//===----------------------------------------------------------------------===//
// Prefill: the prompt in chunks
//===----------------------------------------------------------------------===//

/// compileInference's entry points (`@decode_step`, `@prefill_64`, `@prefill_4`) read a prompt
/// in chunks with the result of reading it token by token: every position's logits, and the
/// state they leave (the continuation's logits), at lengths that use every chunk, remainders
/// and none, for a dense model and an elastic parent at a per-layer choice with a dropped layer.
TEST(DecodeTest, PrefillInChunksEqualsTokenByTokenDecoding) {
  mlir::MLIRContext ctx;
  const int64_t context = 300;
  struct Case {
    std::string name;
    spec::ModelSpec spec;
    std::map<std::string, std::vector<int64_t>> choices;
    std::vector<int64_t> depthOrder;
  };
  std::vector<Case> cases = {{"dense", denseSpec(), {}, {}},
                             {"elastic at a choice",
                              elasticSpec(true),
                              {{"hidden_size", {1}},
                               {"mamba_num_heads", {1, 0}},
                               {"intermediate_size", {0, 1}},
                               {"num_attention_heads", {1}},
                               {"depth", {1}}},
                              {3, 2, 0, 1, 4}}};
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    auto probe = Session::create(ctx, c.spec, 1, 4, c.depthOrder);
    ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
    TensorMap weights = randomWeights((*probe)->params(), c.spec, 77);
    auto fns = compileInference(ctx, c.spec, context, c.depthOrder, 64);
    ASSERT_TRUE(static_cast<bool>(fns)) << llvm::toString(fns.takeError());
    ASSERT_EQ(fns->size(), 3u);
    EXPECT_EQ((*fns)[0].name(), "decode_step");
    EXPECT_EQ((*fns)[1].name(), "prefill_64");
    EXPECT_EQ((*fns)[2].name(), "prefill_4");
    std::vector<const program::Function *> entries;
    for (const program::Function &f : *fns)
      entries.push_back(&f);
    auto chunked = engine::ProgramDecoder::create(entries, weights, c.choices);
    ASSERT_TRUE(chunked.ok()) << chunked.status().message();
    auto single = engine::ProgramDecoder::create((*fns)[0], weights, c.choices);
    ASSERT_TRUE(single.ok()) << single.status().message();
    EXPECT_EQ((*chunked)->prefillChunks(), (std::vector<int64_t>{64, 4}));
    EXPECT_TRUE((*single)->prefillChunks().empty());

    for (int64_t length : {1, 3, 4, 7, 64, 133, 263}) {
      SCOPED_TRACE("prompt of " + std::to_string(length) + " tokens");
      std::vector<int32_t> prompt = randomTokens(length, 90 + length);
      std::vector<float> expected = decodeAll(**single, prompt);
      (*chunked)->reset();
      int64_t callsBefore = (*chunked)->calls();
      std::vector<float> all;
      auto last = (*chunked)->prefill(prompt, &all);
      ASSERT_TRUE(last.ok()) << last.status().message();
      // Longest chunk first: length/64 calls of 64, then 4s, then single tokens.
      int64_t calls = length / 64 + length % 64 / 4 + length % 4;
      EXPECT_EQ((*chunked)->calls() - callsBefore, calls);
      EXPECT_EQ((*chunked)->position(), length);
      ASSERT_EQ(all.size(), expected.size());
      EXPECT_GT(maxAbs(expected), 0.5) << "the logits are not trivial";
      EXPECT_LE(maxAbsDiff(expected, all.data(), all.size()), 1e-4);
      EXPECT_EQ(std::vector<float>(*last, *last + kVocab),
                std::vector<float>(all.end() - kVocab, all.end()));
      // The states it leaves: the same continuation, step by step.
      for (int32_t t : randomTokens(5, 3)) {
        auto a = (*chunked)->step(t), b = (*single)->step(t);
        ASSERT_TRUE(a.ok() && b.ok());
        std::vector<float> want(*b, *b + kVocab);
        EXPECT_LE(maxAbsDiff(want, *a, kVocab), 1e-4);
      }
    }
    // A prompt longer than what is left of the context is refused whole.
    (*chunked)->reset();
    ASSERT_TRUE((*chunked)->prefill(randomTokens(200, 5)).ok());
    auto tooLong = (*chunked)->prefill(randomTokens(101, 6));
    ASSERT_FALSE(tooLong.ok());
    EXPECT_NE(tooLong.status().message().find("101 tokens at position 200 exceed the context of "
                                              "300 tokens"),
              std::string::npos)
        << tooLong.status().message();
    EXPECT_EQ((*chunked)->position(), 200);
    EXPECT_TRUE((*chunked)->prefill(randomTokens(100, 6)).ok()) << "exactly the context fits";
  }
}

/// The entry points of one decoder must be one model's: another model's prefill is refused.
TEST(DecodeTest, PrefillOfAnotherModelIsRefused) {
  mlir::MLIRContext ctx;
  spec::ModelSpec spec = denseSpec();
  auto probe = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap weights = randomWeights((*probe)->params(), spec, 7);
  auto mine = compileInference(ctx, spec, 40, {}, 16);
  auto other = compileInference(ctx, spec, 50, {}, 16); // longer KV caches
  ASSERT_TRUE(static_cast<bool>(mine) && static_cast<bool>(other));
  auto mixed = engine::ProgramDecoder::create({&(*mine)[0], &(*other)[1]}, weights);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(mixed.status().message().find("@prefill_16: argument 'state "), std::string::npos)
      << mixed.status().message();
  auto noStep = engine::ProgramDecoder::create({&(*mine)[1]}, weights);
  ASSERT_FALSE(noStep.ok());
  EXPECT_NE(noStep.status().message().find("no @decode_step entry point"), std::string::npos);
}

} // namespace
