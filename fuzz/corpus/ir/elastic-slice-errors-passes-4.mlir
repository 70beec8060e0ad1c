// A mask must come from the routers: a mask argument has no value at deployment.
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
