func.func @t(%w: tensor<4xf32> {elastic.param = 3 : i64}) {
  return
}
