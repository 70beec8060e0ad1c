func.func @t(%x: tensor<?x?x64xf32>, %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>, %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>, %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>, %m: !elastic.mask<hidden, 128>) {
  %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj hidden(%m : !elastic.mask<hidden, 128>) {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64} : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  return
}
