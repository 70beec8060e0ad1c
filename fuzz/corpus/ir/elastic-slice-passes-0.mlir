// Every router here is `z = I leaky(I u + 0) + 0` = one_hot(budget): budget "full" (0) picks
// each axis' first choice and drops no layer, "small" (1) its second and drops one layer.

// Hidden and FFN prefixes, and depth: the least important layer (0, first in `order`) is
// dropped with its weights, the kept layer 1 is renumbered 0, and no router, Gumbel, mask or
// keep op survives.
// At the full budget the slice is the whole parent: every index, both layers.
// FULL-COUNT-2: elastic.depth_gate
func.func @elastic_model(%tokens: tensor<?x?xi32> {elastic.input = "tokens"},
                         %targets: tensor<?x?xi32> {elastic.input = "targets"},
                         %budget: tensor<i32> {elastic.input = "budget"},
                         %tau: tensor<f32> {elastic.input = "tau"},
                         %hard: tensor<i1> {elastic.input = "hard_sample"},
                         %seed: tensor<i64> {elastic.input = "seed"},
                         %emb: tensor<16x8xf32> {elastic.param = "backbone.embeddings.weight"},
                         %n0: tensor<8xf32> {elastic.param = "backbone.layers.0.norm.weight"},
                         %up0: tensor<12x8xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight"},
                         %down0: tensor<8x12xf32> {elastic.param = "backbone.layers.0.mixer.down_proj.weight"},
                         %n1: tensor<8xf32> {elastic.param = "backbone.layers.1.norm.weight"},
                         %up1: tensor<12x8xf32> {elastic.param = "backbone.layers.1.mixer.up_proj.weight"},
                         %down1: tensor<8x12xf32> {elastic.param = "backbone.layers.1.mixer.down_proj.weight"},
                         %nf: tensor<8xf32> {elastic.param = "backbone.norm_f.weight"},
                         %head: tensor<16x8xf32> {elastic.param = "lm_head.weight"})
    -> (tensor<?x?x16xf32>, tensor<f32>)
    attributes {elastic.budgets = ["full", "small"], elastic.result_names = ["logits", "loss"]} {
  %eye = arith.constant dense<[[1.0, 0.0], [0.0, 1.0]]> : tensor<2x2xf32>
  %zero = arith.constant dense<0.0> : tensor<2xf32>
  %u = elastic.one_hot %budget : tensor<i32> -> tensor<2xf32>
  %z = elastic.router %u, %eye, %zero, %eye, %zero : (tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>, tensor<2x2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %g = elastic.gumbel_noise %seed {stream = 0 : i64} : tensor<i64> -> tensor<2xf32>
  %pi = elastic.gumbel_softmax %z, %g, %tau, %tau, %hard : (tensor<2xf32>, tensor<2xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<2xf32>
  %mh = elastic.prefix_mask %pi {choices = array<i64: 8, 4>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> !elastic.mask<hidden, 8>
  %mf = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> !elastic.mask<ffn, 12>
  %keep = elastic.layer_keep %pi {order = array<i64: 0, 1>, mode = #elastic.mask_mode<hard>} : tensor<2xf32> -> tensor<2xf32>
  %h0 = elastic.embed %tokens, %emb hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?xi32>, tensor<16x8xf32>) -> tensor<?x?x8xf32>
  %x0 = elastic.rmsnorm %h0, %n0 hidden(%mh : !elastic.mask<hidden, 8>) {epsilon = 1.0e-6 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %y0 = elastic.mlp %x0, %up0, %down0 ffn(%mf : !elastic.mask<ffn, 12>) hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h1 = elastic.depth_gate %h0, %y0 keep(%keep : tensor<2xf32>) {layer = 0 : i64} : tensor<?x?x8xf32>
  %x1 = elastic.rmsnorm %h1, %n1 hidden(%mh : !elastic.mask<hidden, 8>) {epsilon = 1.0e-6 : f64} : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %y1 = elastic.mlp %x1, %up1, %down1 ffn(%mf : !elastic.mask<ffn, 12>) hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  %h2 = elastic.depth_gate %h1, %y1 keep(%keep : tensor<2xf32>) {layer = 1 : i64} : tensor<?x?x8xf32>
  %xf = elastic.rmsnorm %h2, %nf hidden(%mh : !elastic.mask<hidden, 8>) : (tensor<?x?x8xf32>, tensor<8xf32>) -> tensor<?x?x8xf32>
  %logits = elastic.lm_head %xf, %head : (tensor<?x?x8xf32>, tensor<16x8xf32>) -> tensor<?x?x16xf32>
  %ce = elastic.cross_entropy %logits, %targets : (tensor<?x?x16xf32>, tensor<?x?xi32>) -> tensor<f32>
  return %logits, %ce : tensor<?x?x16xf32>, tensor<f32>
}
