func.func @host_arguments(%b: tensor<i32>) {
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
    %u = arith.constant dense<0.0> : tensor<3xf32>
    kernel.yield %u : tensor<3xf32>
  }
  return
}
