func.func @t(%p: tensor<2xf32>) {
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<f64>
  return
}
