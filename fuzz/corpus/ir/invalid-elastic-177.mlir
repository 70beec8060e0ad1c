// A masked dimension unknown until run time is not checked against the mask.
func.func @t(%x: tensor<?x?x?xf32>, %w: tensor<64xf32>, %m: !elastic.mask<hidden, 64>) -> tensor<?x?x?xf32> {
  %y = elastic.rmsnorm %x, %w hidden(%m : !elastic.mask<hidden, 64>) : (tensor<?x?x?xf32>, tensor<64xf32>) -> tensor<?x?x?xf32>
  return %y : tensor<?x?x?xf32>
}
