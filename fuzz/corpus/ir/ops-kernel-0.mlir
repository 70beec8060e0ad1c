// Every kernel op round-trips in its pretty and generic forms.

func.func @rows(%tok: tensor<2x5xi32>, %table: tensor<11x8xf32>, %m: tensor<10xf32>,
                %w: tensor<8xf32>, %keep: tensor<3xf32>, %s: tensor<f32>) {
  %h = kernel.embed %tok, %table mask(%m : tensor<10xf32>) {prefix_dense}
      : (tensor<2x5xi32>, tensor<11x8xf32>) -> tensor<2x5x8xf32>
  %dt, %dm = kernel.embed_grad %tok, %table, %h mask(%m : tensor<10xf32>)
      : (tensor<2x5xi32>, tensor<11x8xf32>, tensor<2x5x8xf32>) -> tensor<11x8xf32>, tensor<10xf32>
  %n = kernel.rmsnorm %h, %w mask(%m : tensor<10xf32>) {epsilon = 1.0e-5 : f64}
      : (tensor<2x5x8xf32>, tensor<8xf32>) -> tensor<2x5x8xf32>
  %dx, %dw, %dmn = kernel.rmsnorm_grad %h, %w, %n mask(%m : tensor<10xf32>) {epsilon = 1.0e-5 : f64}
      : (tensor<2x5x8xf32>, tensor<8xf32>, tensor<2x5x8xf32>) -> tensor<2x5x8xf32>, tensor<8xf32>, tensor<10xf32>
  %mm = kernel.mask %h, %m {block = 2 : i64, groups = 2 : i64} : tensor<2x5x8xf32>, tensor<10xf32>
  %mdx, %mdm = kernel.mask_grad %h, %m, %n : tensor<2x5x8xf32>, tensor<10xf32>
  %a = kernel.relu2 %h mask(%m : tensor<10xf32>) : tensor<2x5x8xf32> -> tensor<2x5x8xf32>
  %du, %dmr = kernel.relu2_grad %h, %a mask(%m : tensor<10xf32>) : tensor<2x5x8xf32> -> tensor<10xf32>
  %g = kernel.depth_gate %h, %a keep(%keep : tensor<3xf32>) {layer = 1 : i64} : tensor<2x5x8xf32>
  %db, %dk = kernel.depth_gate_grad %a, %g keep(%keep : tensor<3xf32>) {layer = 1 : i64}
      : tensor<2x5x8xf32> -> tensor<3xf32>
  %ce = kernel.cross_entropy %h, %tok {ignore_index = -1 : i64} : tensor<2x5x8xf32>, tensor<2x5xi32> -> tensor<f32>
  %dce = kernel.cross_entropy_grad %h, %tok, %s {ignore_index = -1 : i64}
      : tensor<2x5x8xf32>, tensor<2x5xi32>, tensor<f32>
  %kl = kernel.kl %h, %n {temperature = 1.0 : f64} : tensor<2x5x8xf32> -> tensor<f32>
  %dkl = kernel.kl_grad %h, %n, %s {temperature = 1.0 : f64} : tensor<2x5x8xf32>, tensor<f32>
  %sum = kernel.add %h, %n, %a : tensor<2x5x8xf32>
  %p = kernel.mul %s, %ce : tensor<f32>
  return
}

func.func @gemms(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<14xf32>,
                 %h: tensor<10xf32>, %acc: tensor<2x5x12xf32>) {
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x12xf32>
  %z = kernel.gemm %x, %w acc(%acc : tensor<2x5x12xf32>) mask(%m : tensor<14xf32>)
      n_extent(%m : tensor<14xf32>) k_extent(%h : tensor<10xf32>) {transpose_b, n_groups = 2 : i64}
      : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x12xf32>
  %dw = kernel.gemm %y, %x {transpose_a} : (tensor<2x5x12xf32>, tensor<2x5x8xf32>) -> tensor<12x8xf32>
  return
}

func.func @mixers(%x: tensor<2x5x48xf32>, %proj: tensor<2x5x78xf32>, %cw: tensor<28x4xf32>,
                  %cb: tensor<28xf32>, %v: tensor<4xf32>, %nw: tensor<16xf32>,
                  %mh: tensor<6xf32>, %mc: tensor<6xf32>, %q: tensor<2x5x16xf32>, %k: tensor<2x5x8xf32>) {
  %mzx = kernel.mamba_mask heads(%mh : tensor<6xf32>) channels(%mc : tensor<6xf32>)
      {num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64} : tensor<16xf32>
  %xbc = kernel.mamba_conv %proj, %cw, %cb mask(%mzx : tensor<16xf32>)
      {num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64}
      : (tensor<2x5x78xf32>, tensor<28x4xf32>, tensor<28xf32>) -> tensor<2x5x28xf32>
  %y = kernel.mamba_scan %proj, %xbc, %v, %v, %v heads(%mh : tensor<6xf32>)
      {chunk = 8 : i64, num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64}
      : (tensor<2x5x78xf32>, tensor<2x5x28xf32>, tensor<4xf32>) -> tensor<2x5x16xf32>
  %n = kernel.mamba_gate_norm %y, %proj, %nw mask(%mzx : tensor<16xf32>) heads(%mh : tensor<6xf32>)
      {epsilon = 1.0e-5 : f64, num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64}
      : (tensor<2x5x16xf32>, tensor<2x5x78xf32>, tensor<16xf32>) -> tensor<2x5x16xf32>
  %g:8 = kernel.mamba_inner_grad %proj, %xbc, %y, %cw, %cb, %v, %v, %v, %nw, %n heads(%mh : tensor<6xf32>)
      {epsilon = 1.0e-5 : f64, num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64}
      : (tensor<2x5x78xf32>, tensor<2x5x28xf32>, tensor<2x5x16xf32>, tensor<28x4xf32>, tensor<28xf32>,
         tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<16xf32>, tensor<2x5x16xf32>)
      -> (tensor<2x5x78xf32>, tensor<28x4xf32>, tensor<28xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<16xf32>) heads(tensor<6xf32>)
  %a, %lse = kernel.attention %q, %k, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 4 : i64}
      : (tensor<2x5x16xf32>, tensor<2x5x8xf32>) -> tensor<2x4x5xf32>
  %dq, %dk, %dv = kernel.attention_grad %q, %k, %k, %a, %lse, %a {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 4 : i64}
      : (tensor<2x5x16xf32>, tensor<2x5x8xf32>, tensor<2x4x5xf32>)
  return
}

func.func @optimizer(%p: tensor<4x3xf32>, %g: tensor<4x3xf32>, %m: tensor<4x3xf32>,
                     %v: tensor<4x3xf32>, %h: tensor<3xf64>) -> tensor<f64> {
  %n = kernel.squared_norm %g, %p : tensor<4x3xf32>, tensor<4x3xf32> -> tensor<f64>
  kernel.adamw %p, %g, %m, %v, %h {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.1 : f64}
      : tensor<4x3xf32>, tensor<3xf64>
  return %n : tensor<f64>
}

func.func @host(%b: tensor<i32>) -> tensor<3xf32> {
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
  ^bb0(%arg: tensor<i32>):
    %u = elastic.one_hot %arg : tensor<i32> -> tensor<3xf32>
    kernel.yield %u : tensor<3xf32>
  }
  return %0 : tensor<3xf32>
}
