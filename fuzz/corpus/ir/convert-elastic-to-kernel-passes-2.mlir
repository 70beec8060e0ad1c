// Attention: three projections, the fused flash kernel, the head mask over head_dim blocks per
// KV group, the output projection.
func.func @attention(%x: tensor<?x?x8xf32>, %wq: tensor<8x8xf32>, %wk: tensor<4x8xf32>,
                     %wv: tensor<4x8xf32>, %wo: tensor<8x8xf32>) -> tensor<?x?x8xf32> {
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 2 : i64}
      : (tensor<?x?x8xf32>, tensor<8x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}
