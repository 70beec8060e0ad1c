func.func @t(%s: tensor<i64>) {
  %g = elastic.gumbel_noise %s {stream = -1 : i64} : tensor<i64> -> tensor<3xf32>
  return
}
