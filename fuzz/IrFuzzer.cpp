//===- IrFuzzer.cpp - libFuzzer target: nestor-opt's parse, verify and passes ===//
//
// Any bytes as MLIR text with Nestor's dialects (what nestor-opt reads): parse, verify, and for
// IR that verifies, every Nestor pass and the train-step pipeline, each on its own copy of the
// module, with the options the lit tests use (the function and budget names taken from the
// input). A diagnostic is an answer; only a crash, a sanitizer report, a leak or a hang is a
// finding: "verifier-valid IR never crashes a pass".
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

/// Registered once: the pass registry is global.
struct Registry {
  mlir::DialectRegistry dialects;
  Registry() {
    nestor::registerNestorPassesAndPipelines();
    nestor::registerNestorDialects(dialects);
  }
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // Large inputs only make the passes slow, not different.
  if (size > (1 << 16))
    return 0;
  static Registry registry;
  mlir::MLIRContext context(registry.dialects);
  context.loadAllAvailableDialects();
  context.printOpOnDiagnostic(false);
  mlir::ScopedDiagnosticHandler quiet(&context, [](mlir::Diagnostic &) {});
  std::string text(reinterpret_cast<const char *>(data), size);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, &context, "fuzz.mlir");
  if (!module || mlir::failed(mlir::verify(*module)))
    return 0;

  // Names the passes' options need: the first function, and its first budget.
  std::string function = "model", budget = "full";
  for (auto fn : module->getOps<mlir::func::FuncOp>()) {
    function = fn.getSymName().str();
    if (auto budgets = fn->getAttrOfType<mlir::ArrayAttr>("elastic.budgets"))
      if (!budgets.empty())
        if (auto name = llvm::dyn_cast<mlir::StringAttr>(budgets[0]))
          budget = name.str();
    break;
  }
  auto quoted = [](const std::string &s) {
    // Pipeline option values: names with spaces or braces would break the pipeline syntax,
    // which is the parser's business, not the pass's.
    return s.find_first_of(" {}=,'\"") == std::string::npos ? s : std::string("x");
  };
  const std::vector<std::string> pipelines = {
      "builtin.module(func.func(elastic-count-params))",
      "builtin.module(elastic-autodiff{function=" + quoted(function) + " loss-index=0})",
      "builtin.module(elastic-slice{budget=" + quoted(budget) + "})",
      "builtin.module(convert-elastic-to-kernel{batch=2 seq-len=5})",
      "builtin.module(convert-elastic-to-kernel{batch=1 seq-len=3 prefix-dense=false})",
      "builtin.module(func.func(kernel-fuse))",
      "builtin.module(func.func(kernel-plan-memory))",
      "builtin.module(nestor-train-step{function=" + quoted(function) + " loss-index=0})",
  };
  for (const std::string &pipeline : pipelines) {
    mlir::OwningOpRef<mlir::ModuleOp> copy(module->clone());
    mlir::PassManager pm(&context);
    if (mlir::failed(mlir::parsePassPipeline(pipeline, pm)))
      __builtin_trap(); // the pipelines above are fixed: a typo, not a finding in the input
    (void)pm.run(*copy);
  }
  return 0;
}
