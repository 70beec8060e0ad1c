//===- ElasticCountParams.cpp - Count a model function's parameters -------===//
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

namespace nestor {
#define GEN_PASS_DEF_ELASTICCOUNTPARAMSPASS
#include "passes/Passes.h.inc"
} // namespace nestor

using namespace mlir;

namespace {

struct ElasticCountParamsPass : nestor::impl::ElasticCountParamsPassBase<ElasticCountParamsPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    int64_t model = 0, routers = 0;
    bool any = false;
    for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
      auto name = func.getArgAttrOfType<StringAttr>(i, "elastic.param");
      if (!name)
        continue;
      any = true;
      // The dialect's argument verifier has checked that a weight is statically shaped.
      auto type = cast<RankedTensorType>(func.getArgument(i).getType());
      (name.getValue().starts_with("routers.") ? routers : model) += type.getNumElements();
    }
    if (!any)
      return;
    Builder b(func.getContext());
    func->setAttr("elastic.num_params", b.getI64IntegerAttr(model));
    func->setAttr("elastic.num_router_params", b.getI64IntegerAttr(routers));
  }
};

} // namespace
