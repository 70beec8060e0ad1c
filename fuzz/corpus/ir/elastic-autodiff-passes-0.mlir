// The train step: forward ops, then each op's VJP in reverse, cotangents of values with two
// uses summed, one gradient per parameter with its name; run-time inputs get none.
func.func @f(%tok: tensor<?x?xi32> {elastic.input = "tokens"},
             %tgt: tensor<?x?xi32> {elastic.input = "targets"},
             %pi: tensor<3xf32> {elastic.param = "routers.hidden"},
             %emb: tensor<29x7xf32> {elastic.param = "emb"},
             %up: tensor<11x7xf32> {elastic.param = "up"},
             %down: tensor<7x11xf32> {elastic.param = "down"},
             %head: tensor<29x7xf32> {elastic.param = "head"})
    -> (tensor<?x?x29xf32>, tensor<f32>) attributes {elastic.result_names = ["logits", "loss"]} {
  %m = elastic.prefix_mask %pi {choices = array<i64: 7, 5, 3>, mode = #elastic.mask_mode<soft>}
      : tensor<3xf32> -> !elastic.mask<hidden, 7>
  %h = elastic.embed %tok, %emb hidden(%m : !elastic.mask<hidden, 7>)
      : (tensor<?x?xi32>, tensor<29x7xf32>) -> tensor<?x?x7xf32>
  %y = elastic.mlp %h, %up, %down hidden(%m : !elastic.mask<hidden, 7>)
      : (tensor<?x?x7xf32>, tensor<11x7xf32>, tensor<7x11xf32>) -> tensor<?x?x7xf32>
  %h1 = elastic.depth_gate %h, %y : tensor<?x?x7xf32>
  %l = elastic.lm_head %h1, %head : (tensor<?x?x7xf32>, tensor<29x7xf32>) -> tensor<?x?x29xf32>
  %ce = elastic.cross_entropy %l, %tgt : (tensor<?x?x29xf32>, tensor<?x?xi32>) -> tensor<f32>
  return %l, %ce : tensor<?x?x29xf32>, tensor<f32>
}
