//===- Import.h - From a model spec to elastic IR ---------------*- C++ -*-===//
//
// The importer builds the elastic-dialect program of a (validated) model spec:
//   - dense specs: `@model(tokens, targets, params...) -> (logits, loss)`;
//   - with ImportOptions::decodeContext, only `@decode_step` (incremental decoding);
//   - elastic specs: `@parent(tokens, params...) -> logits` (the unmasked parent, the frozen
//     teacher) and `@elastic_model(tokens, targets, teacher_logits, budget, tau, logit_scale,
//     hard_sample, seed, params..., router params...) -> (logits, loss, kd_loss, ce_loss,
//     router_loss)`.
// Run-time inputs carry `elastic.input = "<name>"`, parameters `elastic.param = "<name>"` with
// Hugging Face NemotronH tensor names (routers: `routers.<axis>.fc{1,2}.{weight,bias}`).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_IMPORT_H
#define NESTOR_IMPORT_H

#include "nestor/Spec.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <cstdint>
#include <vector>

namespace nestor {

struct ImportOptions {
  /// Build the program in float64 (numerical checks) instead of float32.
  bool float64 = false;
  /// Layers least important first (the depth ranking of METHOD.md §3). Empty: until an
  /// importance ranking exists, the last layer is taken as least important, then the one
  /// before it, and so on.
  std::vector<int64_t> depthOrder;
  /// Give `@parent` a last input `layer_keep` (tensor<L>, elastic.input = "layer_keep") that
  /// gates each layer's residual branch: the importance step bypasses layers with it.
  bool parentLayerKeep = false;
  /// > 0: build only `@decode_step(tokens, position, choice.<axis>..., params..., state...) ->
  /// logits`, the incremental forward of the next tokens at `position` (tensor<i64>) of
  /// sequences whose past is the state arguments (`elastic.state = "layers.<i>.<conv|ssm|k|v>"`,
  /// zeros for an empty context, updated in place), with KV caches of this many positions. For
  /// an elastic spec the active sizes are inputs: `choice.<axis>` one-hot over the axis'
  /// choices (a row per layer for heterogeneous axes), and `choice.depth` over the number of
  /// dropped layers; the parent is the first choice of every axis and depth choice 0.
  int64_t decodeContext = 0;
};

/// Loads the dialects the imported IR uses into `context`.
void loadImportDialects(mlir::MLIRContext &context);

/// Builds the module for `spec`. The spec must have passed spec::validateSpec; a bad
/// `options.depthOrder` is reported as an error.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> importSpec(mlir::MLIRContext &context,
                                                             const spec::ModelSpec &spec,
                                                             const ImportOptions &options = {});

} // namespace nestor

#endif // NESTOR_IMPORT_H
