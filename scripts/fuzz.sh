#!/usr/bin/env bash
# The sanitizer build: clang with ASan + UBSan (+ libFuzzer coverage) in its own build folder.
# It runs every unit test binary clean, then a short train -> slice -> generate -> build -> run
# of the nestor tool itself (the sanitized nestor, and the executable it builds from the
# sanitized nestor-run), then the libFuzzer targets (fuzz/),
# each for SECONDS (default 30): first every regression input
# (fuzz/regressions/TARGET, each once), then a run from the seed corpus (fuzz/corpus/TARGET,
# copied so the tree is not changed). A crash, a leak, a UB report, a timeout (10 s for one
# input) or an input over 2 GiB of memory fails the script; libFuzzer leaves the input in
# BUILD/fuzz-findings/TARGET, to be added to fuzz/regressions once fixed.
#   scripts/fuzz.sh [SECONDS] [BUILD]       (`make fuzz` runs 600 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=${2:-build-fuzz}
targets=(spec config safetensors json program ir)
# Every unit test binary (CudaTests and the host emulation of the CUDA kernels included; without
# a GPU, CudaTests' device cases skip with "no CUDA device").
tests=(SpecTests CheckpointTests HuggingFaceTests DataTests ReportTests ImportTests PermuteTests
       ReferenceTests SSDTests GradientTests ExecutorTests CpuKernelTests ProgramTests DecodeTests
       TrainTests BuildTests CudaTests CudaEmitTests DeviceProgramTests)

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ is not installed (scripts/deps.sh installs it)" >&2
  exit 1
fi
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DNESTOR_FUZZ=ON -DNESTOR_BUILD_TESTS=ON >/dev/null
fi
cmake --build "$build" --target "${targets[@]/#/fuzz-}" "${tests[@]}" nestor nestor-run

# allow_user_poisoning=0: LLVM's BumpPtrAllocator (an inline template in llvm/Support/
# Allocator.h) poisons its slabs when the including file is built with ASan, so the slabs that
# instrumented Nestor code creates are poisoned, and Debian's uninstrumented libMLIR, allocating
# from them without unpoisoning, reads "poisoned" memory: a false use-after-poison in the MLIR
# parser (fuzz/regressions/ir). Nothing of Nestor's poisons memory by hand; container-overflow
# and heap checks are unaffected.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allow_user_poisoning=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
status=0
for t in "${tests[@]}"; do
  if "$build/bin/$t" >"$build/$t.sanitize.log" 2>&1; then
    echo "fuzz.sh: $t under ASan + UBSan: $(grep -o 'PASSED.*' "$build/$t.sanitize.log" | tail -1)"
  else
    echo "fuzz.sh: $t under ASan + UBSan: FAILED (log: $build/$t.sanitize.log)" >&2
    grep -m3 -E "ERROR|runtime error|FAILED" "$build/$t.sanitize.log" >&2 || true
    status=1
  fi
done

# The tool end to end, on the smallest training spec: every command's own code (spec, compile,
# the CPU executor, checkpoints, slicing, decoding, prefill in chunks, the built executable).
e2e="$build/sanitize-e2e"
rm -rf "$e2e" && mkdir -p "$e2e"
nestor="$build/bin/nestor"
prompt=$(printf '1+2=%.0s' $(seq 150)) # 600 characters: prefill in chunks of 256 and 16
if "$nestor" train test/lit/tools/Inputs/train-mini.pbtxt --out "$e2e/run" >"$e2e/log" 2>&1 &&
   "$nestor" slice "$e2e/run" --budget half --out "$e2e/half" >>"$e2e/log" 2>&1 &&
   "$nestor" generate "$e2e/run" --budgets full,half --prompt "12+7=" --max-tokens 8 \
     >>"$e2e/log" 2>&1 &&
   "$nestor" generate "$e2e/half" --prompt "$prompt" --max-tokens 8 >>"$e2e/log" 2>&1 &&
   "$nestor" build "$e2e/run" --budget half -o "$e2e/half-bin" --context 640 >>"$e2e/log" 2>&1 &&
   "$e2e/half-bin" --prompt "$prompt" --max-tokens 8 >>"$e2e/log" 2>&1; then
  echo "fuzz.sh: nestor train, slice, generate, build and the built executable under ASan + UBSan: clean"
else
  echo "fuzz.sh: nestor end to end under ASan + UBSan: FAILED (log: $e2e/log)" >&2
  grep -m3 -E "ERROR|runtime error|error:" "$e2e/log" >&2 || true
  status=1
fi

for t in "${targets[@]}"; do
  exe="$build/bin/fuzz-$t"
  findings="$build/fuzz-findings/$t"
  corpus="$build/fuzz-corpus/$t"
  mkdir -p "$findings" "$corpus"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    if ! "$exe" -rss_limit_mb=2048 -timeout=10 fuzz/regressions/"$t"/* >"$findings/regressions.log" 2>&1; then
      echo "fuzz.sh: $t: a regression input fails again (log: $findings/regressions.log)" >&2
      status=1
      continue
    fi
  fi
  if "$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="$findings/" "$corpus" >"$findings/run.log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$findings/run.log" | tail -1)
    echo "fuzz.sh: $t: ${runs#Done } in ${seconds} s, no crash"
  else
    echo "fuzz.sh: $t: FAILED (log: $findings/run.log; input in $findings/)" >&2
    grep -m3 -E "ERROR|SUMMARY" "$findings/run.log" >&2 || true
    status=1
  fi
done
exit $status
