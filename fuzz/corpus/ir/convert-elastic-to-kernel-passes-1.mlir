// Soft masks run at full width: no extents, no prefix_dense.
func.func @mlp_soft(%x: tensor<?x?x8xf32>, %pi: tensor<2xf32>, %up: tensor<12x8xf32>,
                    %down: tensor<8x12xf32>) -> tensor<?x?x8xf32> {
  %mf = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<soft>}
      : tensor<2xf32> -> !elastic.mask<ffn, 12>
  %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 12>)
      : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}
