// A rank-0 probs operand is an error, not a crash.
func.func @t(%p: tensor<f32>, %dm: tensor<66xf32>) {
  %g = elastic.prefix_mask_grad %p, %dm {choices = array<i64: 64>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>} : (tensor<f32>, tensor<66xf32>) -> tensor<f32>
  return
}
