func.func @t(%h: tensor<?x?x64xf32>, %b: tensor<?x?x32xf32>) {
  %y = "elastic.depth_gate"(%h, %b) <{operandSegmentSizes = array<i32: 1, 1, 0>}> : (tensor<?x?x64xf32>, tensor<?x?x32xf32>) -> tensor<?x?x64xf32>
  return
}
