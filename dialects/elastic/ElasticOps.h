//===- ElasticOps.h - Ops of the elastic dialect ----------------*- C++ -*-===//
#ifndef NESTOR_DIALECTS_ELASTIC_ELASTICOPS_H
#define NESTOR_DIALECTS_ELASTIC_ELASTICOPS_H

#include "dialects/elastic/ElasticDialect.h"
#include "dialects/elastic/ElasticInterfaces.h"
#include "dialects/elastic/ElasticTypes.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_ATTRDEF_CLASSES
#include "dialects/elastic/ElasticAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialects/elastic/ElasticOps.h.inc"

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace nestor::elastic {
/// Attaches GradientOpInterface to arith.addf and arith.mulf.
void registerArithGradientModels(mlir::DialectRegistry &registry);
} // namespace nestor::elastic

#endif // NESTOR_DIALECTS_ELASTIC_ELASTICOPS_H
