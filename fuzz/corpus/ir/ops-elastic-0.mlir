// Every elastic op round-trips through the pretty and the generic form.

func.func @masks(%pi: tensor<3xf32>, %rows: tensor<2x3xf32>) {
  %h = elastic.prefix_mask %pi {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<hard>}
      : tensor<3xf32> -> !elastic.mask<hidden, 64>
  %m = elastic.prefix_mask %rows {choices = array<i64: 8, 6, 4>, mode = #elastic.mask_mode<soft>, row = 1 : i64}
      : tensor<2x3xf32> -> !elastic.mask<mamba_heads, 8, groups = 2>
  return
}

func.func @model(%tokens: tensor<?x?xi32>, %table: tensor<256x64xf32>, %norm: tensor<64xf32>,
                 %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>, %conv_b: tensor<160xf32>,
                 %dt_bias: tensor<8xf32>, %a_log: tensor<8xf32>, %d: tensor<8xf32>,
                 %norm_w: tensor<128xf32>, %out_proj: tensor<64x128xf32>,
                 %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>, %wv: tensor<32x64xf32>,
                 %wo: tensor<64x64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>,
                 %head: tensor<256x64xf32>,
                 %mh: !elastic.mask<hidden, 64>, %mm: !elastic.mask<mamba_heads, 8, groups = 2>,
                 %mc: !elastic.mask<mamba_head_dim, 16>, %ma: !elastic.mask<attn_heads, 4, groups = 2>,
                 %mf: !elastic.mask<ffn, 128>, %keep: tensor<3xf32>) -> tensor<?x?x256xf32> {
  %h0 = elastic.embed %tokens, %table hidden(%mh : !elastic.mask<hidden, 64>)
      : (tensor<?x?xi32>, tensor<256x64xf32>) -> tensor<?x?x64xf32>
  %n0 = elastic.rmsnorm %h0, %norm hidden(%mh : !elastic.mask<hidden, 64>) {epsilon = 1.0e-5 : f64}
      : (tensor<?x?x64xf32>, tensor<64xf32>) -> tensor<?x?x64xf32>
  %y0 = elastic.mamba2 %n0, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj
      heads(%mm : !elastic.mask<mamba_heads, 8, groups = 2>)
      channels(%mc : !elastic.mask<mamba_head_dim, 16>) hidden(%mh : !elastic.mask<hidden, 64>)
      {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64}
      : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>,
         tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>)
      -> tensor<?x?x64xf32>
  %h1 = elastic.depth_gate %h0, %y0 keep(%keep : tensor<3xf32>) {layer = 0 : i64} : tensor<?x?x64xf32>
  %y1 = elastic.attention %h1, %wq, %wk, %wv, %wo heads(%ma : !elastic.mask<attn_heads, 4, groups = 2>)
      {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64}
      : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>,
         tensor<64x64xf32>) -> tensor<?x?x64xf32>
  %h2 = elastic.depth_gate %h1, %y1 : tensor<?x?x64xf32>
  %y2 = elastic.mlp %h2, %up, %down ffn(%mf : !elastic.mask<ffn, 128>) hidden(%mh : !elastic.mask<hidden, 64>)
      : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
  %logits = elastic.lm_head %y2, %head : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x?x256xf32>
  return %logits : tensor<?x?x256xf32>
}

func.func @routers(%budget: tensor<i32>, %seed: tensor<i64>, %tau: tensor<f32>, %scale: tensor<f32>,
                   %hard: tensor<i1>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>,
                   %w2: tensor<6x16xf32>, %b2: tensor<6xf32>) -> (tensor<2x3xf32>, tensor<3xf32>) {
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<3xf32>
  %z = elastic.router %u, %w1, %b1, %w2, %b2 {negative_slope = 0.2 : f64}
      : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>) -> tensor<2x3xf32>
  %g = elastic.gumbel_noise %seed {stream = 1 : i64} : tensor<i64> -> tensor<2x3xf32>
  %pi = elastic.gumbel_softmax %z, %g, %tau, %scale, %hard
      : (tensor<2x3xf32>, tensor<2x3xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2x3xf32>
  %keep = elastic.layer_keep %u {order = array<i64: 2, 0, 1>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> tensor<3xf32>
  return %pi, %keep : tensor<2x3xf32>, tensor<3xf32>
}

func.func @losses(%logits: tensor<?x?x256xf32>, %teacher: tensor<?x?x256xf32>,
                  %targets: tensor<?x?xi32>, %pi: tensor<3xf32>, %rows: tensor<2x3xf32>,
                  %keep: tensor<3xf32>, %budget: tensor<i32>) -> (tensor<f32>, tensor<f32>, tensor<f32>) {
  %ce = elastic.cross_entropy %logits, %targets : (tensor<?x?x256xf32>, tensor<?x?xi32>) -> tensor<f32>
  %kd = elastic.kl_distill %logits, %teacher {temperature = 2.0 : f64}
      : (tensor<?x?x256xf32>, tensor<?x?x256xf32>) -> tensor<f32>
  %d = elastic.expected_size %pi {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> tensor<f32>
  %h = elastic.expected_size %rows {choices = array<i64: 8, 6, 4>, mode = #elastic.mask_mode<hard>}
      : tensor<2x3xf32> -> tensor<2xf32>
  %p = elastic.param_count hidden(%d) ffn(%d) attn_heads(%d) mamba_heads(%h) mamba_head_dim(%d) keep(%keep)
      {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64,
       num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false}
      : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<2xf32>, tensor<f32>, tensor<3xf32>) -> tensor<f32>
  %r = elastic.resource_loss %p, %budget anchors(%pi, %rows)
      {fractions = array<f64: 1.0, 0.75, 0.5>, full_params = 2.0e6 : f64}
      : (tensor<f32>, tensor<i32>, tensor<3xf32>, tensor<2x3xf32>) -> tensor<f32>
  return %ce, %kd, %r : tensor<f32>, tensor<f32>, tensor<f32>
}

func.func @float64(%x: tensor<2x5x8xf64>, %w: tensor<8xf64>) -> tensor<2x5x8xf64> {
  %y = elastic.rmsnorm %x, %w {epsilon = 1.0e-6 : f64} : (tensor<2x5x8xf64>, tensor<8xf64>) -> tensor<2x5x8xf64>
  return %y : tensor<2x5x8xf64>
}

func.func @backward(%tok: tensor<?x?xi32>, %table: tensor<256x64xf32>, %x: tensor<?x?x64xf32>,
                    %w: tensor<64xf32>, %up: tensor<128x64xf32>, %down: tensor<64x128xf32>,
                    %head: tensor<256x64xf32>, %dl: tensor<?x?x256xf32>, %keep: tensor<3xf32>,
                    %pi: tensor<3xf32>, %dloss: tensor<f32>,
                    %mh: !elastic.mask<hidden, 64>, %mf: !elastic.mask<ffn, 128>) {
  %dt, %dmh = elastic.embed_grad %tok, %table, %x hidden(%mh : !elastic.mask<hidden, 64>)
      : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>) -> (tensor<256x64xf32>, tensor<66xf32>)
  %dx, %dw = elastic.rmsnorm_grad %x, %w, %x {epsilon = 1.0e-3 : f64}
      : (tensor<?x?x64xf32>, tensor<64xf32>, tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<64xf32>)
  %a:5 = elastic.mlp_grad %x, %up, %down, %x ffn(%mf : !elastic.mask<ffn, 128>) hidden(%mh : !elastic.mask<hidden, 64>)
      : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>)
      -> (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) ffn(tensor<130xf32>) hidden(tensor<66xf32>)
  %hx, %hw = elastic.lm_head_grad %x, %head, %dl
      : (tensor<?x?x64xf32>, tensor<256x64xf32>, tensor<?x?x256xf32>) -> (tensor<?x?x64xf32>, tensor<256x64xf32>)
  %db, %dk = elastic.depth_gate_grad %x, %x keep(%keep : tensor<3xf32>) {layer = 2 : i64} : tensor<?x?x64xf32>, tensor<3xf32>
  %dce = elastic.cross_entropy_grad %dl, %tok, %dloss
      : (tensor<?x?x256xf32>, tensor<?x?xi32>, tensor<f32>) -> tensor<?x?x256xf32>
  %dkd = elastic.kl_distill_grad %dl, %dl, %dloss
      : (tensor<?x?x256xf32>, tensor<?x?x256xf32>, tensor<f32>) -> tensor<?x?x256xf32>
  %dpi = elastic.prefix_mask_grad %pi, %dmh {choices = array<i64: 64, 48, 32>, mode = #elastic.mask_mode<soft>, mask = !elastic.mask<hidden, 64>}
      : (tensor<3xf32>, tensor<66xf32>) -> tensor<3xf32>
  return
}

func.func @router_backward(%u: tensor<3xf32>, %w1: tensor<16x3xf32>, %b1: tensor<16xf32>,
                           %w2: tensor<6x16xf32>, %b2: tensor<6xf32>, %dz: tensor<2x3xf32>,
                           %g: tensor<2x3xf32>, %tau: tensor<f32>, %hard: tensor<i1>,
                           %pi: tensor<3xf32>, %dkeep: tensor<4xf32>, %de: tensor<2xf32>,
                           %d: tensor<f32>, %k: tensor<3xf32>, %budget: tensor<i32>) {
  %r:4 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz
      : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>, tensor<2x3xf32>)
      -> (tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>)
  %dl = elastic.gumbel_softmax_grad %dz, %g, %tau, %tau, %hard, %dz
      : (tensor<2x3xf32>, tensor<2x3xf32>, tensor<f32>, tensor<f32>, tensor<i1>, tensor<2x3xf32>) -> tensor<2x3xf32>
  %dpi = elastic.layer_keep_grad %pi, %dkeep {order = array<i64: 3, 1, 0, 2>, mode = #elastic.mask_mode<hard>}
      : (tensor<3xf32>, tensor<4xf32>) -> tensor<3xf32>
  %dr = elastic.expected_size_grad %dz, %de {choices = array<i64: 8, 6, 4>, mode = #elastic.mask_mode<soft>}
      : (tensor<2x3xf32>, tensor<2xf32>) -> tensor<2x3xf32>
  %p:6 = elastic.param_count_grad hidden(%d) ffn(%d) attn_heads(%d) mamba_heads(%d) mamba_head_dim(%d) keep(%k) grad(%d)
      {pattern = "M-M", mamba_groups = 2 : i64, ssm_state_size = 8 : i64, conv_kernel = 4 : i64,
       num_kv_heads = 2 : i64, head_dim = 16 : i64, vocab_size = 256 : i64, tied_embeddings = false}
      : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>, tensor<f32>)
      -> (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>)
  %q:3 = elastic.resource_loss_grad %d, %budget, %d anchors(%pi, %dz)
      {fractions = array<f64: 1.0, 0.5>, full_params = 1.0e6 : f64}
      : (tensor<f32>, tensor<i32>, tensor<f32>, tensor<3xf32>, tensor<2x3xf32>) -> (tensor<f32>, tensor<3xf32>, tensor<2x3xf32>)
  return
}

func.func @mixer_backward(%x: tensor<?x?x64xf32>, %wq: tensor<64x64xf32>, %wk: tensor<32x64xf32>,
                          %wv: tensor<32x64xf32>, %wo: tensor<64x64xf32>,
                          %ma: !elastic.mask<attn_heads, 4, groups = 2>,
                          %in_proj: tensor<296x64xf32>, %conv_w: tensor<160x4xf32>,
                          %conv_b: tensor<160xf32>, %v8: tensor<8xf32>, %norm_w: tensor<128xf32>,
                          %out_proj: tensor<64x128xf32>,
                          %mm: !elastic.mask<mamba_heads, 8, groups = 2>,
                          %mc: !elastic.mask<mamba_head_dim, 16>, %mh: !elastic.mask<hidden, 64>) {
  %a:6 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %x heads(%ma : !elastic.mask<attn_heads, 4, groups = 2>)
      {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64}
      : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>, tensor<?x?x64xf32>)
      -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x64xf32>) heads(tensor<6xf32>)
  %m:12 = elastic.mamba2_grad %x, %in_proj, %conv_w, %conv_b, %v8, %v8, %v8, %norm_w, %out_proj, %x
      heads(%mm : !elastic.mask<mamba_heads, 8, groups = 2>)
      channels(%mc : !elastic.mask<mamba_head_dim, 16>) hidden(%mh : !elastic.mask<hidden, 64>)
      {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64}
      : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>, tensor<8xf32>,
         tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>)
      heads(tensor<10xf32>) channels(tensor<18xf32>) hidden(tensor<66xf32>)
  return
}
