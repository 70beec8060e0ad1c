func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf64>) {
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<64xf64>) -> tensor<?x?x64xf32>
  return
}
