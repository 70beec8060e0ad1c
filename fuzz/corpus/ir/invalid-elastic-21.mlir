// With both masks present the hidden mask is operand #4 (the ffn mask, correct, is #3).
func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %mf: !elastic.mask<ffn, 128>, %mh: !elastic.mask<ffn, 64>) {
  %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 128>) hidden(%mh : !elastic.mask<ffn, 64>) : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}
