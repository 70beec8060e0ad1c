//===- DecodeTest.cpp - Incremental decoding against the compiled forward ---===//
//
// The decoder is tied to the training semantics three ways: teacher-forced decoding of a dense
// model reproduces the compiled full-sequence forward at every position; prefix-dense decoding
// of an elastic parent at a choice reproduces decoding the model `nestor slice` cuts at that
// choice (homogeneous, per-layer, with a dropped layer); and it reproduces the compiled masked
// elastic forward at a budget whose router choice is forced. The compiled decode step (the
// `@decode_step` program run by engine::ProgramDecoder) is held to the same three.
//
//===----------------------------------------------------------------------===//
#include "nestor/Decode.h"

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

/// The decoder's logits at every position of `tokens`, [length, vocab].
std::vector<float> decodeAll(decode::Decoder &decoder, const std::vector<int32_t> &tokens) {
  decoder.reset();
  std::vector<float> out;
  for (int32_t t : tokens) {
    auto logits = decoder.step(t);
    EXPECT_TRUE(static_cast<bool>(logits)) << llvm::toString(logits.takeError());
    if (!logits)
      return out;
    out.insert(out.end(), *logits, *logits + decoder.vocabSize());
  }
  return out;
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

TEST(DecodeTest, TeacherForcedDecodeEqualsTheCompiledForward) {
  spec::ModelSpec spec = denseSpec();
  mlir::MLIRContext ctx;
  TensorMap weights;
  for (int64_t length : {1, 7, 70}) {
    auto session = Session::create(ctx, spec, 1, length);
    ASSERT_TRUE(static_cast<bool>(session)) << llvm::toString(session.takeError());
    if (weights.empty())
      weights = randomWeights((*session)->params(), spec, 5);
    (*session)->weights = weights;
    std::vector<int32_t> tokens = randomTokens(length, 11), targets = randomTokens(length, 12);
    auto eval = (*session)->evaluate(tokens.data(), targets.data(), 0);
    ASSERT_TRUE(static_cast<bool>(eval)) << llvm::toString(eval.takeError());

    auto decoder = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
    ASSERT_TRUE(static_cast<bool>(decoder)) << llvm::toString(decoder.takeError());
    std::vector<float> logits = decodeAll(**decoder, tokens);
    ASSERT_EQ(logits.size(), size_t(length * kVocab));
    EXPECT_GT(maxAbs(logits), 0.5) << "the logits are not trivial";
    EXPECT_LE(maxAbsDiff(logits, (*session)->logits(), logits.size()), 1e-4) << "length " << length;
    EXPECT_EQ((*decoder)->position(), length);
  }
}

TEST(DecodeTest, TiedEmbeddingsUseTheEmbeddingAsTheHead) {
  spec::ModelSpec spec = denseSpec();
  spec.mutable_architecture()->set_tie_word_embeddings(true);
  mlir::MLIRContext ctx;
  int64_t length = 9;
  auto session = Session::create(ctx, spec, 1, length);
  ASSERT_TRUE(static_cast<bool>(session)) << llvm::toString(session.takeError());
  TensorMap weights = randomWeights((*session)->params(), spec, 6);
  ASSERT_EQ(weights.count("lm_head.weight"), 0u);
  (*session)->weights = weights;
  std::vector<int32_t> tokens = randomTokens(length, 13), targets = randomTokens(length, 14);
  ASSERT_TRUE(static_cast<bool>((*session)->evaluate(tokens.data(), targets.data(), 0)));
  auto decoder = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
  ASSERT_TRUE(static_cast<bool>(decoder)) << llvm::toString(decoder.takeError());
  std::vector<float> logits = decodeAll(**decoder, tokens);
  EXPECT_LE(maxAbsDiff(logits, (*session)->logits(), logits.size()), 1e-4);
}

/// The choices the prefix-dense tests cut: homogeneous, per layer, and with a dropped layer.
std::vector<std::pair<std::string, spec::ModelSizes<double>>> choices(const spec::ModelSpec &spec) {
  std::vector<std::pair<std::string, spec::ModelSizes<double>>> out;
  spec::ModelSizes<double> homogeneous = spec::parentSizes(spec);
  homogeneous.hidden = 16;
  for (spec::LayerSizes<double> &l : homogeneous.layers)
    l.ffn = 24, l.attnHeads = 2, l.mambaHeads = 2, l.mambaHeadDim = 4;
  out.push_back({"homogeneous", homogeneous});
  spec::ModelSizes<double> perLayer = spec::parentSizes(spec); // "M-*M-"
  perLayer.hidden = 16;
  perLayer.layers[0].mambaHeads = 2, perLayer.layers[0].mambaHeadDim = 8;
  perLayer.layers[3].mambaHeads = 4, perLayer.layers[3].mambaHeadDim = 4;
  perLayer.layers[1].ffn = 48, perLayer.layers[4].ffn = 24;
  perLayer.layers[2].attnHeads = 2;
  out.push_back({"heterogeneous", perLayer});
  spec::ModelSizes<double> dropped = perLayer;
  dropped.layers[3].keep = 0; // a Mamba layer: its state must not be touched
  out.push_back({"dropped layer", dropped});
  spec::ModelSizes<double> droppedAttention = homogeneous;
  droppedAttention.hidden = 32;
  droppedAttention.layers[2].keep = 0;
  out.push_back({"dropped attention", droppedAttention});
  return out;
}

/// Run on the model `nestor slice` cuts, the decoder does the same arithmetic up to the order
/// of the sums (one row run or several), so the two agree to float32 rounding. The wide spec
/// has head prefixes longer than the row kernel's vector lanes.
TEST(DecodeTest, PrefixDenseDecodeEqualsTheSlicedModel) {
  for (auto [headDim, attnHeadDim] : {std::pair<int64_t, int64_t>{8, 8}, {40, 20}}) {
    SCOPED_TRACE("mamba_head_dim " + std::to_string(headDim));
    spec::ModelSpec spec = elasticSpec(true, headDim, attnHeadDim);
    mlir::MLIRContext ctx;
    auto probe = Session::create(ctx, spec, 1, 4, {3, 2, 0, 1, 4});
    ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
    TensorMap weights = randomWeights((*probe)->params(), spec, 21);
    std::vector<int32_t> tokens = randomTokens(23, 22);
    for (const auto &[name, sizes] : choices(spec)) {
      SCOPED_TRACE(name);
      auto prefix = decode::Decoder::create(spec, weights, sizes);
      ASSERT_TRUE(static_cast<bool>(prefix)) << llvm::toString(prefix.takeError());
      auto sliced = slice::sliceModel(spec, sizes);
      ASSERT_TRUE(static_cast<bool>(sliced)) << llvm::toString(sliced.takeError());
      auto dense = slice::applySliceMap(sliced->map, weights);
      ASSERT_TRUE(static_cast<bool>(dense)) << llvm::toString(dense.takeError());
      auto cut = decode::Decoder::create(sliced->spec, *dense, spec::parentSizes(sliced->spec));
      ASSERT_TRUE(static_cast<bool>(cut)) << llvm::toString(cut.takeError());
      std::vector<float> a = decodeAll(**prefix, tokens), b = decodeAll(**cut, tokens);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_GT(maxAbs(a), 0.5);
      EXPECT_LE(maxAbsDiff(a, b.data(), a.size()), 1e-5);
    }
  }
}

/// Forces `axis`'s router to `logits` at every budget: only fc2.bias is left.
void forceRouter(TensorMap &w, const std::string &axis, std::vector<float> logits) {
  for (const char *part : {".fc1.weight", ".fc1.bias", ".fc2.weight"}) {
    Tensor &t = w.at("routers." + axis + part);
    std::fill(t.data.begin(), t.data.end(), 0.0f);
  }
  w.at("routers." + axis + ".fc2.bias").data = std::move(logits);
}

TEST(DecodeTest, PrefixDenseDecodeEqualsTheMaskedElasticForward) {
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
    // Per layer [layer][choice]: the two MLP layers (1, 4) and the two Mamba layers (0, 3).
    forceRouter(weights, "intermediate_size",
                heterogeneous ? std::vector<float>{50, 0, 0, 50} : std::vector<float>{0, 50});
    forceRouter(weights, "mamba_num_heads",
                heterogeneous ? std::vector<float>{0, 50, 50, 0} : std::vector<float>{0, 50});
    forceRouter(weights, "depth", {0, 50}); // drop the first layer of the order: Mamba layer 3
    int32_t budget = 1;
    RouterChoice choice = routerChoice(spec, weights, budget, depthOrder);
    ASSERT_EQ(choice.sizes.hidden, 16);
    ASSERT_EQ(choice.sizes.layers[3].keep, 0);
    ASSERT_EQ(choice.sizes.layers[2].attnHeads, 2);
    ASSERT_EQ(choice.sizes.layers[0].mambaHeadDim, 4);
    ASSERT_EQ(choice.sizes.layers[0].mambaHeads, 2);
    ASSERT_EQ(choice.sizes.layers[1].ffn, heterogeneous ? 48 : 24);
    ASSERT_EQ(choice.sizes.layers[4].ffn, 24);

    (*session)->weights = weights;
    for (const auto &[name, t] : weights)
      if (!llvm::StringRef(name).starts_with("routers."))
        (*session)->teacher[name] = t;
    std::vector<int32_t> tokens = randomTokens(length, 32), targets = randomTokens(length, 33);
    auto eval = (*session)->evaluate(tokens.data(), targets.data(), budget);
    ASSERT_TRUE(static_cast<bool>(eval)) << llvm::toString(eval.takeError());

    auto decoder = decode::Decoder::create(spec, weights, choice.sizes);
    ASSERT_TRUE(static_cast<bool>(decoder)) << llvm::toString(decoder.takeError());
    std::vector<float> logits = decodeAll(**decoder, tokens);
    ASSERT_EQ(logits.size(), size_t(length * kVocab));
    EXPECT_GT(maxAbs(logits), 0.5);
    EXPECT_LE(maxAbsDiff(logits, (*session)->logits(), logits.size()), 1e-4);
  }
}

TEST(DecodeTest, GreedyStopsAtTheStopTokenAndRespectsMaxTokens) {
  spec::ModelSpec spec = denseSpec();
  mlir::MLIRContext ctx;
  auto probe = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap weights = randomWeights((*probe)->params(), spec, 41);
  auto decoder = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
  ASSERT_TRUE(static_cast<bool>(decoder)) << llvm::toString(decoder.takeError());
  decode::Decoder &dec = **decoder;
  std::vector<int32_t> prompt = {1, 72, 105, 33};

  auto free = dec.greedy(prompt, 12, -1);
  ASSERT_TRUE(static_cast<bool>(free)) << llvm::toString(free.takeError());
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

  auto shorter = dec.greedy(prompt, 5, -1);
  ASSERT_TRUE(static_cast<bool>(shorter));
  EXPECT_EQ(*shorter, std::vector<int32_t>(free->begin(), free->begin() + 5));

  int32_t stop = (*free)[3];
  size_t first = std::find(free->begin(), free->end(), stop) - free->begin();
  auto stopped = dec.greedy(prompt, 12, stop);
  ASSERT_TRUE(static_cast<bool>(stopped));
  EXPECT_EQ(*stopped, std::vector<int32_t>(free->begin(), free->begin() + first + 1))
      << "stops right after the stop token, which is included";

  auto none = dec.greedy(prompt, 0, -1);
  ASSERT_TRUE(static_cast<bool>(none));
  EXPECT_TRUE(none->empty());

  auto bad = dec.greedy({1, 300}, 4, -1);
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("token 300 at position 1"), std::string::npos);
}

TEST(DecodeTest, BadSizesAndMissingTensorsAreNamed) {
  spec::ModelSpec spec = elasticSpec(false);
  mlir::MLIRContext ctx;
  auto probe = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap weights = randomWeights((*probe)->params(), spec, 51);
  spec::ModelSizes<double> sizes = spec::parentSizes(spec);
  sizes.layers[0].mambaHeads = 3; // not a multiple of the 2 groups
  auto bad = decode::Decoder::create(spec, weights, sizes);
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("layer 0: mamba_num_heads 3"), std::string::npos);
  weights.erase("backbone.layers.2.mixer.k_proj.weight");
  auto missing = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_NE(llvm::toString(missing.takeError()).find("backbone.layers.2.mixer.k_proj.weight"),
            std::string::npos);
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
  auto weight = [&weights](const std::string &name, int64_t numel) -> const float * {
    auto it = weights.find(name);
    return it != weights.end() && int64_t(it->second.data.size()) == numel ? it->second.data.data()
                                                                           : nullptr;
  };
  auto dec = engine::ProgramDecoder::create(*fn, weight, choices);
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

TEST(DecodeTest, CompiledDecodeEqualsTheCompiledForwardAndTheHandWrittenDecoder) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied embeddings" : "separate head");
    spec::ModelSpec spec = denseSpec();
    spec.mutable_architecture()->set_tie_word_embeddings(tied);
    mlir::MLIRContext ctx;
    int64_t length = 70;
    auto session = Session::create(ctx, spec, 1, length);
    ASSERT_TRUE(static_cast<bool>(session)) << llvm::toString(session.takeError());
    TensorMap weights = randomWeights((*session)->params(), spec, 5);
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
    auto hand = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
    ASSERT_TRUE(static_cast<bool>(hand)) << llvm::toString(hand.takeError());
    std::vector<float> reference = decodeAll(**hand, tokens);
    EXPECT_LE(maxAbsDiff(logits, reference.data(), logits.size()), 1e-4);
    // Reset really forgets: a second pass gives the same logits.
    std::vector<float> again = decodeAll(*compiled, tokens);
    EXPECT_EQ(again, logits);
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

    // The full choice (every axis' first choice, nothing dropped) is the parent.
    auto parent = compiledDecoder(ctx, spec, weights, 32, {}, depthOrder);
    auto hand = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
    ASSERT_TRUE(parent && static_cast<bool>(hand));
    std::vector<float> p = decodeAll(*parent, tokens), h = decodeAll(**hand, tokens);
    EXPECT_LE(maxAbsDiff(p, h.data(), p.size()), 1e-4);
  }
}

TEST(DecodeTest, CompiledGreedyMatchesTheHandWrittenDecoderAndErrorsAreNamed) {
  spec::ModelSpec spec = denseSpec();
  mlir::MLIRContext ctx;
  auto probe = Session::create(ctx, spec, 1, 4);
  ASSERT_TRUE(static_cast<bool>(probe)) << llvm::toString(probe.takeError());
  TensorMap weights = randomWeights((*probe)->params(), spec, 41);
  auto hand = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
  ASSERT_TRUE(static_cast<bool>(hand));
  auto compiled = compiledDecoder(ctx, spec, weights, 20);
  ASSERT_TRUE(compiled);
  std::vector<int32_t> prompt = {1, 72, 105, 33};
  auto a = (*hand)->greedy(prompt, 12, -1);
  auto b = compiled->greedy(prompt, 12, -1);
  ASSERT_TRUE(static_cast<bool>(a) && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(compiled->position(), int64_t(prompt.size() + 11));

  auto bad = compiled->greedy({1, 300}, 4, -1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("decode at position 1"), std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("token 300"), std::string::npos);

  // Past the KV cache: a clear error, and the decoder still works after a reset.
  auto full = compiled->greedy(prompt, 40, -1);
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("the context is full (20 tokens"), std::string::npos)
      << full.status().message();
  EXPECT_TRUE(compiled->greedy(prompt, 3, -1).ok());

  auto fn = compileDecodeStep(ctx, spec, 20);
  ASSERT_TRUE(static_cast<bool>(fn));
  auto none = [](const std::string &, int64_t) -> const float * { return nullptr; };
  auto missing = engine::ProgramDecoder::create(*fn, none);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no weight 'backbone.embeddings.weight' of shape "
                                            "256x24"),
            std::string::npos)
      << missing.status().message();
  auto weight = [&weights](const std::string &name, int64_t) -> const float * {
    return weights.at(name).data.data();
  };
  auto axis = engine::ProgramDecoder::create(*fn, weight, {{"hidden_size", {1}}});
  ASSERT_FALSE(axis.ok());
  EXPECT_NE(axis.status().message().find("no elastic axis 'hidden_size'"), std::string::npos);
}

} // namespace
