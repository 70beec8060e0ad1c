//===- CpuExecutor.h - Run a program function on the CPU -------*- C++ -*-===//
//
// The CPU driver of the runtime. create() prepares one function of a program for repeated
// execution: its arena is allocated (the planned peak, touched once), every step is bound to
// its CPU kernel (lib/codegen/cpu/Kernels.h, OpenBLAS and OpenMP) with the buffer addresses the
// plan gave it, and every host step to the float64 host semantics (nestor/HostOps.h). run()
// then executes the steps in order with no allocation and no lookups. No MLIR or LLVM.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ENGINE_CPUEXECUTOR_H
#define NESTOR_ENGINE_CPUEXECUTOR_H

#include "engine/program/Program.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace nestor::engine {

/// Active entries per group of a hard prefix mask holding `entries` values of `dtype` (float32
/// or float64; phi and sigma follow them): one past the last nonzero entry of the first group.
/// Every executor derives prefix-dense extents with this rule.
int64_t activePrefix(const void *mask, program::DType dtype, int64_t entries, int64_t groups);

class CpuExecutor {
public:
  /// Prepares `function` (copied: the executor does not depend on the program's lifetime).
  /// Fails naming the step whose kind, operands or attributes this runtime does not know.
  static Result<std::unique_ptr<CpuExecutor>> create(const program::Function &function);
  ~CpuExecutor();

  /// Runs the function once. `args` holds one pointer per argument, to row-major data of the
  /// argument's type (i32 tokens, i64 seed, i1 flag as one byte, floats). Errors name the
  /// failing step and its source location (e.g. a token outside the vocabulary).
  Status run(const void *const *args, size_t count);
  template <typename Container> Status run(const Container &args) {
    return run(args.data(), args.size());
  }

  /// The i-th result of the last run (valid until the next run), in the result's dtype.
  const void *result(unsigned i) const;
  unsigned numResults() const;
  /// Bytes of the planned arena (the function's peak activation/gradient memory).
  int64_t arenaBytes() const;
  const program::Function &function() const;
  /// The index of the argument named `name`, or -1.
  int argumentIndex(const std::string &name) const;

  /// Kind and time (seconds, accumulated over runs) of every step, for profiling.
  std::vector<std::pair<std::string, double>> profile() const;
  void setProfiling(bool enabled);
  /// Floating-point operations of the GEMMs executed since the last resetCounters() (at the
  /// extents actually computed).
  double gemmFlops() const;
  void resetCounters();
  /// Calls `observer` after every step with its index in function().steps() (nullptr: none).
  /// With value() it reads intermediate values, e.g. activations for the importance ranking.
  void setObserver(std::function<void(int step)> observer);
  /// The buffer of value `id` of function(); an arena value is valid until the plan reuses its
  /// bytes, i.e. inside an observer call for the step that defines it.
  const void *value(int32_t id) const;

  struct Impl;

private:
  explicit CpuExecutor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

} // namespace nestor::engine

#endif // NESTOR_ENGINE_CPUEXECUTOR_H
