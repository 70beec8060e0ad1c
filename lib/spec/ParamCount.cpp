//===- ParamCount.cpp - Sizes of a spec for the closed-form count ----------===//
#include "nestor/ParamCount.h"

#include "llvm/Support/Error.h"

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
