func.func @t(%p: tensor<3xf32>, %d: tensor<f32>) {
  %g = elastic.expected_size_grad %p, %d {choices = array<i64: 8, 6, 4>, mode = #elastic.mask_mode<soft>} : (tensor<3xf32>, tensor<f32>) -> tensor<3xf64>
  return
}
