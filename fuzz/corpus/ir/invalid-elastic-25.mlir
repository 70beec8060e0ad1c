func.func @t(%x: tensor<?x?x64xf16>, %w: tensor<64xf16>) {
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf16>, tensor<64xf16>) -> tensor<?x?x64xf16>
  return
}
