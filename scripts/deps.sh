#!/usr/bin/env bash
# Installs the Debian packages Nestor builds and tests with (DESIGN.md, "Dependencies").
# Idempotent: does nothing when every package is present; runs `apt-get update` once, only when
# something is missing. The CUDA 13 toolkit (NVRTC) is not a Debian package: it is used from
# /usr/local/cuda when present and the CUDA parts are skipped with a message when not.
set -euo pipefail

packages=(
  # MLIR / LLVM 22 (lit and FileCheck come with llvm-22-tools)
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools
  # build
  cmake ninja-build ccache lld g++ make python3 git clang-format
  # spec format
  protobuf-compiler libprotobuf-dev
  # tests and benchmarks
  googletest libgtest-dev libbenchmark-dev
  # libraries used instead of hand-written code
  libopenblas-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  # the program file's checksum (zlib's crc32)
  zlib1g-dev
  # fuzzing and the sanitizer build (scripts/fuzz.sh): clang with libFuzzer, ASan and UBSan
  clang libclang-rt-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "deps.sh: done" >&2
