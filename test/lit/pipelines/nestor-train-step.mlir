// The named pipeline nestor-opt shares with `nestor compile --emit train-step`.
// RUN: nestor-opt %s --pass-pipeline='builtin.module(nestor-train-step{function=model loss-index=0})' | FileCheck %s

// CHECK-LABEL: func.func @model_train_step
// CHECK-SAME: -> (tensor<f32>, tensor<2x3x5xf32> {elastic.grad_of = "logits"})
// CHECK: %[[ONE:.+]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[G:.+]] = elastic.kl_distill_grad %{{.+}}, %{{.+}}, %[[ONE]]
// CHECK: return %{{.+}}, %[[G]]
func.func @model(%s: tensor<2x3x5xf32> {elastic.param = "logits"},
                 %t: tensor<2x3x5xf32> {elastic.input = "teacher_logits"}) -> tensor<f32> {
  %kd = elastic.kl_distill %s, %t : (tensor<2x3x5xf32>, tensor<2x3x5xf32>) -> tensor<f32>
  return %kd : tensor<f32>
}
