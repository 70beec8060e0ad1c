func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>, %dl: tensor<?x?x256xf32>) {
  %d:2 = elastic.lm_head_grad %x, %w, %dl : (tensor<?x?x64xf32>, tensor<256x64xf32>, tensor<?x?x256xf32>) -> (tensor<?x?x64xf32>, tensor<64x256xf32>)
  return
}
