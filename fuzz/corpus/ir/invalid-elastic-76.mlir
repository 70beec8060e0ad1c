func.func @t(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>, %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) {
  %z = elastic.router %u, %w1, %b1, %w2, %b2 : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<3xf32>
  return
}
