func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>) {
  %y = elastic.rmsnorm %x, %w {epsilon = 0x7FF8000000000000 : f64} : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  return
}
