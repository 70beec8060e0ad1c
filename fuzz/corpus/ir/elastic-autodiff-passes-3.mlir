func.func @f(%x: tensor<3xf32> {elastic.param = "x"}) -> (tensor<3xf32>, tensor<3xf32>) {
  return %x, %x : tensor<3xf32>, tensor<3xf32>
}
