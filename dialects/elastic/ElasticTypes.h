//===- ElasticTypes.h - Types of the elastic dialect ------------*- C++ -*-===//
#ifndef NESTOR_DIALECTS_ELASTIC_ELASTICTYPES_H
#define NESTOR_DIALECTS_ELASTIC_ELASTICTYPES_H

#include "dialects/elastic/ElasticDialect.h"
#include "mlir/IR/BuiltinTypes.h"

#define GET_TYPEDEF_CLASSES
#include "dialects/elastic/ElasticTypes.h.inc"

#endif // NESTOR_DIALECTS_ELASTIC_ELASTICTYPES_H
