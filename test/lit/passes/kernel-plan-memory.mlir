// RUN: nestor-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(func.func(kernel-plan-memory))' | FileCheck %s

// Buffers are reused once their value is dead: %a (40 bytes -> 64) dies at %b's op, so %c
// takes its place; %b lives until the return. Peak: two 64-byte buffers.
// CHECK-LABEL: func.func @reuse
// CHECK-SAME: kernel.arena_bytes = 128 : i64
// CHECK: kernel.add %arg0, %arg1 {kernel.offsets = array<i64: 0>}
// CHECK: kernel.add %{{.*}}, %arg1 {kernel.offsets = array<i64: 64>}
// CHECK: kernel.add %{{.*}}, %arg0 {kernel.offsets = array<i64: 0>}
func.func @reuse(%x: tensor<10xf32>, %y: tensor<10xf32>) -> (tensor<10xf32>, tensor<10xf32>) {
  %a = kernel.add %x, %y : tensor<10xf32>
  %b = kernel.add %a, %y : tensor<10xf32>
  %c = kernel.add %b, %x : tensor<10xf32>
  return %b, %c : tensor<10xf32>, tensor<10xf32>
}

// -----

// An op's operands stay allocated while it runs: its result never overlaps them.
// CHECK-LABEL: func.func @no_overlap
// CHECK: kernel.add %arg0, %arg0 {kernel.offsets = array<i64: 0>}
// CHECK: kernel.add %{{.*}}, %{{.*}} {kernel.offsets = array<i64: 4096>}
func.func @no_overlap(%x: tensor<1024xf32>) -> tensor<1024xf32> {
  %a = kernel.add %x, %x : tensor<1024xf32>
  %b = kernel.add %a, %a : tensor<1024xf32>
  return %b : tensor<1024xf32>
}

// -----

// Free blocks coalesce: after two neighbours die, a value as big as both fits at offset 0;
// the peak is the three 64-byte values live together.
// CHECK-LABEL: func.func @coalesce
// CHECK-SAME: kernel.arena_bytes = 192 : i64
// CHECK: kernel.add %arg0, %arg0 {kernel.offsets = array<i64: 0>}
// CHECK: kernel.add %arg0, %arg0 {kernel.offsets = array<i64: 64>}
// CHECK: kernel.add %{{.*}}, %{{.*}} {kernel.offsets = array<i64: 128>}
// CHECK: kernel.mul %{{.*}}, %{{.*}} {kernel.offsets = array<i64: 0>} : tensor<32xf32>
func.func @coalesce(%x: tensor<16xf32>, %z: tensor<32xf32>) -> tensor<32xf32> {
  %a = kernel.add %x, %x : tensor<16xf32>
  %b = kernel.add %x, %x : tensor<16xf32>
  %c = kernel.add %a, %b : tensor<16xf32>
  %d = kernel.mul %z, %z : tensor<32xf32>
  return %d : tensor<32xf32>
}

// -----

func.func @dynamic(%x: tensor<?xf32>) -> tensor<?xf32> {
  // expected-error @+1 {{kernel-plan-memory needs statically shaped tensors}}
  %a = kernel.add %x, %x : tensor<?xf32>
  return %a : tensor<?xf32>
}
