func.func @result_view(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x13xf32>
  return
}
