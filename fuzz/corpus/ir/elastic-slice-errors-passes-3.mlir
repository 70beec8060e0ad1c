// Only the tokens survive: a logits path through another run-time input is refused.
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %x: tensor<?x?x8xf32> {elastic.input = "teacher_hidden"},
                         %head: tensor<16x8xf32> {elastic.param = "lm_head.weight"})
    -> tensor<?x?x16xf32> attributes {elastic.budgets = ["full", "small"]} {
  %logits = elastic.lm_head %x, %head : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}
