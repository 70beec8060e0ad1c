//===- ProgramDecoder.h - Incremental decoding by a compiled program -*- C++ -*-===//
//
// Runs the inference entry points of a program (nestor/Compile.h, compileInference) on the
// CPU: `@decode_step` token by token, and a prompt through `@prefill_<C>` C tokens per call.
// The decoder owns the state arguments all entry points share (KV caches, Mamba conv windows
// and SSM states, zero for an empty context), the position and the one-hot size choices, and
// binds the weights by name. One decode program serves every budget
// of an elastic parent (the choices are inputs: prefix-dense execution reads the budget's
// prefixes of the parent's weights), and a dense program serves a sliced model. No MLIR.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ENGINE_PROGRAMDECODER_H
#define NESTOR_ENGINE_PROGRAMDECODER_H

#include "engine/cpu/CpuExecutor.h"
#include "nestor/Tensor.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nestor::engine {

class ProgramDecoder {
public:
  /// The weight of parameter `name` with `numel` float32 elements, or nullptr when there is
  /// none (the decoder reports it). The data must outlive the decoder.
  using WeightFn = std::function<const float *(const std::string &name, int64_t numel)>;

  /// Prepares the inference entry points `functions` (engine::inferenceFunctions) of one model:
  /// exactly one `@decode_step` (a float32 step of batch 1 and one token) and any number of
  /// `@prefill_<C>` (C tokens at once), which share its weights, states and inputs. `choices`
  /// gives, for every `choice.<axis>` input, the chosen index of each row (one entry for a
  /// shared axis, one per layer for a heterogeneous one; "depth": the number of dropped
  /// layers); axes it does not name take choice 0 (the parent's size).
  static Result<std::unique_ptr<ProgramDecoder>>
  create(const std::vector<const program::Function *> &functions, const WeightFn &weight,
         const std::map<std::string, std::vector<int64_t>> &choices = {});
  /// The same over `weights` (which must outlive the decoder): each parameter is the tensor of
  /// its name, which must have the parameter's shape exactly.
  static Result<std::unique_ptr<ProgramDecoder>>
  create(const std::vector<const program::Function *> &functions, const train::TensorMap &weights,
         const std::map<std::string, std::vector<int64_t>> &choices = {});
  /// A decoder of `@decode_step` alone (prefill then runs token by token).
  static Result<std::unique_ptr<ProgramDecoder>>
  create(const program::Function &decodeStep, const train::TensorMap &weights,
         const std::map<std::string, std::vector<int64_t>> &choices = {});
  ~ProgramDecoder();

  /// Appends `token` and returns the next-token logits [vocab] (valid until the next call).
  /// Fails past the KV cache's context or on a token outside the vocabulary.
  Result<const float *> step(int32_t token);
  /// Appends `tokens` (a prompt) in as few calls as the entry points allow: the longest prefill
  /// chunk that fits what is left, down to decode steps. Returns the last token's next-token
  /// logits [vocab] (valid until the next call); `all`, when given, receives every token's
  /// [tokens.size(), vocab]. Fails, appending nothing, when the tokens do not fit the context.
  Result<const float *> prefill(const std::vector<int32_t> &tokens,
                                std::vector<float> *all = nullptr);
  /// The token counts of the prefill entry points, longest first (empty: decode steps only).
  std::vector<int64_t> prefillChunks() const;
  /// Calls of the entry points since the decoder was made (decode steps and prefill chunks).
  int64_t calls() const;
  /// Forgets the context: zero states, position 0.
  void reset();
  int64_t position() const;
  int64_t vocabSize() const;
  /// The longest context (KV cache rows); unlimited (-1) for a model without attention.
  int64_t context() const;
  /// Wall-clock seconds of the two phases of greedy().
  struct GreedyTimes {
    double prefill = 0; // feeding the prompt
    double decode = 0;  // choosing and feeding back the continuation
  };
  /// Feeds `prompt`, then writes the argmax token up to `maxTokens` times, stopping after
  /// `stopToken` (included); the last token is chosen, not fed back. Starts from a reset
  /// decoder. `times`, when given, receives how long each phase took.
  Result<std::vector<int32_t>> greedy(const std::vector<int32_t> &prompt, int64_t maxTokens,
                                      int32_t stopToken, GreedyTimes *times = nullptr);
  CpuExecutor &executor();

  /// The prompt `benchPass` feeds before it starts the clock.
  static constexpr int kBenchPrompt = 16;
  /// Tokens/s of one timed pass: from a reset decoder, a fixed `kBenchPrompt`-token prompt, then
  /// `steps` timed steps of a fixed token sequence. `nestor bench --decode` and the executables'
  /// `--bench` run this one sequence, so their rates compare.
  Result<double> benchPass(int64_t steps);
  /// Tokens/s of reading a fixed `tokens`-token prompt from a reset decoder with prefill().
  Result<double> benchPrefill(int64_t tokens);

  struct Impl;

private:
  explicit ProgramDecoder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace nestor::engine

#endif // NESTOR_ENGINE_PROGRAMDECODER_H
