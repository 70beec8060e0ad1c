func.func @t(%z: tensor<f32>, %g: tensor<f32>, %tau: tensor<f32>, %s: tensor<f32>, %h: tensor<i1>) {
  %p = elastic.gumbel_softmax %z, %g, %tau, %s, %h : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<f32>
  return
}
