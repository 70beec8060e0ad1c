// Attention: the heads mask keeps a prefix of every KV group (heads 0 and 2 of 4, 2 groups),
// so q_proj and o_proj keep those heads' rows and columns; K and V stay whole. Tied
// embeddings are sliced once and shared.
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
