func.func @t(%z: tensor<3xf32>, %g: tensor<3xf32>, %tau: tensor<f64>, %s: tensor<f32>, %h: tensor<i1>) {
  %p = elastic.gumbel_softmax %z, %g, %tau, %s, %h : (tensor<3xf32>, tensor<3xf32>, tensor<f64>, tensor<f32>, tensor<i1>) -> tensor<3xf32>
  return
}
