func.func @element_types(%x: tensor<5x8xf32>, %w: tensor<12x8xf64>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<5x8xf32>, tensor<12x8xf64>) -> tensor<5x12xf32>
  return
}
