func.func @t(%s: tensor<?x?x256xf32>, %t: tensor<?x?x256xf64>) {
  %k = elastic.kl_distill %s, %t : (tensor<?x?x256xf32>, tensor<?x?x256xf64>) -> tensor<f32>
  return
}
