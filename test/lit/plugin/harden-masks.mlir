// The out-of-tree example plugin (examples/plugin), built against the installed Nestor package,
// loads into the installed nestor-opt and runs its pass.
// REQUIRES: plugin
// RUN: %installed_nestor_opt %s --load-pass-plugin=%example_plugin \
// RUN:   --pass-pipeline='builtin.module(func.func(elastic-example-harden-masks))' | FileCheck %s

// CHECK-LABEL: func.func @soft_masks
func.func @soft_masks(%pi: tensor<3xf32>, %depth: tensor<2xf32>)
    -> (!elastic.mask<ffn, 64>, tensor<f32>, tensor<3xf32>) {
  // CHECK: elastic.prefix_mask %{{.*}} {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<hard>}
  %m = elastic.prefix_mask %pi {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> !elastic.mask<ffn, 64>
  // CHECK: elastic.expected_size %{{.*}} {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<hard>}
  %e = elastic.expected_size %pi {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> tensor<f32>
  // CHECK: elastic.layer_keep %{{.*}} {mode = #elastic.mask_mode<hard>, order = array<i64: 2, 1, 0>}
  %k = elastic.layer_keep %depth {order = array<i64: 2, 1, 0>, mode = #elastic.mask_mode<soft>}
      : tensor<2xf32> -> tensor<3xf32>
  return %m, %e, %k : !elastic.mask<ffn, 64>, tensor<f32>, tensor<3xf32>
}
