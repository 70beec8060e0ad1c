func.func @t(%t: tensor<?x?xi64>, %table: tensor<256x64xf32>) {
  %h = elastic.embed %t, %table : (tensor<?x?xi64>, tensor<256x64xf32>) -> tensor<?x?x64xf32>
  return
}
