#!/usr/bin/env bash
# Fails when a tracked C++ file is not clang-format clean (LLVM style, .clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.cpp' '*.h' | grep -v '^build')
[ -n "$files" ] || exit 0
clang-format --dry-run --Werror $files
echo "clang-format: $(echo "$files" | wc -l) files clean"
