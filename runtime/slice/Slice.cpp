//===- Slice.cpp - Zero-shot slicing of a trained elastic model ------------===//
#include "nestor/Slice.h"
#include "nestor/SliceIndices.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

using namespace nestor;
using namespace nestor::slice;

namespace {

std::string layerName(size_t layer, llvm::StringRef suffix) {
  return llvm::formatv("backbone.layers.{0}.{1}", layer, suffix).str();
}

} // namespace

llvm::Expected<Sliced> nestor::slice::sliceModel(const spec::ModelSpec &parent,
                                                 const spec::ModelSizes<double> &sizes) {
  const spec::Architecture &a = parent.architecture();
  const std::string &pattern = a.hybrid_override_pattern();
  if (sizes.layers.size() != pattern.size())
    return llvm::createStringError("slice: %zu layer sizes for a pattern of %zu layers",
                                   sizes.layers.size(), pattern.size());
  Sliced out;
  out.spec = parent;
  out.spec.clear_elastic();
  // The elastic curriculum does not describe the dense model (its budget weights would not
  // even validate); what trains a dense model (training.parent) and the data stay.
  out.spec.mutable_training()->clear_stages();
  spec::Architecture *da = out.spec.mutable_architecture();
  da->clear_layer_overrides();
  int64_t d = static_cast<int64_t>(sizes.hidden);
  if (d <= 0 || d > a.hidden_size())
    return llvm::createStringError("slice: hidden_size %lld is not in (0, %lld]",
                                   static_cast<long long>(d),
                                   static_cast<long long>(a.hidden_size()));

  int64_t H = a.mamba_num_heads(), P = a.mamba_head_dim(), G = a.n_groups();
  int64_t GN = G * a.ssm_state_size(), HP = H * P;
  int64_t nh = a.num_attention_heads(), nkv = a.num_key_value_heads(), hd = a.head_dim();
  // The kept layers and their sizes, each checked against the parent and its groups.
  std::string densePattern;
  std::vector<spec::LayerSizes<int64_t>> kept;
  for (size_t l = 0; l < pattern.size(); ++l) {
    const spec::LayerSizes<double> &s = sizes.layers[l];
    if (s.keep == 0)
      continue;
    spec::LayerSizes<int64_t> k{int64_t(s.ffn), int64_t(s.attnHeads), int64_t(s.mambaHeads),
                                int64_t(s.mambaHeadDim), 1};
    auto bad = [&](const char *axis, int64_t v, llvm::StringRef why) {
      return llvm::createStringError("slice: layer %zu: %s %lld %s", l, axis, (long long)v,
                                     why.str().c_str());
    };
    switch (pattern[l]) {
    case 'M':
      if (k.mambaHeads <= 0 || k.mambaHeads > H || k.mambaHeads % G != 0)
        return bad(
            "mamba_num_heads", k.mambaHeads,
            llvm::formatv("is not a positive multiple of n_groups ({0}) up to {1}", G, H).str());
      if (k.mambaHeadDim <= 0 || k.mambaHeadDim > P)
        return bad("mamba_head_dim", k.mambaHeadDim, llvm::formatv("is not in (0, {0}]", P).str());
      break;
    case '*':
      if (k.attnHeads <= 0 || k.attnHeads > nh || k.attnHeads % nkv != 0)
        return bad("num_attention_heads", k.attnHeads,
                   llvm::formatv("is not a positive multiple of num_key_value_heads ({0}) up to "
                                 "{1}",
                                 nkv, nh)
                       .str());
      break;
    default:
      if (k.ffn <= 0 || k.ffn > a.intermediate_size())
        return bad("intermediate_size", k.ffn,
                   llvm::formatv("is not in (0, {0}]", a.intermediate_size()).str());
      break;
    }
    densePattern += pattern[l];
    out.keptLayers.push_back(static_cast<int64_t>(l));
    kept.push_back(k);
  }
  if (densePattern.empty())
    return llvm::createStringError("slice: every layer is dropped");
  da->set_hybrid_override_pattern(densePattern);
  da->set_hidden_size(d);
  // A dense spec has one size per layer kind: the largest kept one; layers that differ from
  // it (a heterogeneous choice) are listed in layer_overrides, one entry per layer.
  int64_t maxFfn = 0, maxAttn = 0, maxHeads = 0, maxDim = 0;
  for (auto [j, k] : llvm::enumerate(kept)) {
    char kind = densePattern[j];
    if (kind == 'M')
      maxHeads = std::max(maxHeads, k.mambaHeads), maxDim = std::max(maxDim, k.mambaHeadDim);
    else if (kind == '*')
      maxAttn = std::max(maxAttn, k.attnHeads);
    else
      maxFfn = std::max(maxFfn, k.ffn);
  }
  if (maxHeads)
    da->set_mamba_num_heads(maxHeads), da->set_mamba_head_dim(maxDim);
  if (maxAttn)
    da->set_num_attention_heads(maxAttn);
  if (maxFfn)
    da->set_intermediate_size(maxFfn);
  bool heterogeneous = false;
  for (auto [j, k] : llvm::enumerate(kept)) {
    char kind = densePattern[j];
    heterogeneous |= kind == 'M'   ? k.mambaHeads != maxHeads || k.mambaHeadDim != maxDim
                     : kind == '*' ? k.attnHeads != maxAttn
                                   : k.ffn != maxFfn;
  }
  if (heterogeneous)
    for (auto [j, k] : llvm::enumerate(kept)) {
      spec::LayerOverride *o = da->add_layer_overrides();
      char kind = densePattern[j];
      if (kind == 'M')
        o->set_mamba_num_heads(k.mambaHeads), o->set_mamba_head_dim(k.mambaHeadDim);
      else if (kind == '*')
        o->set_num_attention_heads(k.attnHeads);
      else
        o->set_intermediate_size(k.ffn);
    }

  std::vector<int64_t> hidden = range(d), vocab = range(a.vocab_size());
  SliceMap &map = out.map;
  auto take = [&](const std::string &dense, const std::string &source,
                  std::vector<std::vector<int64_t>> indices) {
    map[dense] = TensorSlice{source, std::move(indices)};
  };
  take("backbone.embeddings.weight", "backbone.embeddings.weight", {vocab, hidden});
  take("backbone.norm_f.weight", "backbone.norm_f.weight", {hidden});
  if (!a.tie_word_embeddings())
    take("lm_head.weight", "lm_head.weight", {vocab, hidden});
  for (auto [j, l] : llvm::enumerate(out.keptLayers)) {
    auto dst = [&, j = j](llvm::StringRef s) { return layerName(j, s); };
    auto src = [&, l = l](llvm::StringRef s) { return layerName(size_t(l), s); };
    int64_t heads = kept[j].mambaHeads, headDim = kept[j].mambaHeadDim;
    int64_t attnHeads = kept[j].attnHeads, ffn = kept[j].ffn;
    take(dst("norm.weight"), src("norm.weight"), {hidden});
    switch (pattern[l]) {
    case 'M': {
      // Heads: the first heads/G of every group (METHOD.md §2); channels: one prefix shared
      // by every kept head. B and C stay whole.
      std::vector<int64_t> keptHeads = groupPrefixes(G, H / G, heads / G);
      std::vector<int64_t> chans = expand(keptHeads, P, headDim);
      std::vector<int64_t> bc = range(2 * GN);
      // in_proj rows: [z (HP), x (HP), B (GN), C (GN), dt (H)].
      take(dst("mixer.in_proj.weight"), src("mixer.in_proj.weight"),
           {concat({chans, shifted(chans, HP), shifted(bc, 2 * HP),
                    shifted(keptHeads, 2 * HP + 2 * GN)}),
            hidden});
      // conv channels: [x (HP), B (GN), C (GN)].
      std::vector<int64_t> conv = concat({chans, shifted(bc, HP)});
      take(dst("mixer.conv1d.weight"), src("mixer.conv1d.weight"), {conv, range(a.conv_kernel())});
      take(dst("mixer.conv1d.bias"), src("mixer.conv1d.bias"), {conv});
      for (const char *name : {"mixer.dt_bias", "mixer.A_log", "mixer.D"})
        take(dst(name), src(name), {keptHeads});
      take(dst("mixer.norm.weight"), src("mixer.norm.weight"), {chans});
      take(dst("mixer.out_proj.weight"), src("mixer.out_proj.weight"), {hidden, chans});
      break;
    }
    case '*': {
      // Query heads: the first attnHeads/nkv of every KV group; K and V stay whole.
      std::vector<int64_t> q = expand(groupPrefixes(nkv, nh / nkv, attnHeads / nkv), hd, hd);
      take(dst("mixer.q_proj.weight"), src("mixer.q_proj.weight"), {q, hidden});
      for (const char *name : {"mixer.k_proj.weight", "mixer.v_proj.weight"})
        take(dst(name), src(name), {range(nkv * hd), hidden});
      take(dst("mixer.o_proj.weight"), src("mixer.o_proj.weight"), {hidden, q});
      break;
    }
    default:
      take(dst("mixer.up_proj.weight"), src("mixer.up_proj.weight"), {range(ffn), hidden});
      take(dst("mixer.down_proj.weight"), src("mixer.down_proj.weight"), {hidden, range(ffn)});
      break;
    }
  }
  return out;
}

llvm::Expected<train::TensorMap> nestor::slice::applySliceMap(const SliceMap &map,
                                                              const train::TensorMap &parent) {
  train::TensorMap out;
  for (const auto &[name, s] : map) {
    auto it = parent.find(s.source);
    if (it == parent.end())
      return llvm::createStringError("slice: the parent has no tensor '%s'", s.source.c_str());
    const train::Tensor &src = it->second;
    if (src.shape.size() != s.indices.size())
      return llvm::createStringError("slice: '%s' has rank %zu, the slice map expects %zu",
                                     s.source.c_str(), src.shape.size(), s.indices.size());
    for (size_t dim = 0; dim < s.indices.size(); ++dim)
      for (int64_t i : s.indices[dim])
        if (i < 0 || i >= src.shape[dim])
          return llvm::createStringError(
              "slice: index %lld out of range for dimension %zu of '%s' (size %lld)",
              static_cast<long long>(i), dim, s.source.c_str(),
              static_cast<long long>(src.shape[dim]));
    train::Tensor t;
    for (const auto &idx : s.indices)
      t.shape.push_back(static_cast<int64_t>(idx.size()));
    if (s.indices.size() == 1) {
      for (int64_t i : s.indices[0])
        t.data.push_back(src.data[i]);
    } else if (s.indices.size() == 2) {
      int64_t width = src.shape[1];
      t.data.reserve(s.indices[0].size() * s.indices[1].size());
      for (int64_t r : s.indices[0])
        for (int64_t c : s.indices[1])
          t.data.push_back(src.data[r * width + c]);
    } else {
      return llvm::createStringError("slice: '%s' has rank %zu; only vectors and matrices are "
                                     "sliced",
                                     s.source.c_str(), s.indices.size());
    }
    out[name] = std::move(t);
  }
  return out;
}
