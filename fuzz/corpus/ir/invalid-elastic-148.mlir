func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<6xf32>) {
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<6xf32>) -> (tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<5xf32>)
  return
}
