// A channel mask after a GEMM whose raw result has no other use becomes the GEMM's epilogue.
func.func @mask_epilogue(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<14xf32>) -> tensor<2x5x12xf32> {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x12xf32>
  %z = kernel.mask %y, %m : tensor<2x5x12xf32>, tensor<14xf32>
  return %z : tensor<2x5x12xf32>
}
