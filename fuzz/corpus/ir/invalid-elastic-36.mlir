func.func @t(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>) {
  %h = elastic.embed %tok, %table : (tensor<?x?xi32>, tensor<256x64xf32>) -> tensor<?x?x32xf32>
  return
}
