// Every verifier rule of the elastic dialect (ElasticOps.cpp, ElasticTypes.cpp, the backward
// ops' verifiers), one case each, plus the mask-consistency trait on each masked forward op and a
// few representative ODS-generated constraint errors. Two guards of the mask trait have no case
// because no op can reach them today: "takes a mask operand but does not declare what it masks"
// (ODS types admit masks only where getMaskUses declares them) and "mask operand #N masks no
// declared axis" (getMaskUses finds operands by position, so even one mask value passed as two
// operands is declared twice). They protect ops added later.
// RUN: nestor-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{mask size must be positive, got 0}}
func.func @t(%m: !elastic.mask<hidden, 0>) { return }

// -----

// expected-error @+1 {{mask group count must be positive, got 0}}
func.func @t(%m: !elastic.mask<attn_heads, 8, groups = 0>) { return }

// -----

// expected-error @+1 {{a ffn mask has no groups; only attn_heads and mamba_heads masks do}}
func.func @t(%m: !elastic.mask<ffn, 8, groups = 2>) { return }

// -----

// expected-error @+1 {{mask size 8 is not divisible by its 3 groups}}
func.func @t(%m: !elastic.mask<mamba_heads, 8, groups = 3>) { return }

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %m: !elastic.mask<hidden, 128>) {
  // expected-error @+1 {{operand #3 must be a ffn mask, got a hidden mask}}
  %y = elastic.mlp %x, %up, %down ffn(%m : !elastic.mask<hidden, 128>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %m: !elastic.mask<ffn, 96>) {
  // expected-error @+1 {{ffn mask has size 96 but the masked dimension has size 128}}
  %y = elastic.mlp %x, %up, %down ffn(%m : !elastic.mask<ffn, 96>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %m: !elastic.mask<hidden, 32>) {
  // expected-error @+1 {{hidden mask has size 32 but the masked dimension has size 64}}
  %y = elastic.mlp %x, %up, %down hidden(%m : !elastic.mask<hidden, 32>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>, %m: !elastic.mask<attn_heads, 4, groups = 4>) {
  // expected-error @+1 {{attn_heads mask has 4 groups but the op has 2}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo heads(%m : !elastic.mask<attn_heads, 4, groups = 4>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

// A mask type is also checked where it is written as an op's result type.
func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{a hidden mask has no groups; only attn_heads and mamba_heads masks do}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> !elastic.mask<hidden, 64, groups = 2>
  return
}

// -----

// expected-error @+1 {{mask size must be positive, got -4}}
func.func @t(%m: !elastic.mask<ffn, -4>) { return }

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>, %m: !elastic.mask<ffn, 64>) {
  // expected-error @+1 {{operand #2 must be a hidden mask, got a ffn mask}}
  %y = elastic.rmsnorm %x, %w hidden(%m : !elastic.mask<ffn, 64>) : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%t: tensor<?x?xi32>, %table: tensor<256x64xf32>, %m: !elastic.mask<hidden, 256>) {
  // expected-error @+1 {{hidden mask has size 256 but the masked dimension has size 64}}
  %h = elastic.embed %t, %table hidden(%m : !elastic.mask<hidden, 256>) : (tensor<?x?xi32>, tensor<256x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<mamba_head_dim, 16>) {
  // expected-error @+1 {{operand #9 must be a mamba_heads mask, got a mamba_head_dim mask}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj heads(%m : !elastic.mask<mamba_head_dim, 16>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<mamba_heads, 4, groups = 2>) {
  // expected-error @+1 {{mamba_heads mask has size 4 but the masked dimension has size 8}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj heads(%m : !elastic.mask<mamba_heads, 4, groups = 2>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<mamba_heads, 8, groups = 4>) {
  // expected-error @+1 {{mamba_heads mask has 4 groups but the op has 2}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj heads(%m : !elastic.mask<mamba_heads, 8, groups = 4>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<mamba_head_dim, 8>) {
  // expected-error @+1 {{mamba_head_dim mask has size 8 but the masked dimension has size 16}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj channels(%m : !elastic.mask<mamba_head_dim, 8>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<hidden, 16>) {
  // expected-error @+1 {{operand #9 must be a mamba_head_dim mask, got a hidden mask}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj channels(%m : !elastic.mask<hidden, 16>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<hidden, 128>) {
  // expected-error @+1 {{hidden mask has size 128 but the masked dimension has size 64}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj hidden(%m : !elastic.mask<hidden, 128>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>, %m: !elastic.mask<mamba_heads, 4, groups = 2>) {
  // expected-error @+1 {{operand #5 must be an attn_heads mask, got a mamba_heads mask}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo heads(%m : !elastic.mask<mamba_heads, 4, groups = 2>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>, %m: !elastic.mask<attn_heads, 8, groups = 2>) {
  // expected-error @+1 {{attn_heads mask has size 8 but the masked dimension has size 4}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo heads(%m : !elastic.mask<attn_heads, 8, groups = 2>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>, %m: !elastic.mask<ffn, 64>) {
  // expected-error @+1 {{operand #5 must be a hidden mask, got a ffn mask}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo hidden(%m : !elastic.mask<ffn, 64>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

// With both masks present the hidden mask is operand #4 (the ffn mask, correct, is #3).
func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %mf: !elastic.mask<ffn, 128>, %mh: !elastic.mask<ffn, 64>) {
  // expected-error @+1 {{operand #4 must be a hidden mask, got a ffn mask}}
  %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 128>) hidden(%mh : !elastic.mask<ffn, 64>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

// ODS-generated constraints, a few representative ones: operand rank, operand element type,
// result rank, attribute constraints, a missing attribute, AllTypesMatch (generic form).
func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64x64xf32>) {
  // expected-error @+1 {{operand #1 must be statically shaped 1D tensor of 32-bit float or 64-bit float values, but got 'tensor<64x64xf32>'}}
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>) {
  // expected-error @+1 {{operand #0 must be 3D tensor of 32-bit float or 64-bit float values, but got 'tensor<?x64xf32>'}}
  %y = elastic.mlp %x, %up, %down : (tensor<?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x64xf32>
  return
}

// -----

func.func @t(%t: tensor<?x?xi64>, %table: tensor<256x64xf32>) {
  // expected-error @+1 {{operand #0 must be 2D tensor of 32-bit signless integer values, but got 'tensor<?x?xi64>'}}
  %h = elastic.embed %t, %table : (tensor<?x?xi64>, tensor<256x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf16>, %w: tensor<64xf16>) {
  // expected-error @+1 {{operand #0 must be 3D tensor of 32-bit float or 64-bit float values, but got 'tensor<?x?x64xf16>'}}
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf16>, tensor<64xf16>) -> tensor<?x?x64xf16>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{result #0 must be 3D tensor of 32-bit float or 64-bit float values, but got 'tensor<?x256xf32>'}}
  %l = elastic.lm_head %x, %w : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x256xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{attribute 'head_dim' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = -16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %keep: tensor<4xf32>) {
  // expected-error @+1 {{attribute 'layer' failed to satisfy constraint: 64-bit signless integer attribute whose value is non-negative}}
  %y = elastic.depth_gate %h, %b keep(%keep : tensor<4xf32>) {layer = -1 : i64} : tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{requires attribute 'state_size'}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x32xf32>) {
  // expected-error @+1 {{failed to verify that all of {residual, block, result} have same type}}
  %y = "elastic.depth_gate"(%h, %b) <{operandSegmentSizes = array<i32: 1, 1, 0>}> : (tensor<?x?x64xf32>, tensor<?x?x32xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

// A mask value in a non-mask operand position is an ODS operand-type error.
func.func @t(%x: tensor<?x?x64xf32>, %m: !elastic.mask<hidden, 64>) {
  // expected-error @+1 {{operand #1 must be statically shaped 2D tensor of 32-bit float or 64-bit float values, but got '!elastic.mask<hidden, 64>'}}
  %y = "elastic.lm_head"(%x, %m) : (tensor<?x?x64xf32>, !elastic.mask<hidden, 64>) -> tensor<?x?x256xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>) {
  // expected-error @+1 {{expects the result type to equal the input type}}
  %y = elastic.mlp %x, %up, %down : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x96xf32>) {
  // expected-error @+1 {{expects down_proj of shape 64x128, got 64x96}}
  %y = elastic.mlp %x, %up, %down : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x96xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x32xf32>, %down: tensor<64x128xf32>) {
  // expected-error @+1 {{expects up_proj of shape 128x64, got 128x32}}
  %y = elastic.mlp %x, %up, %down : (tensor<?x?x64xf32>, tensor<128x32xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf64>, %down: tensor<64x128xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %y = elastic.mlp %x, %up, %down : (tensor<?x?x64xf32>, tensor<128x64xf64>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>) {
  // expected-error @+1 {{expects result of shape ?x?x64, got ?x?x32}}
  %h = elastic.embed %tok, %table : (tensor<?x?xi32>, tensor<256x64xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

func.func @t(%tok: tensor<2x5xi32>, %table: tensor<256x64xf32>) {
  // expected-error @+1 {{expects result of shape 2x5x64, got 3x5x64}}
  %h = elastic.embed %tok, %table : (tensor<2x5xi32>, tensor<256x64xf32>) -> tensor<3x5x64xf32>
  return
}

// -----

func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %h = elastic.embed %tok, %table : (tensor<?x?xi32>, tensor<256x64xf32>) -> tensor<?x?x64xf64>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{expects a positive epsilon}}
  %y = elastic.rmsnorm %x, %w {epsilon = 0.0 : f64} : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{expects the result type to equal the input type}}
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<32xf32>) {
  // expected-error @+1 {{expects weight of shape 64, got 32}}
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<32xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf64>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<64xf64>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{num_heads (8) must be divisible by n_groups (3)}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 3 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects a positive epsilon}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64, epsilon = -1.0 : f64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects the result type to equal the input type}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x0xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects a convolution kernel of at least 1}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x0xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<290x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects in_proj of shape 296x64, got 290x64}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<290x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<150x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects conv_weight of shape 160x4, got 150x4}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<150x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<150xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects conv_bias of shape 160, got 150}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<150xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<6xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects dt_bias of shape 8, got 6}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<6xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<6xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects a_log of shape 8, got 6}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<6xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<6xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects d_skip of shape 8, got 6}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<6xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<96xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{expects norm_weight of shape 128, got 96}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<96xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x96xf32>) {
  // expected-error @+1 {{expects out_proj of shape 64x128, got 64x96}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x96xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf64>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf64>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{attribute 'num_heads' failed to satisfy constraint}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj {num_heads = 0 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{num_heads (4) must be divisible by num_kv_heads (3)}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 3 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects the result type to equal the input type}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x32xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<48x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects q_proj of shape 64x64, got 48x64}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<48x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<16x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects k_proj of shape 32x64, got 16x64}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<16x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<16x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects v_proj of shape 32x64, got 16x64}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<16x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x48xf32>) {
  // expected-error @+1 {{expects o_proj of shape 64x64, got 64x48}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x48xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf64>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf64>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %k: tensor<4xf32>) {
  // expected-error @+1 {{expects `keep` and `layer` together (a gated layer) or neither}}
  %y = elastic.depth_gate %h, %b keep(%k : tensor<4xf32>) : tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects `keep` and `layer` together (a gated layer) or neither}}
  %y = elastic.depth_gate %h, %b {layer = 1 : i64} : tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %k: tensor<4xf32>) {
  // expected-error @+1 {{layer 4 is out of range for 4 keep gates}}
  %y = elastic.depth_gate %h, %b keep(%k : tensor<4xf32>) {layer = 4 : i64} : tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %k: tensor<4xf64>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %y = elastic.depth_gate %h, %b keep(%k : tensor<4xf64>) {layer = 1 : i64} : tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x32xf32>) {
  // expected-error @+1 {{expects weight of shape 256x64, got 256x32}}
  %y = elastic.lm_head %x, %w : (tensor<?x?x64xf32>, tensor<256x32xf32>) -> tensor<?x?x256xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{expects result of shape ?x?x256, got ?x?x128}}
  %y = elastic.lm_head %x, %w : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x?x128xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %y = elastic.lm_head %x, %w : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x?x256xf64>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  // expected-error @+1 {{expects a non-negative LeakyReLU slope}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 {negative_slope = -0.5 : f64} : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  // expected-error @+1 {{expects a result of one row of choices or one row per layer}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<1x2x3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  // expected-error @+1 {{expects a static result shape}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<?x3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x2xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  // expected-error @+1 {{expects w1 of shape 16x3, got 16x2}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x2xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<8xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  // expected-error @+1 {{expects b1 of shape 16, got 8}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<8xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  // expected-error @+1 {{expects w2 of shape 3x16, got 6x16}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<5xf32>) {
  // expected-error @+1 {{expects b2 of shape 6, got 5}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<5xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf64>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf64>) -> tensor<2x3xf32>
  return
}

// -----

func.func @t(%s: tensor<i64>) {
  // expected-error @+1 {{expects a static result shape}}
  %g = elastic.gumbel_noise %s {stream = 0 : i64} : tensor<i64> -> tensor<?xf32>
  return
}

// -----

func.func @t(%s: tensor<i64>) {
  // expected-error @+1 {{attribute 'stream' failed to satisfy constraint}}
  %g = elastic.gumbel_noise %s {stream = -1 : i64} : tensor<i64> -> tensor<3xf32>
  return
}

// -----

func.func @t(%z: tensor<f32>, %g: tensor<f32>, %tau: tensor<f32>, %s: tensor<f32>, %h: tensor<i1>) {
  // expected-error @+1 {{expects logits with at least one dimension}}
  %p = elastic.gumbel_softmax %z, %g, %tau, %s, %h : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<f32>
  return
}

// -----

func.func @t(%z: tensor<3xf32>, %g: tensor<4xf32>, %tau: tensor<f32>, %s: tensor<f32>, %h: tensor<i1>) {
  // expected-error @+1 {{expects logits, noise and result of one type}}
  %p = elastic.gumbel_softmax %z, %g, %tau, %s, %h : (tensor<3xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%z: tensor<3xf32>, %g: tensor<3xf32>, %tau: tensor<f64>, %s: tensor<f32>, %h: tensor<i1>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %p = elastic.gumbel_softmax %z, %g, %tau, %s, %h : (tensor<3xf32>, tensor<3xf32>, tensor<f64>, tensor<f32>, tensor<i1>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%p: tensor<0xf32>) {
  // expected-error @+1 {{expects at least one choice}}
  %m = elastic.prefix_mask %p {choices = array<i64>, mode = #elastic.mask_mode<hard>} : tensor<0xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{choice 1 is 0; choices must be positive}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 0>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{choices must be strictly descending (largest first), but 64 follows 48}}
  %m = elastic.prefix_mask %p {choices = array<i64: 48, 64>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{choice 5 is not a multiple of the 2 groups (heads are trimmed per group)}}
  %m = elastic.prefix_mask %p {choices = array<i64: 8, 5>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<mamba_heads, 8, groups = 2>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{first choice 48 must equal the mask size 64}}
  %m = elastic.prefix_mask %p {choices = array<i64: 48, 32>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<1x2x2xf32>) {
  // expected-error @+1 {{expects probabilities of one axis (rank 1) or one row per layer (rank 2)}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>} : tensor<1x2x2xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<3xf32>) {
  // expected-error @+1 {{expects 2 probabilities (one per choice), got 3}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>} : tensor<3xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<4x2xf32>) {
  // expected-error @+1 {{expects `row` to pick a layer's probabilities from a rank-2 input}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>} : tensor<4x2xf32> -> !elastic.mask<ffn, 64>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{has `row` but its probabilities have a single row}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>, row = 0 : i64} : tensor<2xf32> -> !elastic.mask<ffn, 64>
  return
}

// -----

func.func @t(%p: tensor<4x2xf32>) {
  // expected-error @+1 {{row 4 is out of range for 4 rows}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>, row = 4 : i64} : tensor<4x2xf32> -> !elastic.mask<ffn, 64>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{expects an order of 4 layers, got 3}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1, 2>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<4xf32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{expects `order` to be a permutation of the layers}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1, 1, 3>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<4xf32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{expects `order` to be a permutation of the layers}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1, 2, 7>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<4xf32>
  return
}

// -----

func.func @t(%p: tensor<5xf32>) {
  // expected-error @+1 {{expects between 1 and 4 depth choices (drop 0..K layers, K < layers), got 5}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1, 2, 3>, mode = #elastic.mask_mode<soft>} : tensor<5xf32> -> tensor<4xf32>
  return
}

// -----

func.func @t(%p: tensor<2xf64>) {
  // expected-error @+1 {{mixes element types 'f64' and 'f32'}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1, 2, 3>, mode = #elastic.mask_mode<soft>} : tensor<2xf64> -> tensor<4xf32>
  return
}

// -----

func.func @t(%l: tensor<2x5x256xf32>, %t: tensor<2x4xi32>) {
  // expected-error @+1 {{expects targets of shape 2x5, got 2x4}}
  %c = elastic.cross_entropy %l, %t : (tensor<2x5x256xf32>, tensor<2x4xi32>) -> tensor<f32>
  return
}

// -----

func.func @t(%l: tensor<2x5x256xf32>, %t: tensor<2x5xi32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %c = elastic.cross_entropy %l, %t : (tensor<2x5x256xf32>, tensor<2x5xi32>) -> tensor<f64>
  return
}

// -----

func.func @t(%s: tensor<?x?x256xf32>, %t: tensor<?x?x256xf32>) {
  // expected-error @+1 {{expects a positive temperature}}
  %k = elastic.kl_distill %s, %t {temperature = 0.0 : f64} : (tensor<?x?x256xf32>, tensor<?x?x256xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%s: tensor<?x?x256xf32>, %t: tensor<?x?x128xf32>) {
  // expected-error @+1 {{expects teacher logits of shape ?x?x256, got ?x?x128}}
  %k = elastic.kl_distill %s, %t : (tensor<?x?x256xf32>, tensor<?x?x128xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%s: tensor<?x?x256xf32>, %t: tensor<?x?x256xf64>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %k = elastic.kl_distill %s, %t : (tensor<?x?x256xf32>, tensor<?x?x256xf64>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<3xf32>) {
  // expected-error @+1 {{expects 2 probabilities (one per choice) in the last dimension}}
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<3xf32> -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<4x2xf32>) {
  // expected-error @+1 {{expects result of shape 4, got a scalar}}
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<4x2xf32> -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{choices must be strictly descending}}
  %e = elastic.expected_size %p {choices = array<i64: 32, 64>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<f64>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<0xf32>) {
  // expected-error @+1 {{expects a non-empty layer pattern}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<0xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<3xf32>) {
  // expected-error @+1 {{pattern character 'X' at 2 is none of 'M', '*', '-'}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-X", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<2xf32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<3xf32>) {
  // expected-error @+1 {{expects ffn (one per MLP layer) of shape 1, got 2}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<2xf32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<3xf32>) {
  // expected-error @+1 {{expects attn_heads (one per attention layer) of shape 1, got 2}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-*", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<3xf32>, %mamba_head_dim: tensor<f32>, %keep: tensor<3xf32>) {
  // expected-error @+1 {{expects mamba_heads (one per Mamba layer) of shape 2, got 3}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<1xf32>, %keep: tensor<3xf32>) {
  // expected-error @+1 {{expects mamba_head_dim (one per Mamba layer) of shape 2, got 1}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<1xf32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<2xf32>) {
  // expected-error @+1 {{expects keep (one per layer) of shape 3, got 2}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<2xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%hidden: tensor<f32>, %ffn: tensor<f64>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<3xf32>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f64>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects budget fractions starting with the full budget 1.0}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 0.9, 0.5>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects budget fractions starting with the full budget 1.0}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{budget fraction 0.000000e+00 is outside (0, 1]}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 1.0, 0.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects strictly descending budget fractions}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 1.0, 0.5, 0.7>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects a positive full parameter count}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 1.0, 0.5>, full_params = 0.0 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects a non-negative dead zone and anchor weight}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 1.0, 0.5>, full_params = 1.0e6 : f64, dead_zone = -0.1 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>, %a: tensor<3xf64>) {
  // expected-error @+1 {{mixes element types 'f32' and 'f64'}}
  %l = elastic.resource_loss %p, %b anchors(%a) {fractions = array<f64: 1.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>, tensor<3xf64>) -> tensor<f32>
  return
}

// -----

func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>, %dh: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects table_grad of type 'tensor<256x64xf32>', got 'tensor<256x32xf32>'}}
  %d = elastic.embed_grad %tok, %table, %dh : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>) -> (tensor<256x32xf32>)
  return
}

// -----

func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>, %dh: tensor<?x?x64xf32>, %m: !elastic.mask<hidden, 64>) {
  // expected-error @+1 {{expects hidden_mask_grad of type 'tensor<66xf32>', got 'tensor<64xf32>'}}
  %d:2 = elastic.embed_grad %tok, %table, %dh hidden(%m : !elastic.mask<hidden, 64>) : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>) -> (tensor<256x64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>, %dh: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects hidden_mask_grad exactly when its mask is given}}
  %d:2 = elastic.embed_grad %tok, %table, %dh : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>) -> (tensor<256x64xf32>, tensor<66xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>, %dy: tensor<?x?x32xf32>) {
  // expected-error @+1 {{expects result_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x32xf32>'}}
  %d:2 = elastic.rmsnorm_grad %x, %w, %dy : (tensor<?x?x64xf32>, tensor<64xf32>, tensor<?x?x32xf32>) -> (tensor<?x?x64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>, %dy: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects input_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x64xf64>'}}
  %d:2 = elastic.rmsnorm_grad %x, %w, %dy : (tensor<?x?x64xf32>, tensor<64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf64>, tensor<64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>, %dy: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects weight_grad of type 'tensor<64xf32>', got 'tensor<32xf32>'}}
  %d:2 = elastic.rmsnorm_grad %x, %w, %dy : (tensor<?x?x64xf32>, tensor<64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<32xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %dy: tensor<?x?x32xf32>) {
  // expected-error @+1 {{expects result_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x32xf32>'}}
  %d:3 = elastic.mlp_grad %x, %up, %down, %dy : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x32xf32>) -> (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %dy: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects input_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x32xf32>'}}
  %d:3 = elastic.mlp_grad %x, %up, %down, %dy : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x32xf32>, tensor<128x64xf32>, tensor<64x128xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %dy: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects up_proj_grad of type 'tensor<128x64xf32>', got 'tensor<64x64xf32>'}}
  %d:3 = elastic.mlp_grad %x, %up, %down, %dy : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64x128xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %dy: tensor<?x?x64xf32>) {
  // expected-error @+1 {{expects down_proj_grad of type 'tensor<64x128xf32>', got 'tensor<64x64xf32>'}}
  %d:3 = elastic.mlp_grad %x, %up, %down, %dy : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %dy: tensor<?x?x64xf32>, %m: !elastic.mask<ffn, 128>) {
  // expected-error @+1 {{expects ffn_mask_grad of type 'tensor<130xf32>', got 'tensor<128xf32>'}}
  %d:4 = elastic.mlp_grad %x, %up, %down, %dy ffn(%m : !elastic.mask<ffn, 128>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) ffn(tensor<128xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>, %dl: tensor<?x?x256xf32>) {
  // expected-error @+1 {{expects input_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x32xf32>'}}
  %d:2 = elastic.lm_head_grad %x, %w, %dl : (tensor<?x?x64xf32>, tensor<256x64xf32>, tensor<?x?x256xf32>) -> (tensor<?x?x32xf32>, tensor<256x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>, %dl: tensor<?x?x256xf32>) {
  // expected-error @+1 {{expects weight_grad of type 'tensor<256x64xf32>', got 'tensor<64x256xf32>'}}
  %d:2 = elastic.lm_head_grad %x, %w, %dl : (tensor<?x?x64xf32>, tensor<256x64xf32>, tensor<?x?x256xf32>) -> (tensor<?x?x64xf32>, tensor<64x256xf32>)
  return
}

// -----

func.func @t(%b: tensor<?x?x64xf32>, %k: tensor<3xf32>) {
  // expected-error @+1 {{expects `keep`, `layer` and the keep cotangent together or none}}
  %d:2 = elastic.depth_gate_grad %b, %b keep(%k : tensor<3xf32>) : tensor<?x?x64xf32>, tensor<3xf32>
  return
}

// -----

func.func @t(%b: tensor<?x?x64xf32>, %k: tensor<3xf32>) {
  // expected-error @+1 {{expects keep_grad of type 'tensor<3xf32>', got 'tensor<4xf32>'}}
  %d:2 = elastic.depth_gate_grad %b, %b keep(%k : tensor<3xf32>) {layer = 0 : i64} : tensor<?x?x64xf32>, tensor<4xf32>
  return
}

// -----

func.func @t(%l: tensor<?x?x256xf32>, %t: tensor<?x?xi32>, %d: tensor<f32>) {
  // expected-error @+1 {{expects logits_grad of type 'tensor<?x?x256xf32>', got 'tensor<?x?x128xf32>'}}
  %g = elastic.cross_entropy_grad %l, %t, %d : (tensor<?x?x256xf32>, tensor<?x?xi32>, tensor<f32>) -> tensor<?x?x128xf32>
  return
}

// -----

func.func @t(%l: tensor<?x?x256xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{expects a positive temperature}}
  %g = elastic.kl_distill_grad %l, %l, %d {temperature = 0.0 : f64} : (tensor<?x?x256xf32>, tensor<?x?x256xf32>, tensor<f32>) -> tensor<?x?x256xf32>
  return
}

// -----

func.func @t(%l: tensor<?x?x256xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{expects student_grad of type 'tensor<?x?x256xf32>', got 'tensor<?x?x256xf64>'}}
  %g = elastic.kl_distill_grad %l, %l, %d : (tensor<?x?x256xf32>, tensor<?x?x256xf32>, tensor<f32>) -> tensor<?x?x256xf64>
  return
}

// -----

func.func @t(%p: tensor<3xf32>, %dm: tensor<66xf32>) {
  // expected-error @+1 {{expects probs_grad of type 'tensor<3xf32>', got 'tensor<2xf32>'}}
  %g = elastic.prefix_mask_grad %p, %dm {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>} : (tensor<3xf32>, tensor<66xf32>) -> tensor<2xf32>
  return
}

// -----

func.func @t(%p: tensor<3xf32>, %dm: tensor<66xf32>) {
  // expected-error @+1 {{expects one probability per choice}}
  %g = elastic.prefix_mask_grad %p, %dm {choices = array<i64: 64, 48>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>} : (tensor<3xf32>, tensor<66xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>, %dm: tensor<66xf32>) {
  // expected-error @+1 {{expects the first choice to be the mask size}}
  %g = elastic.prefix_mask_grad %p, %dm {choices = array<i64: 48, 32>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>} : (tensor<2xf32>, tensor<66xf32>) -> tensor<2xf32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>, %dm: tensor<64xf32>) {
  // expected-error @+1 {{expects mask_grad of type 'tensor<66xf32>', got 'tensor<64xf32>'}}
  %g = elastic.prefix_mask_grad %p, %dm {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>} : (tensor<2xf32>, tensor<64xf32>) -> tensor<2xf32>
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<6xf32>) {
  // expected-error @+1 {{expects w1_grad of type 'tensor<16x3xf32>', got 'tensor<3x16xf32>'}}
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<6xf32>) -> (tensor<3x16xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>)
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<6xf32>) {
  // expected-error @+1 {{expects b1_grad of type 'tensor<16xf32>', got 'tensor<6xf32>'}}
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<6xf32>) -> (tensor<16x3xf32>, tensor<6xf32>, tensor<6x16xf32>, tensor<6xf32>)
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<6xf32>) {
  // expected-error @+1 {{expects w2_grad of type 'tensor<6x16xf32>', got 'tensor<16x6xf32>'}}
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<6xf32>) -> (tensor<16x3xf32>, tensor<16xf32>, tensor<16x6xf32>, tensor<6xf32>)
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<6xf32>) {
  // expected-error @+1 {{expects b2_grad of type 'tensor<6xf32>', got 'tensor<5xf32>'}}
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<6xf32>) -> (tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<5xf32>)
  return
}

// -----

func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<5xf32>) {
  // expected-error @+1 {{expects one result cotangent per router output}}
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<5xf32>) -> (tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>)
  return
}

// -----

func.func @t(%z: tensor<3xf32>, %t: tensor<f32>, %h: tensor<i1>, %dz: tensor<4xf32>) {
  // expected-error @+1 {{expects result_grad of type 'tensor<3xf32>', got 'tensor<4xf32>'}}
  %g = elastic.gumbel_softmax_grad %z, %z, %t, %t, %h, %dz : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>, tensor<4xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%z: tensor<3xf32>, %t: tensor<f32>, %h: tensor<i1>) {
  // expected-error @+1 {{expects logits_grad of type 'tensor<3xf32>', got 'tensor<3xf64>'}}
  %g = elastic.gumbel_softmax_grad %z, %z, %t, %t, %h, %z : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>, tensor<3xf32>) -> tensor<3xf64>
  return
}

// -----

func.func @t(%p: tensor<3xf32>, %d: tensor<5xf32>) {
  // expected-error @+1 {{expects one keep cotangent per layer}}
  %g = elastic.layer_keep_grad %p, %d {order = array<i64: 3, 1, 0, 2>, mode = #elastic.mask_mode<soft>} : (tensor<3xf32>, tensor<5xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%p: tensor<3xf32>, %d: tensor<4xf32>) {
  // expected-error @+1 {{expects probs_grad of type 'tensor<3xf32>', got 'tensor<4xf32>'}}
  %g = elastic.layer_keep_grad %p, %d {order = array<i64: 3, 1, 0, 2>, mode = #elastic.mask_mode<soft>} : (tensor<3xf32>, tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @t(%p: tensor<3xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{expects one probability per choice}}
  %g = elastic.expected_size_grad %p, %d {choices = array<i64: 8, 4>, mode = #elastic.mask_mode<soft>} : (tensor<3xf32>, tensor<f32>) -> tensor<3xf32>
  return
}

// -----

func.func @t(%p: tensor<2x3xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{expects a cotangent per row of probabilities}}
  %g = elastic.expected_size_grad %p, %d {choices = array<i64: 8, 6, 4>, mode = #elastic.mask_mode<soft>} : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @t(%p: tensor<3xf32>, %d: tensor<f32>) {
  // expected-error @+1 {{expects probs_grad of type 'tensor<3xf32>', got 'tensor<3xf64>'}}
  %g = elastic.expected_size_grad %p, %d {choices = array<i64: 8, 6, 4>, mode = #elastic.mask_mode<soft>} : (tensor<3xf32>, tensor<f32>) -> tensor<3xf64>
  return
}

// -----

func.func @t(%d: tensor<f32>, %k: tensor<3xf32>) {
  // expected-error @+1 {{expects each size's cotangent to have its type}}
  %p:6 = elastic.param_count_grad hidden(%d) ffn(%d) attn_heads(%d) mamba_heads(%d) mamba_head_dim(%d) keep(%k) grad(%d) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>, tensor<f32>) -> (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<2xf32>)
  return
}

// -----

func.func @t(%d: tensor<f32>, %b: tensor<i32>, %pi: tensor<3xf32>) {
  // expected-error @+1 {{expects one cotangent per anchor}}
  %q = elastic.resource_loss_grad %d, %b, %d anchors(%pi) {fractions = array<f64: 1.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%d: tensor<f32>, %b: tensor<i32>, %pi: tensor<3xf32>) {
  // expected-error @+1 {{expects anchor cotangent of type 'tensor<3xf32>', got 'tensor<2xf32>'}}
  %q:2 = elastic.resource_loss_grad %d, %b, %d anchors(%pi) {fractions = array<f64: 1.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>, tensor<f32>, tensor<3xf32>) -> (tensor<f32>, tensor<2xf32>)
  return
}

// -----

func.func @t(%d: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects params_grad of type 'tensor<f32>', got 'tensor<f64>'}}
  %q = elastic.resource_loss_grad %d, %b, %d {fractions = array<f64: 1.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>, tensor<f32>) -> tensor<f64>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects input_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x32xf32>'}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x32xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects q_proj_grad of type 'tensor<64x64xf32>', got 'tensor<32x64xf32>'}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects k_proj_grad of type 'tensor<32x64xf32>', got 'tensor<64x64xf32>'}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects v_proj_grad of type 'tensor<32x64xf32>', got 'tensor<64x64xf32>'}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{expects o_proj_grad of type 'tensor<64x64xf32>', got 'tensor<32x64xf32>'}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>, %m: !elastic.mask<attn_heads, 4, groups = 2>) {
  // expected-error @+1 {{expects heads_mask_grad exactly when its mask is given}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x heads(%m : !elastic.mask<attn_heads, 4, groups = 2>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>, %dy: tensor<?x?x32xf32>) {
  // expected-error @+1 {{expects result_grad of type 'tensor<?x?x64xf32>', got 'tensor<?x?x32xf32>'}}
  %a:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %dy {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x32xf32>) -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %v8: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %mc: !elastic.mask<mamba_head_dim, 16>) {
  // expected-error @+1 {{expects channels_mask_grad of type 'tensor<18xf32>', got 'tensor<16xf32>'}}
  %m:10 = elastic.mamba2_grad %x, %in_proj, %conv_w, %conv_b, %v8, %v8, %v8, %norm_w, %out_proj, %x channels(%mc : !elastic.mask<mamba_head_dim, 16>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) channels(tensor<16xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %v8: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %mm: !elastic.mask<mamba_heads, 8, groups = 2>) {
  // expected-error @+1 {{expects heads_mask_grad of type 'tensor<10xf32>', got 'tensor<8xf32>'}}
  %m:10 = elastic.mamba2_grad %x, %in_proj, %conv_w, %conv_b, %v8, %v8, %v8, %norm_w, %out_proj, %x heads(%mm : !elastic.mask<mamba_heads, 8, groups = 2>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) heads(tensor<8xf32>)
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %v8: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %mh: !elastic.mask<hidden, 64>) {
  // expected-error @+1 {{expects hidden_mask_grad of type 'tensor<66xf32>', got 'tensor<64xf32>'}}
  %m:10 = elastic.mamba2_grad %x, %in_proj, %conv_w, %conv_b, %v8, %v8, %v8, %norm_w, %out_proj, %x hidden(%mh : !elastic.mask<hidden, 64>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) hidden(tensor<64xf32>)
  return
}

// -----

// A rank-0 probs operand is an error, not a crash.
func.func @t(%p: tensor<f32>, %dm: tensor<66xf32>) {
  // expected-error @+1 {{expects one probability per choice}}
  %g = elastic.prefix_mask_grad %p, %dm {choices = array<i64: 64>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>} : (tensor<f32>, tensor<66xf32>) -> tensor<f32>
  return
}

// -----

// One mask value in two operands: each operand is checked for its own axis.
func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %m: !elastic.mask<ffn, 128>) {
  // expected-error @+1 {{operand #4 must be a hidden mask, got a ffn mask}}
  %y = elastic.mlp %x, %up, %down ffn(%m : !elastic.mask<ffn, 128>) hidden(%m : !elastic.mask<ffn, 128>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%p: tensor<?xf32>) {
  // expected-error @+1 {{expects probabilities of static shape}}
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>} : tensor<?xf32> -> !elastic.mask<hidden, 64>
  return
}

// -----

func.func @t(%p: tensor<?xf32>) {
  // expected-error @+1 {{operand #0 must be statically shaped 1D tensor of 32-bit float or 64-bit float values, but got 'tensor<?xf32>'}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1>, mode = #elastic.mask_mode<soft>} : tensor<?xf32> -> tensor<2xf32>
  return
}

// -----

func.func @t(%p: tensor<2xf32>) {
  // expected-error @+1 {{result #0 must be statically shaped 1D tensor of 32-bit float or 64-bit float values, but got 'tensor<?xf32>'}}
  %k = elastic.layer_keep %p {order = array<i64: 0, 1>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<?xf32>
  return
}

// -----

func.func @t(%p: tensor<?xf32>) {
  // expected-error @+1 {{expects probabilities of static shape}}
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<?xf32> -> tensor<f32>
  return
}

// -----

// A masked dimension unknown until run time is not checked against the mask.
func.func @t(%x: tensor<?x?x?xf32>, %w: tensor<64xf32>, %m: !elastic.mask<hidden, 64>) -> tensor<?x?x?xf32> {
  %y = elastic.rmsnorm %x, %w hidden(%m : !elastic.mask<hidden, 64>) : (tensor<?x?x?xf32>, tensor<64xf32>) -> tensor<?x?x?xf32>
  return %y : tensor<?x?x?xf32>
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{expects a positive epsilon}}
  %y = elastic.rmsnorm %x, %w {epsilon = 0x7FF8000000000000 : f64} : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%s: tensor<?x?x5xf32>) {
  // expected-error @+1 {{expects a positive temperature}}
  %k = elastic.kl_distill %s, %s {temperature = 0x7FF8000000000000 : f64} : (tensor<?x?x5xf32>, tensor<?x?x5xf32>) -> tensor<f32>
  return
}

// -----

func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  // expected-error @+1 {{expects a positive full parameter count}}
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 1.0>, full_params = 0x7FF8000000000000 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>) {
  // expected-error @+1 {{num_heads = 4611686018427387904 is larger than the supported maximum 16777216}}
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4611686018427387904 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64} : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %v8: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>) {
  // expected-error @+1 {{num_heads = 4611686018427387904 is larger than the supported maximum 16777216}}
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %v8, %v8, %v8, %norm_w, %out_proj {num_heads = 4611686018427387904 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}

// -----

// Weights have the spec's static sizes: a dynamic extent is a verifier error, so no pass
// (elastic-slice, convert-elastic-to-kernel) ever sees one.
// expected-error @+1 {{argument 1: weight 'backbone.layers.0.mixer.up_proj.weight' must be a statically shaped tensor (the spec fixes its sizes), got 'tensor<?x64xf32>'}}
func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<?x64xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight"}) {
  return
}

// -----

// expected-error @+1 {{argument 0: 'elastic.param' must name the weight (a non-empty string)}}
func.func @t(%w: tensor<4xf32> {elastic.param = 3 : i64}) {
  return
}

// -----

func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<?x64xf32>, %down: tensor<64x?xf32>) {
  // expected-error @+1 {{operand #1 must be statically shaped 2D tensor of 32-bit float or 64-bit float values, but got 'tensor<?x64xf32>'}}
  %y = elastic.mlp %x, %up, %down : (tensor<?x?x64xf32>, tensor<?x64xf32>, tensor<64x?xf32>) -> tensor<?x?x64xf32>
  return
}
