func.func @t(%tok: tensor<2x5xi32>, %table: tensor<256x64xf32>) {
  %h = elastic.embed %tok, %table : (tensor<2x5xi32>, tensor<256x64xf32>) -> tensor<3x5x64xf32>
  return
}
