func.func @extent(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<7xf32>) {
  %y = kernel.gemm %x, %w n_extent(%m : tensor<7xf32>) {transpose_b}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}
