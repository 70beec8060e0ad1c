//===- Slice.h - Zero-shot slicing of a trained elastic model ----*- C++ -*-===//
//
// METHOD.md §8: at a budget, the routers' argmax choice (nestor/Trainer.h, routerChoice) fixes
// every axis; since the weights were permuted by importance, the chosen sub-network is a prefix
// of every axis (per group for Mamba heads, per KV group for attention heads), and the layers
// the depth router drops are gone. Slicing gathers those prefixes into a dense model with the
// reduced sizes: a dense spec (no elastic section) and its weights. With the masked-norm
// correction (METHOD.md §5) the dense model computes exactly what the masked parent computes at
// that budget.
//
// The slice map says, for every tensor of the dense model, which tensor of the parent it comes
// from and which indices of each dimension it keeps; applying it to a checkpoint is a gather.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_SLICE_H
#define NESTOR_SLICE_H

#include "nestor/ParamCount.h"
#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <vector>

namespace nestor::slice {

/// Where one dense tensor comes from: `source`, restricted to `indices[d]` along dimension d.
struct TensorSlice {
  std::string source;
  std::vector<std::vector<int64_t>> indices;
};
/// Dense tensor name -> its slice of the parent.
using SliceMap = std::map<std::string, TensorSlice>;

/// A dense model cut from an elastic parent.
struct Sliced {
  spec::ModelSpec spec; // dense: no elastic section, the reduced sizes and pattern
  SliceMap map;
  std::vector<int64_t> keptLayers; // parent layer of each dense layer
};

/// The dense model with `sizes` (one entry per parent layer; keep = 0 drops the layer) cut
/// from `parent`. Kept layers of one kind that differ (a heterogeneous choice) get their own
/// sizes in the dense spec's `layer_overrides`. Fails, naming the layer and the axis, when a
/// size is out of range or breaks a group constraint.
llvm::Expected<Sliced> sliceModel(const spec::ModelSpec &parent,
                                  const spec::ModelSizes<double> &sizes);

/// Applies `map` to the parent's float32 weights. Fails naming a missing tensor or an index
/// out of range.
llvm::Expected<train::TensorMap> applySliceMap(const SliceMap &map, const train::TensorMap &parent);

} // namespace nestor::slice

#endif // NESTOR_SLICE_H
