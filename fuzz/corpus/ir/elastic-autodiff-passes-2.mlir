// An op on the path without a gradient rule is named in the error.
func.func @f(%x: tensor<3xf32> {elastic.param = "x"}, %y: tensor<3xf32>) -> (tensor<3xf32>, tensor<f32>) {
  %d = arith.subf %x, %y : tensor<3xf32>
  %e = elastic.expected_size %d {choices = array<i64: 3, 2, 1>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> tensor<f32>
  return %d, %e : tensor<3xf32>, tensor<f32>
}
