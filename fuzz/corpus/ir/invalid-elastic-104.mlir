func.func @t(%p: tensor<3xf32>) {
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<3xf32> -> tensor<f32>
  return
}
