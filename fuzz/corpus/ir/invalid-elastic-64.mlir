func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %k: tensor<4xf32>) {
  %y = elastic.depth_gate %h, %b keep(%k : tensor<4xf32>) : tensor<?x?x64xf32>
  return
}
