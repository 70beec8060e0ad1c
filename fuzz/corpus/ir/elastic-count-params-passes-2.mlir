func.func @dynamic(%w: tensor<?x4xf32> {elastic.param = "w"}) {
  return
}
