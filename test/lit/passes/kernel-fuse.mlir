// RUN: nestor-opt %s -split-input-file --pass-pipeline='builtin.module(func.func(kernel-fuse))' | FileCheck %s

// A channel mask after a GEMM whose raw result has no other use becomes the GEMM's epilogue.
// CHECK-LABEL: func.func @mask_epilogue
// CHECK: %[[Y:.+]] = kernel.gemm %arg0, %arg1 mask(%arg2 : tensor<14xf32>) {transpose_b}
// CHECK-NOT: kernel.mask
// CHECK: return %[[Y]]
func.func @mask_epilogue(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<14xf32>) -> tensor<2x5x12xf32> {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x12xf32>
  %z = kernel.mask %y, %m : tensor<2x5x12xf32>, tensor<14xf32>
  return %z : tensor<2x5x12xf32>
}

// -----

// ... but not when the raw result is needed too (e.g. by the mask's backward).
// CHECK-LABEL: func.func @mask_kept_apart
// CHECK: %[[Y:.+]] = kernel.gemm %arg0, %arg1 {transpose_b}
// CHECK: kernel.mask %[[Y]], %arg2
// CHECK: kernel.mask_grad %[[Y]]
func.func @mask_kept_apart(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<14xf32>,
                           %dy: tensor<2x5x12xf32>) -> (tensor<2x5x12xf32>, tensor<14xf32>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x12xf32>
  %z = kernel.mask %y, %m : tensor<2x5x12xf32>, tensor<14xf32>
  %dx, %dm = kernel.mask_grad %y, %m, %dy : tensor<2x5x12xf32>, tensor<14xf32>
  return %z, %dm : tensor<2x5x12xf32>, tensor<14xf32>
}

// -----

// The input cotangent of attention: three single-use GEMMs summed become a chain of GEMMs
// accumulating into one buffer; no add is left.
// CHECK-LABEL: func.func @accumulate
// CHECK: %[[G1:.+]] = kernel.gemm %arg2, %arg4 :
// CHECK: %[[G2:.+]] = kernel.gemm %arg1, %arg4 acc(%[[G1]] : tensor<2x5x8xf32>)
// CHECK: %[[G3:.+]] = kernel.gemm %arg0, %arg3 acc(%[[G2]] : tensor<2x5x8xf32>)
// CHECK-NOT: kernel.add
// CHECK: return %[[G3]]
func.func @accumulate(%dq: tensor<2x5x8xf32>, %dk: tensor<2x5x4xf32>, %dv: tensor<2x5x4xf32>,
                      %wq: tensor<8x8xf32>, %wkv: tensor<4x8xf32>) -> tensor<2x5x8xf32> {
  %a = kernel.gemm %dq, %wq : (tensor<2x5x8xf32>, tensor<8x8xf32>) -> tensor<2x5x8xf32>
  %b = kernel.gemm %dk, %wkv : (tensor<2x5x4xf32>, tensor<4x8xf32>) -> tensor<2x5x8xf32>
  %c = kernel.gemm %dv, %wkv : (tensor<2x5x4xf32>, tensor<4x8xf32>) -> tensor<2x5x8xf32>
  %s = kernel.add %a, %b, %c : tensor<2x5x8xf32>
  return %s : tensor<2x5x8xf32>
}

// -----

// Chains of single-use adds become one n-ary add (one pass over memory).
// CHECK-LABEL: func.func @add_chain
// CHECK: %[[S:.+]] = kernel.add %arg0, %arg1, %arg2, %arg3 : tensor<10xf32>
// CHECK-NEXT: return %[[S]]
func.func @add_chain(%a: tensor<10xf32>, %b: tensor<10xf32>, %c: tensor<10xf32>, %d: tensor<10xf32>) -> tensor<10xf32> {
  %0 = kernel.add %a, %b : tensor<10xf32>
  %1 = kernel.add %0, %c : tensor<10xf32>
  %2 = kernel.add %1, %d : tensor<10xf32>
  return %2 : tensor<10xf32>
}

// -----

// An inner add with another use stays.
// CHECK-LABEL: func.func @add_shared
// CHECK: %[[A:.+]] = kernel.add %arg0, %arg1
// CHECK: kernel.add %[[A]], %arg2
func.func @add_shared(%a: tensor<10xf32>, %b: tensor<10xf32>, %c: tensor<10xf32>) -> (tensor<10xf32>, tensor<10xf32>) {
  %0 = kernel.add %a, %b : tensor<10xf32>
  %1 = kernel.add %0, %c : tensor<10xf32>
  return %0, %1 : tensor<10xf32>, tensor<10xf32>
}

// -----

// Neighbouring host steps merge into one; a value passed from the first to the second stays
// inside the merged region.
// CHECK-LABEL: func.func @host_steps
// CHECK: %[[H:.+]]:2 = kernel.host %arg0, %arg1, %arg2 : tensor<i32>, tensor<f32>, tensor<i1> -> (tensor<3xf32>, tensor<3xf32>) {
// CHECK: ^bb0(%[[B:[^:]+]]: tensor<i32>
// CHECK: %[[U:.+]] = elastic.one_hot %[[B]]
// CHECK: %[[G:.+]] = elastic.gumbel_softmax %[[U]]
// CHECK: kernel.yield %[[U]], %[[G]]
// CHECK-NOT: kernel.host
// CHECK: return %[[H]]#1
func.func @host_steps(%b: tensor<i32>, %t: tensor<f32>, %h: tensor<i1>) -> tensor<3xf32> {
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
  ^bb0(%arg: tensor<i32>):
    %u = elastic.one_hot %arg : tensor<i32> -> tensor<3xf32>
    kernel.yield %u : tensor<3xf32>
  }
  %1 = kernel.host %0, %t, %h : tensor<3xf32>, tensor<f32>, tensor<i1> -> (tensor<3xf32>) {
  ^bb0(%z: tensor<3xf32>, %tau: tensor<f32>, %hard: tensor<i1>):
    %g = elastic.gumbel_softmax %z, %z, %tau, %tau, %hard
        : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<3xf32>
    kernel.yield %g : tensor<3xf32>
  }
  return %1 : tensor<3xf32>
}
