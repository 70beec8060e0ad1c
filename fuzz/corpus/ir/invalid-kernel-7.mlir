func.func @extent_groups(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<8xf32>) {
  %y = kernel.gemm %x, %w k_extent(%m : tensor<8xf32>) {transpose_b, k_groups = 4 : i64}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}
