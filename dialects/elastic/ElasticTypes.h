//===- ElasticTypes.h - Types of the elastic dialect ------------*- C++ -*-===//
#ifndef NESTOR_DIALECTS_ELASTIC_ELASTICTYPES_H
#define NESTOR_DIALECTS_ELASTIC_ELASTICTYPES_H

#include "dialects/elastic/ElasticDialect.h"
#include "mlir/IR/BuiltinTypes.h"

#define GET_TYPEDEF_CLASSES
#include "dialects/elastic/ElasticTypes.h.inc"

namespace nestor::elastic {
/// The cotangent of a mask value: `tensor<(n+2)xT>` holding `[dm_0 .. dm_{n-1}, dphi, dsigma]`.
mlir::RankedTensorType maskCotangentType(MaskType mask, mlir::Type elementType);
} // namespace nestor::elastic

#endif // NESTOR_DIALECTS_ELASTIC_ELASTICTYPES_H
