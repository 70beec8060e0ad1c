func.func @rank(%x: tensor<8xf32>, %w: tensor<12x8xf32>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<8xf32>, tensor<12x8xf32>) -> tensor<12xf32>
  return
}
