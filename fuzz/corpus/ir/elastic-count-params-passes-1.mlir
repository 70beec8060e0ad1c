// A function without parameters is left alone.
func.func @helper(%x: tensor<4xf32>) {
  return
}
