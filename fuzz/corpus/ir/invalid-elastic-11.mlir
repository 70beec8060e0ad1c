func.func @t(%t: tensor<?x?xi32>, %table: tensor<256x64xf32>, %m: !elastic.mask<hidden, 256>) {
  %h = elastic.embed %t, %table hidden(%m : !elastic.mask<hidden, 256>) : (tensor<?x?xi32>, tensor<256x64xf32>) -> tensor<?x?x64xf32>
  return
}
