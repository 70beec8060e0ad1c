func.func @adamw_hyper(%p: tensor<4xf32>, %g: tensor<4xf32>, %h: tensor<2xf64>) {
  kernel.adamw %p, %g, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64}
      : tensor<4xf32>, tensor<2xf64>
  return
}
