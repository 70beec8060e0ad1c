func.func @t(%p: tensor<2xf64>) {
  %k = elastic.layer_keep %p {order = array<i64: 0, 1, 2, 3>, mode = #elastic.mask_mode<soft>} : tensor<2xf64> -> tensor<4xf32>
  return
}
