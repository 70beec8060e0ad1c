// An op without a slicing rule cannot be part of the dense model.
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"})
    -> tensor<?x?x8xf32> attributes {elastic.budgets = ["full", "small"]} {
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %twice = arith.addf %h, %h : tensor<?x?x8xf32>
  return %twice : tensor<?x?x8xf32>
}
