func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>, %dy: tensor<?x?x32xf32>) {
  %d:2 = elastic.rmsnorm_grad %x, %w, %dy : (tensor<?x?x64xf32>, tensor<64xf32>, tensor<?x?x32xf32>) -> (tensor<?x?x64xf32>, tensor<64xf32>)
  return
}
