// Mamba2: heads keep a prefix of each group (heads 0 and 2 of 4 in 2 groups), channels one
// prefix shared by every kept head (1 of 2). in_proj rows are [z (8), x (8), B (4), C (4),
// dt (4)] = [0, 8, 16, 20, 24, 28): z and x keep channel 0 of heads 0 and 2, B and C stay
// whole, dt keeps heads 0 and 2; the conv channels [x, B, C] alike; the per-head vectors keep
// heads 0 and 2.
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %one: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %in: tensor<28x8xf32> {elastic.param = "backbone.layers.0.mixer.in_proj.weight"},
                         %cw: tensor<16x4xf32> {elastic.param = "backbone.layers.0.mixer.conv1d.weight"},
                         %cb: tensor<16xf32> {elastic.param = "backbone.layers.0.mixer.conv1d.bias"},
                         %dt: tensor<4xf32> {elastic.param = "backbone.layers.0.mixer.dt_bias"},
                         %al: tensor<4xf32> {elastic.param = "backbone.layers.0.mixer.A_log"},
                         %d: tensor<4xf32> {elastic.param = "backbone.layers.0.mixer.D"},
                         %nw: tensor<8xf32> {elastic.param = "backbone.layers.0.mixer.norm.weight"},
                         %out: tensor<8x8xf32> {elastic.param = "backbone.layers.0.mixer.out_proj.weight"},
                         %head: tensor<16x8xf32> {elastic.param = "lm_head.weight"})
    -> tensor<?x?x16xf32> attributes {elastic.budgets = ["full", "small"]} {
  %eye = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %eye, %zero, %eye, %zero : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %pi = elastic.gumbel_softmax %z, %zero, %one, %one, %hard : (tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2xf32>
  %mh = elastic.prefix_mask %pi {choices = array<i64: 4, 2>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<mamba_heads, 4, groups = 2>
  %mc = elastic.prefix_mask %pi {choices = array<i64: 2, 1>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<mamba_head_dim, 2>
  %h = elastic.embed %tokens, %emb : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %y = elastic.mamba2 %h, %in, %cw, %cb, %dt, %al, %d, %nw, %out heads(%mh : !elastic.mask<mamba_heads, 4, groups = 2>) channels(%mc : !elastic.mask<mamba_head_dim, 2>) {num_heads = 4 : i64, head_dim = 2 : i64, n_groups = 2 : i64, state_size = 2 : i64} : (tensor<?x?x8xf32>, tensor<28x8xf32>, tensor<16x4xf32>, tensor<16xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  %h1 = elastic.depth_gate %h, %y : tensor<?x?x8xf32>
  %logits = elastic.lm_head %h1, %head : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  return %logits : tensor<?x?x16xf32>
}
