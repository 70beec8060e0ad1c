func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<32xf32>) {
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<32xf32>) -> tensor<?x?x64xf32>
  return
}
