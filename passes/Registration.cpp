//===- Registration.cpp - Register Nestor's dialects and passes -----------===//
#include "passes/Passes.h"

#include "dialects/elastic/ElasticOps.h"
#include "dialects/kernel/KernelOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"

void nestor::registerNestorDialects(mlir::DialectRegistry &registry) {
  registry.insert<elastic::ElasticDialect, kernel::KernelDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect>();
  elastic::registerArithGradientModels(registry);
}

void nestor::registerNestorPassesAndPipelines() {
  registerNestorPasses();
  registerNestorPipelines();
}
