func.func @t(%p: tensor<3xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<hard>} : tensor<3xf32> -> !elastic.mask<hidden, 64>
  return
}
