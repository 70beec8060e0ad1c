// RUN: nestor-opt %s -split-input-file -verify-diagnostics --elastic-slice=budget=small \
// RUN:   | FileCheck %s
// RUN: nestor-opt %s -split-input-file -verify-diagnostics --elastic-slice=budget=full \
// RUN:   | FileCheck %s --check-prefix=FULL

// Every router here is `z = I leaky(I u + 0) + 0` = one_hot(budget): budget "full" (0) picks
// each axis' first choice and drops no layer, "small" (1) its second and drops one layer.

// Hidden and FFN prefixes, and depth: the least important layer (0, first in `order`) is
// dropped with its weights, the kept layer 1 is renumbered 0, and no router, Gumbel, mask or
// keep op survives.
// CHECK-LABEL: func.func @elastic_model(
// CHECK-SAME: %[[TOK:.*]]: tensor<?x?xi32> {elastic.input = "tokens"}
// CHECK-SAME: %[[EMB:.*]]: tensor<16x4xf32> {elastic.param = "backbone.embeddings.weight", elastic.slice = [array<i64: 0, 16>, array<i64: 0, 4>], elastic.slice_of = "backbone.embeddings.weight"}
// CHECK-SAME: %[[N0:.*]]: tensor<4xf32> {elastic.param = "backbone.layers.0.norm.weight", elastic.slice = [array<i64: 0, 4>], elastic.slice_of = "backbone.layers.1.norm.weight"}
// CHECK-SAME: %[[UP:.*]]: tensor<6x4xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight", elastic.slice = [array<i64: 0, 6>, array<i64: 0, 4>], elastic.slice_of = "backbone.layers.1.mixer.up_proj.weight"}
// CHECK-SAME: %[[DOWN:.*]]: tensor<4x6xf32> {elastic.param = "backbone.layers.0.mixer.down_proj.weight", elastic.slice = [array<i64: 0, 4>, array<i64: 0, 6>], elastic.slice_of = "backbone.layers.1.mixer.down_proj.weight"}
// CHECK-SAME: %[[NF:.*]]: tensor<4xf32> {elastic.param = "backbone.norm_f.weight"
// CHECK-SAME: %[[HEAD:.*]]: tensor<16x4xf32> {elastic.param = "lm_head.weight"
// CHECK-SAME: -> tensor<?x?x16xf32> attributes {elastic.budget = "small", elastic.result_names = ["logits"]}
// CHECK-NEXT: %[[H0:.*]] = elastic.embed %[[TOK]], %[[EMB]] : (tensor<?x?xi32>, tensor<16x4xf32>) -> tensor<?x?x4xf32>
// CHECK-NEXT: %[[X1:.*]] = elastic.rmsnorm %[[H0]], %[[N0]] {epsilon = {{.*}} : f64} : (tensor<?x?x4xf32>, tensor<4xf32>) -> tensor<?x?x4xf32>
// CHECK-NEXT: %[[Y1:.*]] = elastic.mlp %[[X1]], %[[UP]], %[[DOWN]] : (tensor<?x?x4xf32>, tensor<6x4xf32>, tensor<4x6xf32>) -> tensor<?x?x4xf32>
// CHECK-NEXT: %[[H2:.*]] = elastic.depth_gate %[[H0]], %[[Y1]] : tensor<?x?x4xf32>
// CHECK-NEXT: %[[XF:.*]] = elastic.rmsnorm %[[H2]], %[[NF]]
// CHECK-NEXT: %[[L:.*]] = elastic.lm_head %[[XF]], %[[HEAD]] : (tensor<?x?x4xf32>, tensor<16x4xf32>) -> tensor<?x?x16xf32>
// CHECK-NEXT: return %[[L]] : tensor<?x?x16xf32>
// CHECK-NOT: elastic.router
// At the full budget the slice is the whole parent: every index, both layers.
// FULL-LABEL: func.func @elastic_model(
// FULL-SAME: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight", elastic.slice = [array<i64: 0, 16>, array<i64: 0, 8>]
// FULL-SAME: {elastic.param = "backbone.layers.0.norm.weight", elastic.slice = [array<i64: 0, 8>], elastic.slice_of = "backbone.layers.0.norm.weight"}
// FULL-SAME: tensor<12x8xf32> {elastic.param = "backbone.layers.1.mixer.up_proj.weight"
// FULL-SAME: attributes {elastic.budget = "full"
// FULL-COUNT-2: elastic.depth_gate
// FULL-NOT: elastic.prefix_mask
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %targets: tensor<?x?xi32> {elastic.input = "targets"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %tau: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %seed: tensor<i64> {elastic.input = "seed"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %n0: tensor<8xf32> {elastic.param = "backbone.layers.0.norm.weight"},
                         %up0: tensor<12x8xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight"},
                         %down0: tensor<8x12xf32> {elastic.param = "backbone.layers.0.mixer.down_proj.weight"},
                         %n1: tensor<8xf32> {elastic.param = "backbone.layers.1.norm.weight"},
                         %up1: tensor<12x8xf32> {elastic.param = "backbone.layers.1.mixer.up_proj.weight"},
                         %down1: tensor<8x12xf32> {elastic.param = "backbone.layers.1.mixer.down_proj.weight"},
                         %nf: tensor<8xf32> {elastic.param = "backbone.norm_f.weight"},
                         %head: tensor<16x8xf32> {elastic.param = "lm_head.weight"})
    -> (tensor<?x?x16xf32>, tensor<f32>)
    attributes {elastic.budgets = ["full", "small"], elastic.result_names = ["logits", "loss"]} {
  %eye = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %eye, %zero, %eye, %zero : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %g = elastic.gumbel_noise %seed {stream = 0 : i64} : tensor<i64> -> tensor<2xf32>
  %pi = elastic.gumbel_softmax %z, %g, %tau, %tau, %hard : (tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2xf32>
  %mh = elastic.prefix_mask %pi {choices = array<i64: 8, 4>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 8>
  %mf = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> !elastic.mask<ffn, 12>
  %keep = elastic.layer_keep %pi {order = array<i64: 0, 1>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> tensor<2xf32>
  %h0 = elastic.embed %tokens, %emb hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %x0 = elastic.rmsnorm %h0, %n0 hidden(%mh : !elastic.mask<hidden, 8>) {epsilon = 1.0e-6 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %y0 = elastic.mlp %x0, %up0, %down0 ffn(%mf : !elastic.mask<ffn, 12>) hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h1 = elastic.depth_gate %h0, %y0 keep(%keep : tensor<2xf32>) {layer = 0 : i64} : tensor<?x?x8xf32>
  %x1 = elastic.rmsnorm %h1, %n1 hidden(%mh : !elastic.mask<hidden, 8>) {epsilon = 1.0e-6 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %y1 = elastic.mlp %x1, %up1, %down1 ffn(%mf : !elastic.mask<ffn, 12>) hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h2 = elastic.depth_gate %h1, %y1 keep(%keep : tensor<2xf32>) {layer = 1 : i64} : tensor<?x?x8xf32>
  %xf = elastic.rmsnorm %h2, %nf hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %logits = elastic.lm_head %xf, %head : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %ce = elastic.cross_entropy %logits, %targets : (tensor<?x?x16xf32>, tensor<?x?xi32>) -> tensor<f32>
  return %logits, %ce : tensor<?x?x16xf32>, tensor<f32>
}

// -----

// Attention: the heads mask keeps a prefix of every KV group (heads 0 and 2 of 4, 2 groups),
// so q_proj and o_proj keep those heads' rows and columns; K and V stay whole. Tied
// embeddings are sliced once and shared.
// CHECK-LABEL: func.func @elastic_model(
// CHECK-SAME: %[[EMB:[^:]*]]: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"
// CHECK-SAME: %[[Q:[^:]*]]: tensor<4x8xf32> {elastic.param = "backbone.layers.0.mixer.q_proj.weight", elastic.slice = [array<i64: 0, 2, 4, 6>, array<i64: 0, 8>]
// CHECK-SAME: %[[K:[^:]*]]: tensor<4x8xf32> {elastic.param = "backbone.layers.0.mixer.k_proj.weight", elastic.slice = [array<i64: 0, 4>, array<i64: 0, 8>]
// CHECK-SAME: %[[V:[^:]*]]: tensor<4x8xf32> {elastic.param = "backbone.layers.0.mixer.v_proj.weight"
// CHECK-SAME: %[[O:[^:]*]]: tensor<8x4xf32> {elastic.param = "backbone.layers.0.mixer.o_proj.weight", elastic.slice = [array<i64: 0, 8>, array<i64: 0, 2, 4, 6>]
// CHECK-SAME: -> tensor<?x?x16xf32>
// CHECK: elastic.attention %{{.*}}, %[[Q]], %[[K]], %[[V]], %[[O]] {head_dim = 2 : i64, num_heads = 2 : i64, num_kv_heads = 2 : i64}
// CHECK: elastic.lm_head %{{.*}}, %[[EMB]]
// FULL-LABEL: func.func @elastic_model(
// FULL: elastic.attention {{.*}} {head_dim = 2 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64}
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %one: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %wq: tensor<8x8xf32> {elastic.param = "backbone.layers.0.mixer.q_proj.weight"},
                         %wk: tensor<4x8xf32> {elastic.param = "backbone.layers.0.mixer.k_proj.weight"},
                         %wv: tensor<4x8xf32> {elastic.param = "backbone.layers.0.mixer.v_proj.weight"},
                         %wo: tensor<8x8xf32> {elastic.param = "backbone.layers.0.mixer.o_proj.weight"})
    -> tensor<?x?x16xf32> attributes {elastic.budgets = ["full", "small"]} {
  %eye = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %eye, %zero, %eye, %zero : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %pi = elastic.gumbel_softmax %z, %zero, %one, %one, %hard : (tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2xf32>
  %ma = elastic.prefix_mask %pi {choices = array<i64: 4, 2>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<attn_heads, 4, groups = 2>
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %y = elastic.attention %h, %wq, %wk, %wv, %wo heads(%ma : !elastic.mask<attn_heads, 4, groups = 2>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 2 : i64} : (tensor<?x?x8xf32>, tensor<8x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  %h1 = elastic.depth_gate %h, %y : tensor<?x?x8xf32>
  %logits = elastic.lm_head %h1, %emb : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}

// -----

// Mamba2: heads keep a prefix of each group (heads 0 and 2 of 4 in 2 groups), channels one
// prefix shared by every kept head (1 of 2). in_proj rows are [z (8), x (8), B (4), C (4),
// dt (4)] = [0, 8, 16, 20, 24, 28): z and x keep channel 0 of heads 0 and 2, B and C stay
// whole, dt keeps heads 0 and 2; the conv channels [x, B, C] alike; the per-head vectors keep
// heads 0 and 2.
// CHECK-LABEL: func.func @elastic_model(
// CHECK-SAME: tensor<14x8xf32> {elastic.param = "backbone.layers.0.mixer.in_proj.weight", elastic.slice = [array<i64: 0, 1, 4, 5, 8, 9, 12, 13, 16, 25, 26, 27>, array<i64: 0, 8>]
// CHECK-SAME: tensor<10x4xf32> {elastic.param = "backbone.layers.0.mixer.conv1d.weight", elastic.slice = [array<i64: 0, 1, 4, 5, 8, 16>, array<i64: 0, 4>]
// CHECK-SAME: tensor<10xf32> {elastic.param = "backbone.layers.0.mixer.conv1d.bias"
// CHECK-SAME: tensor<2xf32> {elastic.param = "backbone.layers.0.mixer.dt_bias", elastic.slice = [array<i64: 0, 1, 2, 3>]
// CHECK-SAME: tensor<2xf32> {elastic.param = "backbone.layers.0.mixer.A_log"
// CHECK-SAME: tensor<2xf32> {elastic.param = "backbone.layers.0.mixer.D"
// CHECK-SAME: tensor<2xf32> {elastic.param = "backbone.layers.0.mixer.norm.weight", elastic.slice = [array<i64: 0, 1, 4, 5>]
// CHECK-SAME: tensor<8x2xf32> {elastic.param = "backbone.layers.0.mixer.out_proj.weight", elastic.slice = [array<i64: 0, 8>, array<i64: 0, 1, 4, 5>]
// CHECK: elastic.mamba2 {{.*}} {head_dim = 1 : i64, n_groups = 2 : i64, num_heads = 2 : i64, state_size = 2 : i64}
// CHECK-NOT: heads(
// FULL-LABEL: func.func @elastic_model(
// FULL-SAME: tensor<28x8xf32> {elastic.param = "backbone.layers.0.mixer.in_proj.weight", elastic.slice = [array<i64: 0, 28>, array<i64: 0, 8>]
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %one: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %in: tensor<28x8xf32> {elastic.param = "backbone.layers.0.mixer.in_proj.weight"},
                         %cw: tensor<16x4xf32> {elastic.param = "backbone.layers.0.mixer.conv1d.weight"},
                         %cb: tensor<16xf32> {elastic.param = "backbone.layers.0.mixer.conv1d.bias"},
                         %dt: tensor<4xf32> {elastic.param = "backbone.layers.0.mixer.dt_bias"},
                         %al: tensor<4xf32> {elastic.param = "backbone.layers.0.mixer.A_log"},
                         %d: tensor<4xf32> {elastic.param = "backbone.layers.0.mixer.D"},
                         %nw: tensor<8xf32> {elastic.param = "backbone.layers.0.mixer.norm.weight"},
                         %out: tensor<8x8xf32> {elastic.param = "backbone.layers.0.mixer.out_proj.weight"},
                         %head: tensor<16x8xf32> {elastic.param = "lm_head.weight"})
    -> tensor<?x?x16xf32> attributes {elastic.budgets = ["full", "small"]} {
  %eye = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %eye, %zero, %eye, %zero : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %pi = elastic.gumbel_softmax %z, %zero, %one, %one, %hard : (tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2xf32>
  %mh = elastic.prefix_mask %pi {choices = array<i64: 4, 2>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<mamba_heads, 4, groups = 2>
  %mc = elastic.prefix_mask %pi {choices = array<i64: 2, 1>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<mamba_head_dim, 2>
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %y = elastic.mamba2 %h, %in, %cw, %cb, %dt, %al, %d, %nw, %out heads(%mh : !elastic.mask<mamba_heads, 4, groups = 2>) channels(%mc : !elastic.mask<mamba_head_dim, 2>) {num_heads = 4 : i64, head_dim = 2 : i64, n_groups = 2 : i64, state_size = 2 : i64} : (tensor<?x?x8xf32>, tensor<28x8xf32>, tensor<16x4xf32>, tensor<16xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  %h1 = elastic.depth_gate %h, %y : tensor<?x?x8xf32>
  %logits = elastic.lm_head %h1, %head : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}

// -----

// Heterogeneous choices: one router row per MLP layer. At "small" the first layer keeps its
// full 12 neurons and the second only 6 (rows of W2: (layer, choice)).
// CHECK-LABEL: func.func @elastic_model(
// CHECK-SAME: tensor<12x8xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight", elastic.slice = [array<i64: 0, 12>, array<i64: 0, 8>]
// CHECK-SAME: tensor<6x8xf32> {elastic.param = "backbone.layers.1.mixer.up_proj.weight", elastic.slice = [array<i64: 0, 6>, array<i64: 0, 8>]
// CHECK-SAME: tensor<8x6xf32> {elastic.param = "backbone.layers.1.mixer.down_proj.weight"
// FULL-LABEL: func.func @elastic_model(
// FULL-SAME: tensor<12x8xf32> {elastic.param = "backbone.layers.1.mixer.up_proj.weight"
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %one: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %up0: tensor<12x8xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight"},
                         %down0: tensor<8x12xf32> {elastic.param = "backbone.layers.0.mixer.down_proj.weight"},
                         %up1: tensor<12x8xf32> {elastic.param = "backbone.layers.1.mixer.up_proj.weight"},
                         %down1: tensor<8x12xf32> {elastic.param = "backbone.layers.1.mixer.down_proj.weight"})
    -> tensor<?x?x16xf32> attributes {elastic.budgets = ["full", "small"]} {
  %eye = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %w2 = arith.constant dense<[[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]> : tensor<4x2xf32>
  %b2 = arith.constant dense<0.0> : tensor<4xf32>
  %zero22 = arith.constant dense<0.0> : tensor<2x2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %eye, %zero, %w2, %b2 : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>) -> tensor<2x2xf32>
  %pi = elastic.gumbel_softmax %z, %zero22, %one, %one, %hard : (tensor<2x2xf32>, tensor<2x2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2x2xf32>
  %m0 = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<hard>, row = 0 : i64} : tensor<2x2xf32> -> !elastic.mask<ffn, 12>
  %m1 = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<hard>, row = 1 : i64} : tensor<2x2xf32> -> !elastic.mask<ffn, 12>
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %y0 = elastic.mlp %h, %up0, %down0 ffn(%m0 : !elastic.mask<ffn, 12>) : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h1 = elastic.depth_gate %h, %y0 : tensor<?x?x8xf32>
  %y1 = elastic.mlp %h1, %up1, %down1 ffn(%m1 : !elastic.mask<ffn, 12>) : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h2 = elastic.depth_gate %h1, %y1 : tensor<?x?x8xf32>
  %logits = elastic.lm_head %h2, %emb : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}
