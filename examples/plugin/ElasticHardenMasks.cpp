//===- ElasticHardenMasks.cpp - An example Nestor pass plugin --------------===//
//
// Built out of tree against the installed Nestor package; nestor-opt loads it with
// --load-pass-plugin. The pass switches soft masks to hard ones through the dialect's API.
//
//===----------------------------------------------------------------------===//
#include "dialects/elastic/ElasticOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"

namespace nestor::example {
#define GEN_PASS_DECL
#define GEN_PASS_DEF_ELASTICEXAMPLEHARDENMASKSPASS
#define GEN_PASS_REGISTRATION
#include "ExamplePasses.h.inc"
} // namespace nestor::example

using namespace mlir;
using namespace nestor::elastic;

namespace {

struct ElasticExampleHardenMasksPass
    : nestor::example::impl::ElasticExampleHardenMasksPassBase<ElasticExampleHardenMasksPass> {
  void runOnOperation() override {
    auto hard = MaskModeAttr::get(&getContext(), MaskMode::Hard);
    getOperation().walk([&](Operation *op) {
      if (auto mask = dyn_cast<PrefixMaskOp>(op))
        mask.setModeAttr(hard);
      else if (auto size = dyn_cast<ExpectedSizeOp>(op))
        size.setModeAttr(hard);
      else if (auto keep = dyn_cast<LayerKeepOp>(op))
        keep.setModeAttr(hard);
    });
  }
};

} // namespace

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "NestorExamplePlugin", LLVM_VERSION_STRING,
          []() { nestor::example::registerNestorExamplePasses(); }};
}
