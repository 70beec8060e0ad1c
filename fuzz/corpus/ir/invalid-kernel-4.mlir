func.func @acc_type(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %acc: tensor<5x11xf32>) {
  %y = kernel.gemm %x, %w acc(%acc : tensor<5x11xf32>) {transpose_b}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}
