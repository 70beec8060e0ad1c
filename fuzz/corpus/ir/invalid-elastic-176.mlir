func.func @t(%p: tensor<?xf32>) {
  %e = elastic.expected_size %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<?xf32> -> tensor<f32>
  return
}
