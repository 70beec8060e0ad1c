//===- ElasticDialect.h - The elastic dialect -------------------*- C++ -*-===//
#ifndef NESTOR_DIALECTS_ELASTIC_ELASTICDIALECT_H
#define NESTOR_DIALECTS_ELASTIC_ELASTICDIALECT_H

#include "mlir/IR/Dialect.h"

#include "dialects/elastic/ElasticDialect.h.inc"
#include "dialects/elastic/ElasticEnums.h.inc"

#endif // NESTOR_DIALECTS_ELASTIC_ELASTICDIALECT_H
