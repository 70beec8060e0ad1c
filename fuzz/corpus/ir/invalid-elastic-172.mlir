// One mask value in two operands: each operand is checked for its own axis.
func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %m: !elastic.mask<ffn, 128>) {
  %y = elastic.mlp %x, %up, %down ffn(%m : !elastic.mask<ffn, 128>) hidden(%m : !elastic.mask<ffn, 128>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}
