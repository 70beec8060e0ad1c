// An op's operands stay allocated while it runs: its result never overlaps them.
func.func @no_overlap(%x: tensor<1024xf32>) -> tensor<1024xf32> {
  %a = kernel.add %x, %x : tensor<1024xf32>
  %b = kernel.add %a, %a : tensor<1024xf32>
  return %b : tensor<1024xf32>
}
