// An inner add with another use stays.
func.func @add_shared(%a: tensor<10xf32>, %b: tensor<10xf32>, %c: tensor<10xf32>) -> (tensor<10xf32>, tensor<10xf32>) {
  %0 = kernel.add %a, %b : tensor<10xf32>
  %1 = kernel.add %0, %c : tensor<10xf32>
  return %0, %1 : tensor<10xf32>, tensor<10xf32>
}
