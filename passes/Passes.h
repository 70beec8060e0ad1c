//===- Passes.h - Nestor's passes and pipelines -----------------*- C++ -*-===//
#ifndef NESTOR_PASSES_PASSES_H
#define NESTOR_PASSES_PASSES_H

#include "dialects/elastic/ElasticDialect.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace nestor {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// Registers Nestor's dialects (elastic, and the upstream dialects its IR uses) in `registry`.
void registerNestorDialects(mlir::DialectRegistry &registry);

/// Registers every Nestor pass and pipeline with the global pass registry (nestor-opt).
void registerNestorPassesAndPipelines();

} // namespace nestor

#endif // NESTOR_PASSES_PASSES_H
