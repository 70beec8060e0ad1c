func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 0.9, 0.5>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}
