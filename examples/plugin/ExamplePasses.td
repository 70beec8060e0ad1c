//===- ExamplePasses.td - The example plugin's pass -------------*- tablegen -*-===//
#ifndef NESTOR_EXAMPLE_PASSES_TD
#define NESTOR_EXAMPLE_PASSES_TD

include "mlir/Pass/PassBase.td"

def ElasticExampleHardenMasksPass
    : Pass<"elastic-example-harden-masks", "mlir::func::FuncOp"> {
  let summary = "Switch every soft prefix mask to hard mode";
  let description = [{
    Rewrites `elastic.prefix_mask`, `elastic.expected_size` and `elastic.layer_keep` ops in soft mode
    (`m = sum_i pi_i I_i`) to hard mode (`m = I_argmax * max pi`), which makes every mask a
    prefix whose extent kernels can take at run time. An example of an out-of-tree pass over
    Nestor's dialect, loaded into nestor-opt as a plugin.
  }];
  let dependentDialects = ["::nestor::elastic::ElasticDialect"];
}

#endif // NESTOR_EXAMPLE_PASSES_TD
