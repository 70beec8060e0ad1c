//===- Importance.cpp - Activation-based importance and depth ranking ------===//
//
// The parent forward runs on the CPU backend with an observer that reads the activations as
// each kernel produces them: a pre-norm's output (hidden channels), the squared ReLU's output
// (the down projection's input: FFN neurons), attention's head outputs (the o_proj input:
// heads), and the x columns of a Mamba in_proj (heads and channels). The layer an op belongs to
// is the number of residual gates (kernel.depth_gate) executed before it. Inspecting op kinds is
// this analysis' job: it reads the program, it does not transform it.
//
//===----------------------------------------------------------------------===//
#include "nestor/Importance.h"

#include "nestor/Compile.h"

#include "mlir/IR/BuiltinOps.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace mlir;
using namespace nestor;
using namespace nestor::train;

namespace {

/// acc[c] += sum_b (mean_L |a[b, :, offset + c]|)^2 for a [batch, length, width].
void accumulate(const float *a, int64_t batch, int64_t length, int64_t width, int64_t offset,
                int64_t channels, std::vector<double> &acc) {
  acc.resize(channels, 0.0);
  std::vector<double> mean(channels);
  for (int64_t b = 0; b < batch; ++b) {
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int64_t l = 0; l < length; ++l) {
      const float *row = a + (b * length + l) * width + offset;
      for (int64_t c = 0; c < channels; ++c)
        mean[c] += std::abs(row[c]);
    }
    for (int64_t c = 0; c < channels; ++c) {
      double m = mean[c] / static_cast<double>(length);
      acc[c] += m * m;
    }
  }
}

std::vector<double> sqrtOf(const std::vector<double> &acc) {
  std::vector<double> out(acc.size());
  for (size_t i = 0; i < acc.size(); ++i)
    out[i] = std::sqrt(acc[i]);
  return out;
}

/// Indices sorted by decreasing score within consecutive blocks of `perGroup` (stable).
std::vector<int64_t> rankWithinGroups(const std::vector<double> &score, int64_t perGroup) {
  std::vector<int64_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  for (size_t g = 0; g < order.size(); g += perGroup)
    std::stable_sort(order.begin() + g, order.begin() + g + perGroup,
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  return order;
}

} // namespace

llvm::Expected<Importance>
nestor::train::estimateImportance(MLIRContext &context, const spec::ModelSpec &spec,
                                  const TensorMap &weights, const BatchFn &data, int64_t batches,
                                  int64_t batch, int64_t length, int64_t depthBatches) {
  StepOptions options;
  options.batch = batch;
  options.seqLen = length;
  options.parentLayerKeep = true;
  spec::ModelSpec parentSpec = spec;
  // The parent alone: a dense import gives @model; the elastic import's @parent is the same
  // forward. Use the elastic one so that names match the run's.
  auto module = compileKernels(context, parentSpec, options);
  if (!module)
    return module.takeError();
  auto parent = (*module)->lookupSymbol<func::FuncOp>(spec.has_elastic() ? "parent" : "model");
  if (!parent)
    return llvm::createStringError("no parent forward to rank importance with");
  auto program = prepareCpu(parent);
  if (!program)
    return program.takeError();

  const spec::Architecture &a = spec.architecture();
  const std::string &pattern = a.hybrid_override_pattern();
  int64_t layers = static_cast<int64_t>(pattern.size());
  int64_t vocab = a.vocab_size();
  Importance imp;
  std::vector<std::vector<double>> hiddenAcc(layers), ffnAcc(layers), attnAcc(layers),
      mambaAcc(layers);

  std::vector<int32_t> tokens(batch * length), targets(batch * length);
  std::vector<float> keep(layers, 1.0f);
  std::vector<const void *> args;
  bool hasKeep = false;
  for (unsigned i = 0; i < parent.getNumArguments(); ++i) {
    if (auto p = parent.getArgAttrOfType<StringAttr>(i, "elastic.param")) {
      auto it = weights.find(p.str());
      if (it == weights.end())
        return llvm::createStringError("importance: parameter '%s' is missing", p.str().c_str());
      args.push_back(it->second.data.data());
    } else if (parent.getArgAttrOfType<StringAttr>(i, "elastic.input").getValue() == "layer_keep") {
      args.push_back(keep.data());
      hasKeep = true;
    } else {
      args.push_back(tokens.data()); // tokens (and targets for a dense @model)
    }
  }
  if (!hasKeep)
    return llvm::createStringError("importance: the parent forward has no layer_keep input");

  // Width statistics.
  int64_t layer = 0;
  const program::Function &fn = (*program)->function();
  (*program)->setObserver([&](int index) {
    const program::Step &step = fn.steps(index);
    const std::string &kind = step.kind();
    if (kind == "kernel.depth_gate") {
      ++layer;
      return;
    }
    if (layer >= layers)
      return; // the final norm
    auto f = [&](const auto &table, const char *name) {
      return static_cast<const float *>((*program)->value(table.at(name)));
    };
    if (kind == "kernel.rmsnorm") {
      accumulate(f(step.results(), "result"), batch, length, a.hidden_size(), 0, a.hidden_size(),
                 hiddenAcc[layer]);
    } else if (kind == "kernel.relu2") {
      accumulate(f(step.results(), "result"), batch, length, a.intermediate_size(), 0,
                 a.intermediate_size(), ffnAcc[layer]);
    } else if (kind == "kernel.attention") {
      int64_t w = a.num_attention_heads() * a.head_dim();
      accumulate(f(step.results(), "result"), batch, length, w, 0, w, attnAcc[layer]);
    } else if (kind == "kernel.mamba_conv") {
      int64_t hp = a.mamba_num_heads() * a.mamba_head_dim();
      const program::TensorType &proj = fn.values(step.operands().at("proj")).type();
      int64_t width = proj.shape(proj.shape_size() - 1);
      accumulate(f(step.operands(), "proj"), batch, length, width, hp, hp, mambaAcc[layer]);
    }
  });
  for (int64_t s = 0; s < batches; ++s) {
    layer = 0;
    data(BatchRequest{false, s, batch, length}, tokens.data(), targets.data());
    if (llvm::Error err = toError((*program)->run(args)))
      return err;
  }
  (*program)->setObserver(nullptr);

  imp.hidden.assign(a.hidden_size(), 0.0);
  imp.ffn.resize(layers), imp.attnHeads.resize(layers), imp.mambaHeads.resize(layers);
  imp.mambaChannels.resize(layers);
  for (int64_t l = 0; l < layers; ++l) {
    if (!hiddenAcc[l].empty()) {
      std::vector<double> s = sqrtOf(hiddenAcc[l]);
      for (int64_t c = 0; c < a.hidden_size(); ++c)
        imp.hidden[c] += s[c];
    }
    if (!ffnAcc[l].empty())
      imp.ffn[l] = sqrtOf(ffnAcc[l]);
    if (!attnAcc[l].empty()) {
      std::vector<double> s = sqrtOf(attnAcc[l]);
      int64_t hd = a.head_dim();
      imp.attnHeads[l].assign(a.num_attention_heads(), 0.0);
      for (int64_t h = 0; h < a.num_attention_heads(); ++h) {
        double sum = 0;
        for (int64_t e = 0; e < hd; ++e)
          sum += s[h * hd + e] * s[h * hd + e];
        imp.attnHeads[l][h] = std::sqrt(sum);
      }
    }
    if (!mambaAcc[l].empty()) {
      std::vector<double> s = sqrtOf(mambaAcc[l]);
      int64_t H = a.mamba_num_heads(), P = a.mamba_head_dim();
      // Channel importance: L2 over heads; one ranking shared by all heads.
      imp.mambaChannels[l].assign(P, 0.0);
      for (int64_t p = 0; p < P; ++p) {
        double sum = 0;
        for (int64_t h = 0; h < H; ++h)
          sum += s[h * P + p] * s[h * P + p];
        imp.mambaChannels[l][p] = std::sqrt(sum);
      }
      // Head importance: L2 over its top channels (those the smallest channel choice keeps).
      std::vector<int64_t> channels = rankWithinGroups(imp.mambaChannels[l], P);
      int64_t top = P;
      for (int64_t k : spec.elastic().mamba_head_dim().choices())
        top = std::min(top, k);
      imp.mambaHeads[l].assign(H, 0.0);
      for (int64_t h = 0; h < H; ++h) {
        double sum = 0;
        for (int64_t i = 0; i < top; ++i)
          sum += s[h * P + channels[i]] * s[h * P + channels[i]];
        imp.mambaHeads[l][h] = std::sqrt(sum);
      }
    }
  }

  // Depth: iterative normalized MSE of the logits, against the full model's.
  auto logitsWith = [&](int64_t b) -> llvm::Expected<std::vector<float>> {
    data(BatchRequest{false, b, batch, length}, tokens.data(), targets.data());
    if (llvm::Error err = toError((*program)->run(args)))
      return err;
    const float *p = static_cast<const float *>((*program)->result(0));
    return std::vector<float>(p, p + batch * length * vocab);
  };
  std::vector<std::vector<float>> full;
  for (int64_t b = 0; b < depthBatches; ++b) {
    std::fill(keep.begin(), keep.end(), 1.0f);
    auto l = logitsWith(b);
    if (!l)
      return l.takeError();
    full.push_back(std::move(*l));
  }
  std::vector<bool> dropped(layers, false);
  for (int64_t round = 0; round < layers; ++round) {
    int64_t best = -1;
    double bestScore = 0;
    for (int64_t j = 0; j < layers; ++j) {
      if (dropped[j])
        continue;
      double num = 0, den = 0;
      for (int64_t b = 0; b < depthBatches; ++b) {
        for (int64_t l = 0; l < layers; ++l)
          keep[l] = dropped[l] || l == j ? 0.0f : 1.0f;
        auto m = logitsWith(b);
        if (!m)
          return m.takeError();
        for (size_t i = 0; i < m->size(); ++i) {
          double d = double(full[b][i]) - (*m)[i];
          num += d * d;
          den += double(full[b][i]) * full[b][i];
        }
      }
      double score = den > 0 ? num / den : num;
      if (round == 0)
        imp.depthScores.push_back(score);
      if (best < 0 || score < bestScore) {
        best = j;
        bestScore = score;
      }
    }
    dropped[best] = true;
    imp.depthOrder.push_back(best);
  }
  return imp;
}

ModelPermutation nestor::train::permutationFor(const spec::ModelSpec &spec, const Importance &imp) {
  const spec::Architecture &a = spec.architecture();
  ModelPermutation perm;
  perm.hidden = rankWithinGroups(imp.hidden, a.hidden_size());
  size_t layers = a.hybrid_override_pattern().size();
  perm.ffn.resize(layers), perm.attnHeads.resize(layers), perm.mambaHeads.resize(layers);
  perm.mambaChannels.resize(layers);
  for (size_t l = 0; l < layers; ++l) {
    if (!imp.ffn[l].empty())
      perm.ffn[l] = rankWithinGroups(imp.ffn[l], a.intermediate_size());
    if (!imp.attnHeads[l].empty())
      perm.attnHeads[l] =
          rankWithinGroups(imp.attnHeads[l], a.num_attention_heads() / a.num_key_value_heads());
    if (!imp.mambaHeads[l].empty()) {
      perm.mambaHeads[l] = rankWithinGroups(imp.mambaHeads[l], a.mamba_num_heads() / a.n_groups());
      perm.mambaChannels[l] = rankWithinGroups(imp.mambaChannels[l], a.mamba_head_dim());
    }
  }
  return perm;
}

llvm::Error nestor::train::permuteWeights(const spec::ModelSpec &spec, const ModelPermutation &perm,
                                          TensorMap &weights) {
  ParamMap params;
  for (auto &[name, t] : weights)
    if (!llvm::StringRef(name).starts_with("routers."))
      params[name] = ref::Tensor(t.shape, std::vector<double>(t.data.begin(), t.data.end()));
  if (llvm::Error err = permuteParams(spec, perm, params))
    return err;
  for (auto &[name, t] : params) {
    Tensor &w = weights.at(name);
    for (size_t i = 0; i < w.data.size(); ++i)
      w.data[i] = static_cast<float>(t.data[i]); // exact: the values came from floats
  }
  return llvm::Error::success();
}
