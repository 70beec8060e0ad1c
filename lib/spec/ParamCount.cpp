//===- ParamCount.cpp - Sizes of a spec for the closed-form count ----------===//
#include "nestor/ParamCount.h"

#include "llvm/Support/Error.h"

#include <algorithm>

using namespace nestor::spec;

FixedSizes nestor::spec::fixedSizes(const ModelSpec &spec) {
  const Architecture &a = spec.architecture();
  FixedSizes f;
  auto layers = parsePattern(a.hybrid_override_pattern());
  if (layers)
    f.layers = std::move(*layers);
  else
    llvm::consumeError(layers.takeError()); // validateSpec reports bad patterns
  f.mambaGroups = a.n_groups();
  f.ssmStateSize = a.ssm_state_size();
  f.convKernel = a.conv_kernel();
  f.numKeyValueHeads = a.num_key_value_heads();
  f.attnHeadDim = a.head_dim();
  f.vocabSize = a.vocab_size();
  f.tiedEmbeddings = a.tie_word_embeddings();
  return f;
}

ModelSizes<double> nestor::spec::parentSizes(const ModelSpec &spec) {
  const Architecture &a = spec.architecture();
  ModelSizes<double> s;
  s.hidden = double(a.hidden_size());
  LayerSizes<double> layer;
  layer.ffn = double(a.intermediate_size());
  layer.attnHeads = double(a.num_attention_heads());
  layer.mambaHeads = double(a.mamba_num_heads());
  layer.mambaHeadDim = double(a.mamba_head_dim());
  layer.keep = 1.0;
  s.layers.assign(fixedSizes(spec).layers.size(), layer);
  // Per-layer sizes of a dense model sliced from a heterogeneous choice; 0 keeps the default.
  for (int i = 0; i < a.layer_overrides_size() && i < int(s.layers.size()); ++i) {
    const LayerOverride &o = a.layer_overrides(i);
    LayerSizes<double> &l = s.layers[i];
    for (auto [value, field] : {std::pair{o.intermediate_size(), &LayerSizes<double>::ffn},
                                {o.num_attention_heads(), &LayerSizes<double>::attnHeads},
                                {o.mamba_num_heads(), &LayerSizes<double>::mambaHeads},
                                {o.mamba_head_dim(), &LayerSizes<double>::mambaHeadDim}})
      if (value > 0)
        l.*field = double(value);
  }
  return s;
}

llvm::ArrayRef<RouterAxis> nestor::spec::routerAxes() {
  static const RouterAxis axes[] = {
      {"hidden_size", &Elastic::hidden_size, std::nullopt, nullptr},
      {"intermediate_size", &Elastic::intermediate_size, LayerKind::MLP, &LayerSizes<double>::ffn},
      {"num_attention_heads", &Elastic::num_attention_heads, LayerKind::Attention,
       &LayerSizes<double>::attnHeads},
      {"mamba_num_heads", &Elastic::mamba_num_heads, LayerKind::Mamba,
       &LayerSizes<double>::mambaHeads},
      {"mamba_head_dim", &Elastic::mamba_head_dim, LayerKind::Mamba,
       &LayerSizes<double>::mambaHeadDim},
  };
  return axes;
}

std::vector<ParamShape> nestor::spec::parameterShapes(const ModelSpec &spec) {
  const Architecture &a = spec.architecture();
  FixedSizes fixed = fixedSizes(spec);
  ModelSizes<double> sizes = parentSizes(spec);
  int64_t d = a.hidden_size(), v = a.vocab_size();
  int64_t gn = a.n_groups() * a.ssm_state_size();
  int64_t nkv = a.num_key_value_heads(), hd = a.head_dim();
  std::vector<ParamShape> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    out.push_back({std::move(name), std::move(shape)});
  };
  add("backbone.embeddings.weight", {v, d});
  for (size_t i = 0; i < fixed.layers.size(); ++i) {
    std::string prefix = "backbone.layers." + std::to_string(i) + ".";
    const LayerSizes<double> &l = sizes.layers[i];
    int64_t h = int64_t(l.mambaHeads), p = int64_t(l.mambaHeadDim);
    int64_t nh = int64_t(l.attnHeads), f = int64_t(l.ffn);
    add(prefix + "norm.weight", {d});
    switch (fixed.layers[i]) {
    case LayerKind::Mamba:
      add(prefix + "mixer.in_proj.weight", {2 * h * p + 2 * gn + h, d});
      add(prefix + "mixer.conv1d.weight", {h * p + 2 * gn, a.conv_kernel()});
      add(prefix + "mixer.conv1d.bias", {h * p + 2 * gn});
      add(prefix + "mixer.dt_bias", {h});
      add(prefix + "mixer.A_log", {h});
      add(prefix + "mixer.D", {h});
      add(prefix + "mixer.norm.weight", {h * p});
      add(prefix + "mixer.out_proj.weight", {d, h * p});
      break;
    case LayerKind::Attention:
      add(prefix + "mixer.q_proj.weight", {nh * hd, d});
      add(prefix + "mixer.k_proj.weight", {nkv * hd, d});
      add(prefix + "mixer.v_proj.weight", {nkv * hd, d});
      add(prefix + "mixer.o_proj.weight", {d, nh * hd});
      break;
    case LayerKind::MLP:
      add(prefix + "mixer.up_proj.weight", {f, d});
      add(prefix + "mixer.down_proj.weight", {d, f});
      break;
    }
  }
  add("backbone.norm_f.weight", {d});
  if (!a.tie_word_embeddings())
    add("lm_head.weight", {v, d});
  if (!spec.has_elastic())
    return out;

  const Elastic &el = spec.elastic();
  int64_t budgets = el.budgets_size(), hidden = routerHiddenSize(el);
  auto addRouter = [&](const std::string &axis, int64_t outputs) {
    std::string prefix = "routers." + axis;
    add(prefix + ".fc1.weight", {hidden, budgets});
    add(prefix + ".fc1.bias", {hidden});
    add(prefix + ".fc2.weight", {outputs, hidden});
    add(prefix + ".fc2.bias", {outputs});
  };
  for (const RouterAxis &axis : routerAxes()) {
    const AxisChoices &choices = (el.*axis.choices)();
    if (choices.choices_size() == 0)
      continue;
    int64_t rows = 1;
    if (axis.kind && choices.heterogeneous())
      rows = std::count(fixed.layers.begin(), fixed.layers.end(), *axis.kind);
    addRouter(axis.name, rows * choices.choices_size());
  }
  if (el.max_dropped_layers() > 0)
    addRouter("depth", el.max_dropped_layers() + 1);
  return out;
}
