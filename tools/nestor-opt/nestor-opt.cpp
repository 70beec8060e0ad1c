//===- nestor-opt.cpp - mlir-opt with Nestor's dialects and passes --------===//
//
// MlirOptMain with Nestor's dialects, passes and pipelines registered, plus the upstream
// passes. Pass and dialect plugins load with --load-pass-plugin / --load-dialect-plugin.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  nestor::registerNestorPassesAndPipelines();
  mlir::DialectRegistry registry;
  nestor::registerNestorDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Nestor optimizer driver\n", registry));
}
