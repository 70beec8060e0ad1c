//===- Permute.h - Function-preserving permutations of a hybrid model -*- C++ -*-===//
//
// Reorders the channels of every elastic axis so that, after importance ranking, each
// budget's sub-network is a prefix (METHOD.md §3). Every weight that reads or writes a
// permuted axis moves with it, so the permuted model computes exactly the same function:
// hidden channels (embedding and LM-head columns, every norm weight, every input column of a
// layer reading the residual stream and every output row writing it), FFN neurons (up rows,
// down columns), attention query heads within their KV group (q rows, o_proj columns), Mamba
// heads within their group (z, x, dt rows, conv-x channels, A_log, dt_bias, D, norm slice,
// out_proj columns) and Mamba head channels (one order shared by all heads).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_PERMUTE_H
#define NESTOR_PERMUTE_H

#include "nestor/Reference.h"
#include "nestor/Spec.h"

#include <map>
#include <string>
#include <vector>

namespace nestor {

/// New position i takes old channel `order[i]`. Empty vectors leave an axis alone.
struct ModelPermutation {
  std::vector<int64_t> hidden;
  /// Per layer (indexed by layer; empty for other kinds or unpermuted layers).
  std::vector<std::vector<int64_t>> ffn, attnHeads, mambaHeads, mambaChannels;
};

using ParamMap = std::map<std::string, ref::Tensor>;

/// Checks that every order is a permutation of its axis and that head orders keep every head
/// in its group (KV group for attention, Mamba group); the error names the layer and axis.
llvm::Error verifyPermutation(const spec::ModelSpec &spec, const ModelPermutation &perm);

/// Applies `perm` to the parameters of `spec`'s parent (Hugging Face NemotronH names).
llvm::Error permuteParams(const spec::ModelSpec &spec, const ModelPermutation &perm,
                          ParamMap &params);

} // namespace nestor

#endif // NESTOR_PERMUTE_H
