// A mask value in a non-mask operand position is an ODS operand-type error.
func.func @t(%x: tensor<?x?x64xf32>, %m: !elastic.mask<hidden, 64>) {
  %y = "elastic.lm_head"(%x, %m) : (tensor<?x?x64xf32>, !elastic.mask<hidden, 64>) -> tensor<?x?x256xf32>
  return
}
