// ODS-generated constraints, a few representative ones: operand rank, operand element type,
// result rank, attribute constraints, a missing attribute, AllTypesMatch (generic form).
func.func @t(%x: tensor<?x?x64xf32>, %w: tensor<64x64xf32>) {
  %y = elastic.rmsnorm %x, %w : (tensor<?x?x64xf32>, tensor<64x64xf32>) -> tensor<?x?x64xf32>
  return
}
