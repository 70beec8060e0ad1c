func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %k: tensor<4xf64>) {
  %y = elastic.depth_gate %h, %b keep(%k : tensor<4xf64>) {layer = 1 : i64} : tensor<?x?x64xf32>
  return
}
