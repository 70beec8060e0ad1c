#!/usr/bin/env bash
# `make demo`: the main job on the example specs. Today it counts parameters, compiles each
# example spec to elastic IR and benchmarks the tiny spec's train step per budget on the CPU; as
# the training issue lands it trains the tiny spec end to end.
set -euo pipefail
build=${1:-build}
nestor="$build/bin/nestor"
specs=examples/specs

echo "== nestor params: the Nemotron Nano 12B v2 parent and its elastic choices"
"$nestor" params "$specs/nemotron-nano-12b-v2.pbtxt"
echo
echo "== nestor params: Nemotron Nano 9B v2"
"$nestor" params "$specs/nemotron-nano-9b-v2.pbtxt"
echo
echo "== nestor params: the tiny hybrid that trains on two CPU cores"
"$nestor" params "$specs/tiny-hybrid.pbtxt"
echo
for spec in "$specs"/*.pbtxt; do
  out="$build/demo/$(basename "$spec" .pbtxt).mlir"
  mkdir -p "$build/demo"
  "$nestor" compile "$spec" --emit mlir -o "$out"
  printf '== nestor compile %s --emit mlir: %s ops, written to %s\n' \
    "$spec" "$(grep -c ' = elastic\.' "$out")" "$out"
done
echo
echo "== the elastic IR of the tiny spec (@elastic_model): routers, masks, the first layer"
sed -n '/func.func @elastic_model/,$p' "$build/demo/tiny-hybrid.mlir" |
  grep -m 14 -E 'elastic\.(one_hot|router|gumbel_softmax|prefix_mask|layer_keep|embed|rmsnorm|mamba2|depth_gate)' |
  cut -c1-150
echo
echo "== nestor bench: the tiny spec's train step on the CPU backend, per budget (hard masks, prefix-dense)"
"$nestor" bench "$specs/tiny-hybrid.pbtxt" --steps 3
