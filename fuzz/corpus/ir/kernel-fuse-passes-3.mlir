// Chains of single-use adds become one n-ary add (one pass over memory).
func.func @add_chain(%a: tensor<10xf32>, %b: tensor<10xf32>, %c: tensor<10xf32>, %d: tensor<10xf32>) -> tensor<10xf32> {
  %0 = kernel.add %a, %b : tensor<10xf32>
  %1 = kernel.add %0, %c : tensor<10xf32>
  %2 = kernel.add %1, %d : tensor<10xf32>
  return %2 : tensor<10xf32>
}
