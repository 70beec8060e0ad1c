func.func @t(%hidden: tensor<f32>, %ffn: tensor<f32>, %attn_heads: tensor<f32>, %mamba_heads: tensor<f32>, %mamba_head_dim: tensor<f32>, %keep: tensor<2xf32>) {
  %p = elastic.param_count hidden(%hidden) ffn(%ffn) attn_heads(%attn_heads) mamba_heads(%mamba_heads) mamba_head_dim(%mamba_head_dim) keep(%keep) {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false} : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<2xf32>) -> tensor<f32>
  return
}
