func.func @t(%p: tensor<f32>, %b: tensor<i32>) {
  %l = elastic.resource_loss %p, %b {fractions = array<f64: 1.0, 0.5>, full_params = 0.0 : f64} : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}
