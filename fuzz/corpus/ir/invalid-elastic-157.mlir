func.func @t(%d: tensor<f32>, %k: tensor<3xf32>) {
  %p:6 = elastic.param_count_grad hidden(%d) ffn(%d) attn_heads(%d) mamba_heads(%d) mamba_head_dim(%d) keep(%k) grad(%d) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>, tensor<f32>) -> (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<2xf32>)
  return
}
