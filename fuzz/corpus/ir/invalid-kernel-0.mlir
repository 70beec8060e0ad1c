func.func @contraction(%x: tensor<2x5x8xf32>, %w: tensor<12x7xf32>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x7xf32>) -> tensor<2x5x12xf32>
  return
}
