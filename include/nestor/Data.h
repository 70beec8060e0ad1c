//===- Data.h - Built-in data: byte tokenizer, reasoning problems, text files -*- C++ -*-===//
//
// Everything `nestor train` reads comes from here, with no download:
// - the byte tokenizer: one token per byte (vocabulary 256); the control bytes 0x01 and 0x02,
//   which the generator never writes, mark the start and end of a document;
// - a procedural reasoning generator: multi-digit arithmetic and multi-step word problems,
//   each written out with step-by-step working and a final answer that is checked exactly;
//   short problems for stage 1, long chains of working for stage 2; seeded and deterministic,
//   with a held-out split disjoint from the training split;
// - plain text files (spec `data.text_files`), split into train and validation.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_DATA_H
#define NESTOR_DATA_H

#include "nestor/Batch.h"
#include "nestor/ByteTokenizer.h"
#include "nestor/Spec.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace nestor::data {

// The byte tokenizer (kPad, kBos, kEos, encodeBytes, decodeBytes) is nestor/ByteTokenizer.h.

/// One reasoning problem: the prompt the model is given and the completion it must write
/// (the working, then the final answer). `answer` is the final answer alone, as it appears at
/// the end of the completion.
struct Problem {
  std::string prompt, completion, answer;
};

/// The deterministic problem number `index` of a split: a pure function of its arguments.
/// Training and validation problems never coincide (membership is decided by a hash of the
/// problem's text, and each split draws until it gets one of its own).
Problem reasoningProblem(const spec::ReasoningData &settings, train::Difficulty difficulty,
                         uint64_t seed, bool validation, uint64_t index);

/// Lays out one problem as an evaluation row of `length` tokens:
/// kBos prompt completion kEos, then kPad; the targets are -1 except at the positions whose
/// next token belongs to the completion or is its kEos. Returns false (row untouched) when the
/// problem does not fit.
bool problemRow(const Problem &problem, int64_t length, int32_t *tokens, int32_t *targets);

/// A data source of the spec's `data` section.
class DataSource {
public:
  virtual ~DataSource() = default;
  /// Fills tokens and targets for `request`, deterministically (see nestor/Batch.h). Rows are
  /// documents packed back to back (kBos doc kEos kBos doc ...), targets the next token.
  virtual void batch(const train::BatchRequest &request, int32_t *tokens,
                     int32_t *targets) const = 0;
  /// `count` held-out problems of `difficulty` for exact-match evaluation; empty when the
  /// source has no notion of problems (text files).
  virtual std::vector<Problem> heldOutProblems(train::Difficulty difficulty,
                                               int64_t count) const = 0;
  /// One line for logs: "reasoning generator (seed 7)", "3 text files, 1.2 MB (5% validation)".
  virtual std::string describe() const = 0;

  /// This source as the training loop's BatchFn (the source must outlive it).
  train::BatchFn batchFn() const;
};

/// The source the spec names: text files when `data.text_files` is set (paths relative to
/// `specDir`), otherwise the reasoning generator. Errors name the file or the field.
llvm::Expected<std::unique_ptr<DataSource>> makeDataSource(const spec::ModelSpec &spec,
                                                           llvm::StringRef specDir);

} // namespace nestor::data

#endif // NESTOR_DATA_H
