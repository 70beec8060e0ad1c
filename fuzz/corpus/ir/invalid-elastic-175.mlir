func.func @t(%p: tensor<2xf32>) {
  %k = elastic.layer_keep %p {order = array<i64: 0, 1>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> tensor<?xf32>
  return
}
