func.func @t(%p: tensor<2xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 0>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 64>
  return
}
