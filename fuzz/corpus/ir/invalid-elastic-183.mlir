// Weights have the spec's static sizes: a dynamic extent is a verifier error, so no pass
// (elastic-slice, convert-elastic-to-kernel) ever sees one.
func.func @t(%x: tensor<?x?x64xf32>, %up: tensor<?x64xf32> {elastic.param = "backbone.layers.0.mixer.up_proj.weight"}) {
  return
}
