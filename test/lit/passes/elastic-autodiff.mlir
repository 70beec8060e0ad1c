// RUN: nestor-opt %s -split-input-file -verify-diagnostics \
// RUN:   --elastic-autodiff="function=f loss-index=1" | FileCheck %s

// The train step: forward ops, then each op's VJP in reverse, cotangents of values with two
// uses summed, one gradient per parameter with its name; run-time inputs get none.
// CHECK-LABEL: func.func @f_train_step
// CHECK-SAME: -> (tensor<?x?x29xf32> {elastic.result = "logits"}, tensor<f32> {elastic.result = "loss"},
// CHECK-SAME: tensor<3xf32> {elastic.grad_of = "routers.hidden"}, tensor<29x7xf32> {elastic.grad_of = "emb"},
// CHECK-SAME: tensor<11x7xf32> {elastic.grad_of = "up"}, tensor<7x11xf32> {elastic.grad_of = "down"},
// CHECK-SAME: tensor<29x7xf32> {elastic.grad_of = "head"})
// CHECK: %[[MASK:.+]] = elastic.prefix_mask
// CHECK: %[[H:.+]] = elastic.embed
// CHECK: %[[LOGITS:.+]] = elastic.lm_head
// CHECK: %[[CE:.+]] = elastic.cross_entropy %[[LOGITS]]
// CHECK: %[[ONE:.+]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[DL:.+]] = elastic.cross_entropy_grad %[[LOGITS]], %{{.+}}, %[[ONE]]
// CHECK: %[[DX:.+]], %[[DHEAD:.+]] = elastic.lm_head_grad %{{.+}}, %{{.+}}, %[[DL]]
// CHECK: %[[DB:.+]] = elastic.depth_gate_grad %{{.+}}, %[[DX]]
// CHECK: %[[DXM:.+]], %[[DUP:.+]], %[[DDOWN:.+]], %[[DMASK1:.+]] = elastic.mlp_grad {{.*}}, %[[DB]] hidden(%[[MASK]]
// CHECK: %[[DH:.+]] = arith.addf %[[DX]], %[[DXM]]
// CHECK: %[[DTAB:.+]], %[[DMASK2:.+]] = elastic.embed_grad %{{.+}}, %{{.+}}, %[[DH]] hidden(%[[MASK]]
// CHECK: %[[DMASK:.+]] = arith.addf %[[DMASK1]], %[[DMASK2]] : tensor<9xf32>
// CHECK: %[[DPI:.+]] = elastic.prefix_mask_grad %{{.+}}, %[[DMASK]]
// CHECK: return %[[LOGITS]], %[[CE]], %[[DPI]], %[[DTAB]], %[[DUP]], %[[DDOWN]], %[[DHEAD]]
func.func @f(%tok: tensor<?x?xi32> {elastic.input = "tokens"},
             %tgt: tensor<?x?xi32> {elastic.input = "targets"},
             %pi: tensor<3xf32> {elastic.param = "routers.hidden"},
             %emb: tensor<29x7xf32> {elastic.param = "emb"},
             %up: tensor<11x7xf32> {elastic.param = "up"},
             %down: tensor<7x11xf32> {elastic.param = "down"},
             %head: tensor<29x7xf32> {elastic.param = "head"})
    -> (tensor<?x?x29xf32>, tensor<f32>) attributes {elastic.result_names = ["logits", "loss"]} {
  %m = elastic.prefix_mask %pi {choices = array<i64: 7, 5, 3>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> !elastic.mask<hidden, 7>
  %h = elastic.embed %tok, %emb hidden(%m : !elastic.mask<hidden, 7>)
      : (tensor<?x?xi32>, tensor<29x7xf32>) -> tensor<?x?x7xf32>
  %y = elastic.mlp %h, %up, %down hidden(%m : !elastic.mask<hidden, 7>)
      : (tensor<?x?x7xf32>, tensor<11x7xf32>, tensor<7x11xf32>) -> tensor<?x?x7xf32>
  %h1 = elastic.depth_gate %h, %y : tensor<?x?x7xf32>
  %l = elastic.lm_head %h1, %head : (tensor<?x?x7xf32>, tensor<29x7xf32>) -> tensor<?x?x29xf32>
  %ce = elastic.cross_entropy %l, %tgt : (tensor<?x?x29xf32>, tensor<?x?xi32>) -> tensor<f32>
  return %l, %ce : tensor<?x?x29xf32>, tensor<f32>
}

// -----

// A parameter with no path to the loss gets a zero gradient; the frozen teacher none.
// CHECK-LABEL: func.func @f_train_step
// CHECK: %[[Z:.+]] = arith.constant dense<0.000000e+00> : tensor<4xf32>
// CHECK: return %{{.+}}, %{{.+}}, %{{.+}}, %[[Z]]
func.func @f(%s: tensor<2x3x5xf32> {elastic.param = "student"},
             %t: tensor<2x3x5xf32> {elastic.input = "teacher_logits"},
             %unused: tensor<4xf32> {elastic.param = "unused"}) -> (tensor<2x3x5xf32>, tensor<f32>) {
  %kd = elastic.kl_distill %s, %t : (tensor<2x3x5xf32>, tensor<2x3x5xf32>) -> tensor<f32>
  return %s, %kd : tensor<2x3x5xf32>, tensor<f32>
}

// -----

// An op on the path without a gradient rule is named in the error.
func.func @f(%x: tensor<3xf32> {elastic.param = "x"}, %y: tensor<3xf32>) -> (tensor<3xf32>, tensor<f32>) {
  // expected-error @+1 {{'arith.subf' op is on the path from the parameters to the loss but has no gradient rule (GradientOpInterface)}}
  %d = arith.subf %x, %y : tensor<3xf32>
  %e = elastic.expected_size %d {choices = array<i64: 3, 2, 1>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> tensor<f32>
  return %d, %e : tensor<3xf32>, tensor<f32>
}

// -----

// expected-error @+1 {{elastic-autodiff: result #1 is not a scalar float tensor loss}}
func.func @f(%x: tensor<3xf32> {elastic.param = "x"}) -> (tensor<3xf32>, tensor<3xf32>) {
  return %x, %x : tensor<3xf32>, tensor<3xf32>
}
