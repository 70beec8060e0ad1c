func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>, %dh: tensor<?x?x64xf32>, %m: !elastic.mask<hidden, 64>) {
  %d:2 = elastic.embed_grad %tok, %table, %dh hidden(%m : !elastic.mask<hidden, 64>) : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>) -> (tensor<256x64xf32>, tensor<64xf32>)
  return
}
