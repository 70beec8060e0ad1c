func.func @add_arity(%x: tensor<4xf32>) {
  %y = kernel.add %x : tensor<4xf32>
  return
}
