func.func @t(%b: tensor<?x?x64xf32>, %k: tensor<3xf32>) {
  %d:2 = elastic.depth_gate_grad %b, %b keep(%k : tensor<3xf32>) : tensor<?x?x64xf32>, tensor<3xf32>
  return
}
