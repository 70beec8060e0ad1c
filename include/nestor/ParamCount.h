//===- ParamCount.h - Closed-form parameter count of a spec -----*- C++ -*-===//
//
// The formula itself is in ParamFormula.h; this header adds the sizes of a spec.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_PARAMCOUNT_H
#define NESTOR_PARAMCOUNT_H

#include "nestor/ParamFormula.h"
#include "nestor/Spec.h"

#include <cstdint>
#include <vector>

namespace nestor::spec {

/// The fixed sizes of a (validated) spec.
FixedSizes fixedSizes(const ModelSpec &spec);

/// The parent's sizes: every axis at its largest (a dense spec's `layer_overrides` applied),
/// every layer kept.
ModelSizes<double> parentSizes(const ModelSpec &spec);

} // namespace nestor::spec

#endif // NESTOR_PARAMCOUNT_H
