// The input cotangent of attention: three single-use GEMMs summed become a chain of GEMMs
// accumulating into one buffer; no add is left.
func.func @accumulate(%dq: tensor<2x5x8xf32>, %dk: tensor<2x5x4xf32>, %dv: tensor<2x5x4xf32>,
                      %wq: tensor<8x8xf32>, %wkv: tensor<4x8xf32>) -> tensor<2x5x8xf32> {
  %a = kernel.gemm %dq, %wq : (tensor<2x5x8xf32>, tensor<8x8xf32>) -> tensor<2x5x8xf32>
  %b = kernel.gemm %dk, %wkv : (tensor<2x5x4xf32>, tensor<4x8xf32>) -> tensor<2x5x8xf32>
  %c = kernel.gemm %dv, %wkv : (tensor<2x5x4xf32>, tensor<4x8xf32>) -> tensor<2x5x8xf32>
  %s = kernel.add %a, %b, %c : tensor<2x5x8xf32>
  return %s : tensor<2x5x8xf32>
}
