func.func @t(%d: tensor<f32>, %b: tensor<i32>) {
  %q = elastic.resource_loss_grad %d, %b, %d {fractions = array<f64: 1.0>, full_params = 1.0e6 : f64} : (tensor<f32>, tensor<i32>, tensor<f32>) -> tensor<f64>
  return
}
