// The named pipeline nestor-opt shares with `nestor compile --emit train-step`.

func.func @model(%s: tensor<2x3x5xf32> {elastic.param = "logits"},
                 %t: tensor<2x3x5xf32> {elastic.input = "teacher_logits"}) -> tensor<f32> {
  %kd = elastic.kl_distill %s, %t : (tensor<2x3x5xf32>, tensor<2x3x5xf32>) -> tensor<f32>
  return %kd : tensor<f32>
}
