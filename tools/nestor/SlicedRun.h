//===- SlicedRun.h - One budget of a finished run, sliced ---------*- C++ -*-===//
//
// What `nestor slice` and `nestor build` share: load a finished run, slice it at one budget
// with elastic-slice, and gather the dense weights.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TOOLS_NESTOR_SLICEDRUN_H
#define NESTOR_TOOLS_NESTOR_SLICEDRUN_H

#include "nestor/Checkpoint.h"
#include "nestor/Slice.h"
#include "nestor/Trainer.h"

#include <string>

namespace nestor::cli {

struct SlicedRun {
  spec::ModelSpec parent; // the run's elastic spec
  slice::Sliced sliced;   // dense spec (named <parent>-<budget>), slice map, kept layers
  train::RouterChoice choice;
  train::TensorMap weights; // the dense model's float32 weights
  std::string graph;        // the dense graph elastic-slice built, printed
};

/// Slices `runDir` at `budget`, its weights loaded under `policy`. On failure, `exitCode` says
/// whether the input was bad (2) or the slicing failed (1).
llvm::Expected<SlicedRun> sliceRun(const std::string &runDir, const std::string &budget,
                                   const ckpt::WeightPolicy &policy, int &exitCode);

} // namespace nestor::cli

#endif // NESTOR_TOOLS_NESTOR_SLICEDRUN_H
