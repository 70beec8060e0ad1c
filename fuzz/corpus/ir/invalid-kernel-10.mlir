func.func @host_results(%b: tensor<i32>) {
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
  ^bb0(%arg: tensor<i32>):
    kernel.yield
  }
  return
}
