// RUN: nestor-opt %s -split-input-file -verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(func.func(elastic-count-params))' | FileCheck %s

// Model weights and router weights are counted apart; run-time inputs are not parameters.
// CHECK-LABEL: func.func @model
// CHECK-SAME: elastic.num_params = 1088 : i64
// CHECK-SAME: elastic.num_router_params = 51 : i64
func.func @model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                 %emb: tensor<16x64xf32> {elastic.param = "backbone.embeddings.weight"},
                 %norm: tensor<64xf32> {elastic.param = "backbone.norm_f.weight"},
                 %w1: tensor<16x3xf32> {elastic.param = "routers.hidden_size.fc1.weight"},
                 %w2: tensor<3xf32> {elastic.param = "routers.hidden_size.fc2.bias"}) {
  return
}

// -----

// A function without parameters is left alone.
// CHECK-LABEL: func.func @helper
// CHECK-NOT: elastic.num_params
func.func @helper(%x: tensor<4xf32>) {
  return
}

// -----

// expected-error @+1 {{argument 0: weight 'w' must be a statically shaped tensor (the spec fixes its sizes), got 'tensor<?x4xf32>'}}
func.func @dynamic(%w: tensor<?x4xf32> {elastic.param = "w"}) {
  return
}
