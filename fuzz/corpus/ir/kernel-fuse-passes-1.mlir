// ... but not when the raw result is needed too (e.g. by the mask's backward).
func.func @mask_kept_apart(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<14xf32>,
                           %dy: tensor<2x5x12xf32>) -> (tensor<2x5x12xf32>, tensor<14xf32>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x12xf32>
  %z = kernel.mask %y, %m : tensor<2x5x12xf32>, tensor<14xf32>
  %dx, %dm = kernel.mask_grad %y, %m, %dy : tensor<2x5x12xf32>, tensor<14xf32>
  return %z, %dm : tensor<2x5x12xf32>, tensor<14xf32>
}
