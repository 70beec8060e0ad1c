func.func @epilogue(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<7xf32>) {
  %y = kernel.gemm %x, %w mask(%m : tensor<7xf32>) {transpose_b, mask_block = 2 : i64}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}
