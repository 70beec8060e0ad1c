// The routers must be evaluated, so their weights must be constants.
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
