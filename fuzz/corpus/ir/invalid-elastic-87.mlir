func.func @t(%p: tensor<2xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64: 8, 5>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<mamba_heads, 8, groups = 2>
  return
}
