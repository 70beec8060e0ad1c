func.func @t(%p: tensor<?xf32>) {
  %k = elastic.layer_keep %p {order = array<i64: 0, 1>, mode = #elastic.mask_mode<soft>} : tensor<?xf32> -> tensor<2xf32>
  return
}
