//===- Batch.h - What the training loop asks of a data source ----*- C++ -*-===//
//
// A batch is requested by (split, index, shape, difficulty) and must be a pure function of
// them: the same request gives the same tokens on any machine, which makes runs reproducible
// and a resumed run continue exactly.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_BATCH_H
#define NESTOR_BATCH_H

#include <cstdint>
#include <functional>

namespace nestor::train {

/// Which problems the built-in reasoning generator writes (spec: Stage.difficulty).
enum class Difficulty { Short, Long };

struct BatchRequest {
  bool validation = false; // the held-out split
  int64_t index = 0;       // batch number within the split
  int64_t batch = 0, length = 0;
  Difficulty difficulty = Difficulty::Short;
};

/// Fills `tokens` and `targets` (batch * length each, row-major; target -1 = no target) for
/// `request`, deterministically.
using BatchFn = std::function<void(const BatchRequest &request, int32_t *tokens, int32_t *targets)>;

} // namespace nestor::train

#endif // NESTOR_BATCH_H
