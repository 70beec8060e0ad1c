// Model weights and router weights are counted apart; run-time inputs are not parameters.
func.func @model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                 %emb: tensor<16x64xf32> {elastic.param = "backbone.embeddings.weight"},
                 %norm: tensor<64xf32> {elastic.param = "backbone.norm_f.weight"},
                 %w1: tensor<16x3xf32> {elastic.param = "routers.hidden_size.fc1.weight"},
                 %w2: tensor<3xf32> {elastic.param = "routers.hidden_size.fc2.bias"}) {
  return
}
