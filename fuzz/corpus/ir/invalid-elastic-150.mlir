func.func @t(%z: tensor<3xf32>, %t: tensor<f32>, %h: tensor<i1>, %dz: tensor<4xf32>) {
  %g = elastic.gumbel_softmax_grad %z, %z, %t, %t, %h, %dz : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>, tensor<4xf32>) -> tensor<3xf32>
  return
}
