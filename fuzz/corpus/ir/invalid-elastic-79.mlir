func.func @t(%s: tensor<i64>) {
  %g = elastic.gumbel_noise %s {stream = 0 : i64} : tensor<i64> -> tensor<?xf32>
  return
}
