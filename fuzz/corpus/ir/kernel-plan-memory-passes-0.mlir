// Buffers are reused once their value is dead: %a (40 bytes -> 64) dies at %b's op, so %c
// takes its place; %b lives until the return. Peak: two 64-byte buffers.
func.func @reuse(%x: tensor<10xf32>, %y: tensor<10xf32>) -> (tensor<10xf32>, tensor<10xf32>) {
  %a = kernel.add %x, %y : tensor<10xf32>
  %b = kernel.add %a, %y : tensor<10xf32>
  %c = kernel.add %b, %x : tensor<10xf32>
  return %b, %c : tensor<10xf32>, tensor<10xf32>
}
