module {
  func.func @a(%x: tensor<3xf32>) { return }
  func.func @b(%x: tensor<3xf64>) { return }
}
