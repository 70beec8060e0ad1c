func.func @t(%b: tensor<?x?x64xf32>, %k: tensor<3xf32>) {
  %d:2 = elastic.depth_gate_grad %b, %b keep(%k : tensor<3xf32>) {layer = 0 : i64} : tensor<?x?x64xf32>, tensor<4xf32>
  return
}
