#!/usr/bin/env bash
# The CUDA checks, in one go, for a machine with an NVIDIA GPU (and the same toolchain as CI:
# run scripts/deps.sh first where packages can be installed). Builds Nestor into $BUILD_DIR
# (default build-gpu), then runs:
#   1. every CUDA test (ctest -L cuda): NVRTC compiles of every kernel for sm_80/sm_90 with PTX
#      checks, the emitted kernels against the CPU kernels under host emulation, the kernel
#      cache, and the device tests, which run here instead of skipping with "no CUDA device";
#   2. the device tests again, verbose, so their timings (device-to-device copy bandwidth) show;
#   3. nestor bench on the tiny spec (CPU: the CUDA executor, `--device cuda`, does not exist
#      yet; see README, "The CUDA backend").
# Writes everything to $OUT (default: $BUILD_DIR/gpu-check) as well as the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-$BUILD_DIR/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not found"

echo "== build ($BUILD_DIR)"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD_DIR" -j"$(nproc)"

echo "== ctest -L cuda"
status=0
ctest --test-dir "$BUILD_DIR" -L cuda -j"$(nproc)" --output-on-failure || status=$?
ctest --test-dir "$BUILD_DIR" -L cuda -N | tail -1
grep -c "Skipped" "$BUILD_DIR/Testing/Temporary/LastTest.log" >/dev/null 2>&1 &&
  echo "skipped: $(grep -o 'no CUDA device[^"]*' "$BUILD_DIR/Testing/Temporary/LastTest.log" | sort -u | head -3)"

echo "== device tests, verbose"
NESTOR_SRC=$PWD "$BUILD_DIR/bin/CudaTests" --gtest_filter='CudaDeviceTest.*' || status=$?

echo "== nestor bench (CPU)"
OMP_WAIT_POLICY=passive "$BUILD_DIR/bin/nestor" bench examples/specs/tiny-hybrid.pbtxt --steps 3 \
  --decode 100 --no-binaries || status=$?

echo "== done (status $status); log in $OUT/gpu-check.log"
exit $status
