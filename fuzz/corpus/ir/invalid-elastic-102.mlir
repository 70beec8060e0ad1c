func.func @t(%s: tensor<?x?x256xf32>, %t: tensor<?x?x128xf32>) {
  %k = elastic.kl_distill %s, %t : (tensor<?x?x256xf32>, tensor<?x?x128xf32>) -> tensor<f32>
  return
}
