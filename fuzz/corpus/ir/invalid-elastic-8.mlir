// A mask type is also checked where it is written as an op's result type.
func.func @t(%p: tensor<2xf32>) {
  %m = elastic.prefix_mask %p {choices = array<i64: 64, 32>, mode = #elastic.mask_mode<soft>} : tensor<2xf32> -> !elastic.mask<hidden, 64, groups = 2>
  return
}
