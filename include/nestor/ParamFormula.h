//===- ParamFormula.h - The closed-form parameter count ---------*- C++ -*-===//
//
// The parameter count of a hybrid model as one closed-form function of (possibly fractional) axis
// sizes and per-layer keep probabilities (METHOD.md §1):
//   Mamba:     d + d(2HP + 2GN + H) + (HP + 2GN)(K+1) + 3H + HP + HP*d
//   Attention: d + d(n_h + 2 n_kv) h_d + n_h h_d d
//   MLP:       d + 2 d F
//   Total:     V d (embedding) + V d (LM head, unless tied) + d (final norm) + sum_j keep_j *
//   layer_j
// It is a template so that the same function serves exact integer counting (double), and the
// router's resource loss, which differentiates it (a dual-number T). Standard library only: the
// runtime (engine/) evaluates the resource loss with it, without the spec's protobuf or LLVM.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_PARAMFORMULA_H
#define NESTOR_PARAMFORMULA_H

#include <cstdint>
#include <string>
#include <vector>

namespace nestor::spec {

/// The mixer of one layer, one character of `hybrid_override_pattern`.
enum class LayerKind { Mamba, Attention, MLP };

/// The layer kinds of a pattern ('M' Mamba2, '*' attention, '-' MLP). Returns the position
/// of the first other character, or -1 when there is none.
inline int64_t layerKindsOf(const std::string &pattern, std::vector<LayerKind> &kinds) {
  kinds.clear();
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == 'M')
      kinds.push_back(LayerKind::Mamba);
    else if (c == '*')
      kinds.push_back(LayerKind::Attention);
    else if (c == '-')
      kinds.push_back(LayerKind::MLP);
    else
      return static_cast<int64_t>(i);
  }
  return -1;
}

/// The sizes no elastic axis changes.
struct FixedSizes {
  std::vector<LayerKind> layers;
  int64_t mambaGroups = 0;  // G
  int64_t ssmStateSize = 0; // N
  int64_t convKernel = 0;   // K
  int64_t numKeyValueHeads = 0;
  int64_t attnHeadDim = 0;
  int64_t vocabSize = 0;
  bool tiedEmbeddings = false;
};

/// The sizes of one layer; only the fields of its kind are read.
template <typename T> struct LayerSizes {
  T ffn{};          // MLP: F
  T attnHeads{};    // attention: n_h
  T mambaHeads{};   // Mamba: H
  T mambaHeadDim{}; // Mamba: P
  T keep{1};        // keep probability (0/1 when sliced)
};

template <typename T> struct ModelSizes {
  T hidden{};
  std::vector<LayerSizes<T>> layers; // one per layer of FixedSizes::layers
};

template <typename T> struct ParamBreakdown {
  T embedding{}; // input embedding
  T lmHead{};    // LM head (0 when tied)
  T finalNorm{};
  T mamba{}; // sum over Mamba layers, keep-weighted
  T attention{};
  T mlp{};
  std::vector<T> perLayer; // unweighted count of each layer
  T total() const { return embedding + lmHead + finalNorm + mamba + attention + mlp; }
};

template <typename T> T mambaLayerParams(const FixedSizes &f, T d, T heads, T headDim) {
  T hp = heads * headDim;
  T gn = T(double(2 * f.mambaGroups * f.ssmStateSize));
  return d + d * (T(2.0) * hp + gn + heads) + (hp + gn) * T(double(f.convKernel + 1)) +
         T(3.0) * heads + hp + hp * d;
}

template <typename T> T attentionLayerParams(const FixedSizes &f, T d, T heads) {
  T hd = T(double(f.attnHeadDim));
  return d + d * (heads + T(double(2 * f.numKeyValueHeads))) * hd + heads * hd * d;
}

template <typename T> T mlpLayerParams(const FixedSizes &f, T d, T ffn) {
  return d + T(2.0) * d * ffn;
}

/// The closed-form count; every operation is +, * on T, so T may be a dual number.
template <typename T> ParamBreakdown<T> countParams(const FixedSizes &f, const ModelSizes<T> &s) {
  ParamBreakdown<T> b;
  T v = T(double(f.vocabSize));
  b.embedding = v * s.hidden;
  b.lmHead = f.tiedEmbeddings ? T(0.0) : v * s.hidden;
  b.finalNorm = s.hidden;
  b.mamba = b.attention = b.mlp = T(0.0);
  for (size_t i = 0; i < f.layers.size(); ++i) {
    const LayerSizes<T> &l = s.layers[i];
    T p;
    switch (f.layers[i]) {
    case LayerKind::Mamba:
      p = mambaLayerParams(f, s.hidden, l.mambaHeads, l.mambaHeadDim);
      b.mamba = b.mamba + l.keep * p;
      break;
    case LayerKind::Attention:
      p = attentionLayerParams(f, s.hidden, l.attnHeads);
      b.attention = b.attention + l.keep * p;
      break;
    case LayerKind::MLP:
      p = mlpLayerParams(f, s.hidden, l.ffn);
      b.mlp = b.mlp + l.keep * p;
      break;
    }
    b.perLayer.push_back(p);
  }
  return b;
}

} // namespace nestor::spec

#endif // NESTOR_PARAMFORMULA_H
