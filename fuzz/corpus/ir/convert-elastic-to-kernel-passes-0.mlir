// An MLP under hard masks: GEMMs with prefix-dense extents (hidden on K of up and N of down,
// FFN the other way), the masked squared ReLU, the hidden mask of the output; the router
// steps become host steps; dynamic batch/length become 2 x 5.
func.func @mlp_hard(%x: tensor<?x?x8xf32>, %pi: tensor<2xf32>, %up: tensor<12x8xf32>,
                    %down: tensor<8x12xf32>) -> tensor<?x?x8xf32> {
  %mh = elastic.prefix_mask %pi {choices = array<i64: 8, 4>, mode = #elastic.mask_mode<hard>}
      : tensor<2xf32> -> !elastic.mask<hidden, 8>
  %mf = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<hard>}
      : tensor<2xf32> -> !elastic.mask<ffn, 12>
  %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 12>) hidden(%mh : !elastic.mask<hidden, 8>)
      : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}
