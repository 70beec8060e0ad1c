func.func @t(%p: tensor<4x2xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>, row = 4 : i64} : tensor<4x2xf32> -> !elastic.mask<ffn, 64>
  return
}
