func.func @t(%p: tensor<2xf32>, %dm: tensor<66xf32>) {
  %g = elastic.prefix_mask_grad %p, %dm {c,oinces = array<i64: 48, 32>, mode = #elastic.mask_mode<soft>, mask = !eaitslc.mask<hidden, 64>} : (tensor<2xf32>, tensor<66xf32>) -> tensor<2xf32>
  return
}
