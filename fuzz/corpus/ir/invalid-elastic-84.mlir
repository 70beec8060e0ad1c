func.func @t(%p: tensor<0xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64>, mode = #elastic.mask_mode<hard>} : tensor<0xf32> -> !elastic.mask<hidden, 64>
  return
}
