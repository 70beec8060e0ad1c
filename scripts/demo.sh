#!/usr/bin/env bash
# `make demo`: the main job. Trains the tiny example spec end to end on the CPU (parent,
# importance, two elastic stages, evaluation) and prints the table of the parent and every
# nested budget next to the same sub-networks cut from the parent without elastic training;
# the run folder holds the checkpoints, metrics and report.html. Before that, a short look at
# the compiler on the full-size specs.
set -euo pipefail
build=${1:-build}
nestor="$build/bin/nestor"
specs=examples/specs

echo "== nestor params: the Nemotron Nano 12B v2 parent, and the tiny hybrid"
"$nestor" params "$specs/nemotron-nano-12b-v2.pbtxt" | sed -n '1,12p'
"$nestor" params "$specs/tiny-hybrid.pbtxt" | sed -n '1,12p'
echo
echo "== nestor bench: the tiny spec's train step per budget (hard masks, prefix-dense)"
"$nestor" bench "$specs/tiny-hybrid.pbtxt" --steps 2
echo
run="$build/demo/tiny-run"
rm -rf "$run"
echo "== nestor train $specs/tiny-hybrid.pbtxt --out $run"
start=$(date +%s)
"$nestor" train "$specs/tiny-hybrid.pbtxt" --out "$run"
echo "(trained in $(( $(date +%s) - start )) s; open $run/report.html)"
