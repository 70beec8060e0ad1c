func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>, %dh: tensor<?x?x64xf32>) {
  %d = elastic.embed_grad %tok, %table, %dh : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>) -> (tensor<256x32xf32>)
  return
}
