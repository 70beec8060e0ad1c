func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>) {
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x32xf32>
  return
}
