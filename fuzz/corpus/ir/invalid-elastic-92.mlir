func.func @t(%p: tensor<2xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>, row = 0 : i64} : tensor<2xf32> -> !elastic.mask<ffn, 64>
  return
}
