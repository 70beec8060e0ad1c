//===- Importance.h - Activation-based importance and depth ranking -*- C++ -*-===//
//
// METHOD.md §3: on calibration batches, run the parent forward (the CPU backend) and accumulate
// `acc[c] += sum_b (mean_L |a[b,:,c]|)^2` on the activations that rank each width axis, then
// rank the layers by the iterative normalized-MSE of the logits with layers bypassed. The
// result becomes the permutation that makes every budget a prefix (nestor/Permute.h).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_IMPORTANCE_H
#define NESTOR_IMPORTANCE_H

#include "nestor/Permute.h"
#include "nestor/Train.h"

#include "mlir/IR/MLIRContext.h"

#include <vector>

namespace nestor::train {

/// Scores (higher = more important) and the depth ranking.
struct Importance {
  std::vector<double> hidden; // summed over the layers' pre-norm outputs
  /// Per layer (empty for other kinds).
  std::vector<std::vector<double>> ffn, attnHeads, mambaHeads, mambaChannels;
  /// Layers, least important first (the depth router drops a prefix of this order).
  std::vector<int64_t> depthOrder;
  /// s_j of the first round of the depth ranking (normalized MSE with only layer j bypassed).
  std::vector<double> depthScores;
};

/// Estimates the importance of every axis of `spec`'s parent with `weights` on `batches`
/// calibration batches of batch x length from `data`; `depthBatches` of them rank the layers.
llvm::Expected<Importance> estimateImportance(mlir::MLIRContext &context,
                                              const spec::ModelSpec &spec, const TensorMap &weights,
                                              const BatchFn &data, int64_t batches, int64_t batch,
                                              int64_t length, int64_t depthBatches = 1);

/// The permutation that sorts every axis by decreasing importance: hidden channels, FFN
/// neurons, attention heads within their KV group, Mamba heads within their group and Mamba
/// head channels (stable: ties keep their order).
ModelPermutation permutationFor(const spec::ModelSpec &spec, const Importance &importance);

/// Applies `perm` to float32 weights (every parameter of the parent; routers untouched).
llvm::Error permuteWeights(const spec::ModelSpec &spec, const ModelPermutation &perm,
                           TensorMap &weights);

} // namespace nestor::train

#endif // NESTOR_IMPORTANCE_H
