func.func @t(%p: tensor<3xf32>, %d: tensor<4xf32>) {
  %g = elastic.layer_keep_grad %p, %d {order = array<i64: 3, 1, 0, 2>, mode = #elastic.mask_mode<soft>} : (tensor<3xf32>, tensor<4xf32>) -> tensor<4xf32>
  return
}
