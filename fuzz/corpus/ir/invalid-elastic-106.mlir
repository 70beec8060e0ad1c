func.func @t(%p: tensor<2xf32>) {
  %e = elastic.expected_size %p {choices = array<i64: 32, 64>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<f32>
  return
}
