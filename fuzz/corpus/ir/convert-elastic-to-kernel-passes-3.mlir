// Mamba2: in_proj, the masked conv + SiLU, the scan, the gated group norm, out_proj.
func.func @mamba(%x: tensor<?x?x8xf32>, %in: tensor<48x8xf32>, %cw: tensor<28x4xf32>,
                 %cb: tensor<28xf32>, %dtb: tensor<4xf32>, %alog: tensor<4xf32>, %d: tensor<4xf32>,
                 %nw: tensor<16xf32>, %out: tensor<8x16xf32>) -> tensor<?x?x8xf32> {
  %y = elastic.mamba2 %x, %in, %cw, %cb, %dtb, %alog, %d, %nw, %out
      {num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64}
      : (tensor<?x?x8xf32>, tensor<48x8xf32>, tensor<28x4xf32>, tensor<28xf32>, tensor<4xf32>,
         tensor<4xf32>, tensor<4xf32>, tensor<16xf32>, tensor<8x16xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}
