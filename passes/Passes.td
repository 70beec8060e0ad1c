//===- Passes.td - Nestor's elastic passes -----------------------*- tablegen -*-===//
//
// Alphabetical. Each pass has one .cpp in this directory named after it.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_PASSES_TD
#define NESTOR_PASSES_TD

include "mlir/Pass/PassBase.td"

def ElasticCountParamsPass : Pass<"elastic-count-params", "mlir::func::FuncOp"> {
  let summary = "Annotate a model function with the element counts of its parameters";
  let description = [{
    Sums the elements of every function argument named by an `elastic.param` attribute and
    attaches the totals as `elastic.num_params` (model weights) and `elastic.num_router_params`
    (arguments whose name starts with `routers.`). The model total is the parameter count of the
    parent, the number `nestor params` computes from the closed form; tests compare the two.
    A parameter of dynamic shape is an error.
  }];
  let dependentDialects = ["::nestor::elastic::ElasticDialect"];
}

#endif // NESTOR_PASSES_TD
