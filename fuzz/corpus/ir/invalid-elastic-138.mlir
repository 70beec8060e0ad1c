func.func @t(%l: tensor<?x?x256xf32>, %t: tensor<?x?xi32>, %d: tensor<f32>) {
  %g = elastic.cross_entropy_grad %l, %t, %d : (tensor<?x?x256xf32>, tensor<?x?xi32>, tensor<f32>) -> tensor<?x?x128xf32>
  return
}
