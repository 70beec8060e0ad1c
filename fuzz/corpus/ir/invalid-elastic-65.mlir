func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>) {
  %y = elastic.depth_gate %h, %b {layer = 1 : i64} : tensor<?x?x64xf32>
  return
}
