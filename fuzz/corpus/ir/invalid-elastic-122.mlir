func.func @t(%p: tensor<f32>, %b: tensor<i32>, %a: tensor<3xf64>) {
  %l = elastic.resource_loss %p, %b anchors(%a) {fractions = array<f64: 1.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>, tensor<3xf64>) -> tensor<f32>
  return
}
