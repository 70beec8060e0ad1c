// The backward of an MLP recomputes the forward GEMM and activation with the same kernel ops
// (CSE shares them with the forward) and differentiates through them.
func.func @mlp_grad(%x: tensor<?x?x8xf32>, %up: tensor<12x8xf32>, %down: tensor<8x12xf32>,
                    %dy: tensor<?x?x8xf32>) -> (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) {
  %g:3 = elastic.mlp_grad %x, %up, %down, %dy
      : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>, tensor<?x?x8xf32>)
      -> (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>)
  return %g#0, %g#1, %g#2 : tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>
}
