//===- Decode.h - Incremental float32 decoding on the CPU --------*- C++ -*-===//
//
// Token-by-token decoding of a hybrid model: Mamba layers carry their convolution window and
// SSM state, attention layers a KV cache, so each new token costs one pass over the weights
// whatever the context already read.
//
// Many-in-one serving (METHOD.md §8) is prefix-dense execution: a budget's sub-network is a
// prefix of every axis of the permuted parent (per group for Mamba heads, per KV group for
// attention heads), so the decoder reads those prefixes straight out of the parent's full-size
// weights. Nothing is copied; the memory is the parent's for any number of budgets, and the
// work per token is the budget's. With the masked-norm rule (METHOD.md §5) a norm over the k
// active channels is the plain RMSNorm over those k channels, so this computes exactly the
// model `nestor slice` would cut.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_DECODE_H
#define NESTOR_DECODE_H

#include "nestor/ParamCount.h"
#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace nestor::decode {

/// A float32 incremental decoder of one model at one set of active sizes.
class Decoder {
public:
  /// `spec` is the model `weights` belong to: a dense spec (its layer_overrides honoured) or an
  /// elastic parent with its trained weights. `sizes` are the active sizes (one entry per layer
  /// of the pattern; keep = 0 skips the layer): spec::parentSizes(spec) for the whole model,
  /// train::routerChoice(...).sizes for a budget. `weights` must outlive the decoder; the
  /// decoder keeps pointers into it and allocates only its state and scratch.
  static llvm::Expected<std::unique_ptr<Decoder>> create(const spec::ModelSpec &spec,
                                                         const train::TensorMap &weights,
                                                         const spec::ModelSizes<double> &sizes);
  ~Decoder();
  Decoder(const Decoder &) = delete;
  Decoder &operator=(const Decoder &) = delete;

  /// Appends `token` and returns the next-token logits [vocab] (valid until the next call).
  llvm::Expected<const float *> step(int32_t token);
  /// Forgets the context: zero states, empty KV caches.
  void reset();
  /// Tokens consumed since the last reset.
  int64_t position() const;
  int64_t vocabSize() const;

  /// Feeds `prompt`, then writes the argmax token up to `maxTokens` times, stopping after
  /// `stopToken` (which is included). Starts from a reset decoder. Fails, naming the position,
  /// on a token out of the vocabulary.
  llvm::Expected<std::vector<int32_t>> greedy(const std::vector<int32_t> &prompt, int64_t maxTokens,
                                              int32_t stopToken);

  struct Impl;

private:
  explicit Decoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace nestor::decode

#endif // NESTOR_DECODE_H
