// Neighbouring host steps merge into one; a value passed from the first to the second stays
// inside the merged region.
func.func @host_steps(%b: tensor<i32>, %t: tensor<f32>, %h: tensor<i1>) -> tensor<3xf32> {
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
  ^bb0(%arg: tensor<i32>):
    %u = elastic.one_hot %arg : tensor<i32> -> tensor<3xf32>
    kernel.yield %u : tensor<3xf32>
  }
  %1 = kernel.host %0, %t, %h : tensor<3xf32>, tensor<f32>, tensor<i1> -> (tensor<3xf32>) {
  ^bb0(%z: tensor<3xf32>, %tau: tensor<f32>, %hard: tensor<i1>):
    %g = elastic.gumbel_softmax %z, %z, %tau, %tau, %hard
        : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<3xf32>
    kernel.yield %g : tensor<3xf32>
  }
  return %1 : tensor<3xf32>
}
