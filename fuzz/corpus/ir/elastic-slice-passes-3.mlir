// Heterogeneous choices: one router row per MLP layer. At "small" the first layer keeps its
// full 12 neurons and the second only 6 (rows of W2: (layer, choice)).
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
