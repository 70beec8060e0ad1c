func.func @t(%l: tensor<2x5x256xf32>, %t: tensor<2x4xi32>) {
  %c = elastic.cross_entropy %l, %t : (tensor<2x5x256xf32>, tensor<2x4xi32>) -> tensor<f32>
  return
}
