//===- ParamCount.h - Closed-form parameter count of a spec -----*- C++ -*-===//
//
// The formula itself is in ParamFormula.h; this header adds the sizes of a spec.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_PARAMCOUNT_H
#define NESTOR_PARAMCOUNT_H

#include "nestor/ParamFormula.h"
#include "nestor/Spec.h"

#include "llvm/ADT/ArrayRef.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace nestor::spec {

/// The fixed sizes of a (validated) spec.
FixedSizes fixedSizes(const ModelSpec &spec);

/// The parent's sizes: every axis at its largest (a dense spec's `layer_overrides` applied),
/// every layer kept.
ModelSizes<double> parentSizes(const ModelSpec &spec);

/// One parameter tensor of a spec's model: its checkpoint name and shape.
struct ParamShape {
  std::string name;
  std::vector<int64_t> shape;
};

/// The elastic axes that have routers, in router-stream order (the importer's, the trainer's
/// and the router choice's): hidden_size, intermediate_size, num_attention_heads,
/// mamba_num_heads, mamba_head_dim. Each applies to the layers of `kind` and sets `field` of
/// their sizes (none and null: the global hidden axis).
struct RouterAxis {
  const char *name;
  const AxisChoices &(Elastic::*choices)() const;
  std::optional<LayerKind> kind;
  double LayerSizes<double>::*field;
};
llvm::ArrayRef<RouterAxis> routerAxes();

/// Every parameter of a (validated) spec's model, in the order the importer declares them:
/// the parent's tensors (NemotronH names; a dense spec's `layer_overrides` applied), then, for
/// an elastic spec, each router's fc1/fc2 weight and bias (the axes with choices in
/// routerAxes() order, then "depth" when layers may be dropped). The one list every weight
/// loader checks a checkpoint against.
std::vector<ParamShape> parameterShapes(const ModelSpec &spec);

} // namespace nestor::spec

#endif // NESTOR_PARAMCOUNT_H
