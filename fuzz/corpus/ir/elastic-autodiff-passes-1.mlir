// A parameter with no path to the loss gets a zero gradient; the frozen teacher none.
func.func @f(%s: tensor<2x3x5xf32> {elastic.param = "student"},
             %t: tensor<2x3x5xf32> {elastic.input = "teacher_logits"},
             %unused: tensor<4xf32> {elastic.param = "unused"}) -> (tensor<2x3x5xf32>, tensor<f32>) {
  %kd = elastic.kl_distill %s, %t : (tensor<2x3x5xf32>, tensor<2x3x5xf32>) -> tensor<f32>
  return %s, %kd : tensor<2x3x5xf32>, tensor<f32>
}
