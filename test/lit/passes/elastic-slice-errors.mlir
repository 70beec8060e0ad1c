// RUN: nestor-opt %s -split-input-file -verify-diagnostics --elastic-slice=budget=small

// expected-error @+1 {{unknown budget 'small'; the budgets are: full, half}}
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"})
    -> tensor<?x?x8xf32> attributes {elastic.budgets = ["full", "half"]} {
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  return %h : tensor<?x?x8xf32>
}

// -----

// The routers must be evaluated, so their weights must be constants.
// expected-error @+1 {{router weight 'routers.hidden_size.fc1.weight' is an argument of @elastic_model: elastic-slice evaluates the routers, so their trained weights must be constants}}
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %one: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %w1: tensor<2x2xf32> {elastic.param = "routers.hidden_size.fc1.weight"})
    -> tensor<?x?x8xf32> attributes {elastic.budgets = ["full", "small"]} {
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %w1, %zero, %w1, %zero : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %pi = elastic.gumbel_softmax %z, %zero, %one, %one, %hard : (tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2xf32>
  %mh = elastic.prefix_mask %pi {choices = array<i64: 8, 4>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 8>
  %h = elastic.embed %tokens, %emb hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  return %h : tensor<?x?x8xf32>
}

// -----

// An op without a slicing rule cannot be part of the dense model.
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"})
    -> tensor<?x?x8xf32> attributes {elastic.budgets = ["full", "small"]} {
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  // expected-error @+1 {{'arith.addf' op has no slicing rule (SliceOpInterface), but the dense model needs its result}}
  %twice = arith.addf %h, %h : tensor<?x?x8xf32>
  return %twice : tensor<?x?x8xf32>
}

// -----

// Only the tokens survive: a logits path through another run-time input is refused.
// expected-error @+1 {{the dense model would need the run-time input 'teacher_hidden' (argument 1); only 'tokens' survives slicing}}
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %x: tensor<?x?x8xf32> {elastic.input = "teacher_hidden"},
                         %head: tensor<16x8xf32> {elastic.param = "lm_head.weight"})
    -> tensor<?x?x16xf32> attributes {elastic.budgets = ["full", "small"]} {
  %logits = elastic.lm_head %x, %head : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}

// -----

// A mask must come from the routers: a mask argument has no value at deployment.
// expected-error @+1 {{a mask argument has no value at deployment}}
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %wq: tensor<8x8xf32> {elastic.param = "q"}, %wk: tensor<4x8xf32> {elastic.param = "k"},
                         %wv: tensor<4x8xf32> {elastic.param = "v"}, %wo: tensor<8x8xf32> {elastic.param = "o"},
                         %ma: !elastic.mask<attn_heads, 4, groups = 2>)
    -> tensor<?x?x8xf32> attributes {elastic.budgets = ["full", "small"]} {
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %y = elastic.attention %h, %wq, %wk, %wv, %wo heads(%ma : !elastic.mask<attn_heads, 4, groups = 2>) {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 2 : i64} : (tensor<?x?x8xf32>, tensor<8x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}
