// Free blocks coalesce: after two neighbours die, a value as big as both fits at offset 0;
// the peak is the three 64-byte values live together.
func.func @coalesce(%x: tensor<16xf32>, %z: tensor<32xf32>) -> tensor<32xf32> {
  %a = kernel.add %x, %x : tensor<16xf32>
  %b = kernel.add %x, %x : tensor<16xf32>
  %c = kernel.add %a, %b : tensor<16xf32>
  %d = kernel.mul %z, %z : tensor<32xf32>
  return %d : tensor<32xf32>
}
