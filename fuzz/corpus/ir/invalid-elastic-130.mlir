func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>, %dy: tensor<?x?x64xf32>) {
  %d:3 = elastic.mlp_grad %x, %up, %down, %dy : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x32xf32>, tensor<128x64xf32>, tensor<64x128xf32>)
  return
}
