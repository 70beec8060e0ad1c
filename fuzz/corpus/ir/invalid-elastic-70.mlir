func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<256x64xf32>) {
  %y = elastic.lm_head %x, %w : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x?x256xf64>
  return
}
