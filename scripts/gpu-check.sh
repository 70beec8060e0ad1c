#!/usr/bin/env bash
# The CUDA checks, in one go, for a machine with an NVIDIA GPU and the toolchain CI uses (run
# scripts/deps.sh first where packages can be installed). Builds Nestor into $BUILD_DIR (default
# build-gpu), then:
#   1. nestor devices: the GPU, its architecture, NVRTC's version;
#   2. every CUDA test (ctest -L cuda) with NESTOR_CUDA_TESTS_ON_GPU=1: each emitted kernel
#      against its CPU kernel at awkward sizes, run on the GPU instead of the host emulation;
#      the NVRTC/PTX and cache tests; the device tests (copy bandwidth, masked norm, AXPY); a
#      whole train step at each budget, a training session and greedy decoding on the GPU
#      against the CPU;
#   3. the lit tests that need a GPU (train-cuda.test: nestor train/generate/bench --device cuda);
#   4. nestor bench --device cuda (the train step on the GPU; decoding stays on the CPU until the
#      runtime has its CUDA driver) and the CPU bench of the tiny spec, for the ratios.
# Writes everything to $OUT (default: $BUILD_DIR/gpu-check) as well as the terminal; exits
# non-zero if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
OUT=${OUT:-$BUILD_DIR/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
status=0

echo "== build ($BUILD_DIR)"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD_DIR" -j"$(nproc)"
NESTOR="$BUILD_DIR/bin/nestor"

echo "== devices"
"$NESTOR" devices || { echo "no GPU here: the GPU checks cannot run"; exit 1; }

echo "== ctest -L cuda (kernels on the GPU)"
NESTOR_CUDA_TESTS_ON_GPU=1 ctest --test-dir "$BUILD_DIR" -L cuda -j"$(nproc)" \
  --output-on-failure || status=$?

echo "== device tests, verbose (timings)"
NESTOR_SRC=$PWD "$BUILD_DIR/bin/CudaTests" --gtest_filter='CudaDeviceTest.*' || status=$?
NESTOR_SRC=$PWD "$BUILD_DIR/bin/DeviceProgramTests" --gtest_filter='CudaDeviceProgramTest.*' ||
  status=$?

echo "== lit tests that need a GPU"
/usr/lib/llvm-22/bin/lit -v "$BUILD_DIR/test" --filter 'cuda' || status=$?

echo "== nestor bench, CUDA then CPU"
"$NESTOR" bench examples/specs/tiny-hybrid.pbtxt --steps 5 --device cuda --decode 200 ||
  status=$?
OMP_WAIT_POLICY=passive "$NESTOR" bench examples/specs/tiny-hybrid.pbtxt --steps 3 || status=$?

echo "== done (status $status); log in $OUT/gpu-check.log"
exit $status
