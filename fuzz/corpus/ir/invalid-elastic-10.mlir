func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64xf32>, %m: !elastic.mask<ffn, 64>) {
  %y = elastic.rmsnorm %x, %w hidden(%m : !elastic.mask<ffn, 64>) : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  return
}
