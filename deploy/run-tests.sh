#!/usr/bin/env bash
# run-tests.sh — builds fedkd and runs the whole test suite:
#   1. Release build, every cmocka test through ctest;
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build, the same tests;
#   3. each libFuzzer target for a short fixed time (when clang is present).
# Exits non-zero on any failure. Build folders: build/, build-asan/, build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

step() { printf '\n=== %s\n' "$*"; }

step "Release build and tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

step "Sanitizer build (ASan + UBSan) and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFKD_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE slow

if command -v clang >/dev/null 2>&1; then
  step "Fuzz targets (libFuzzer, ${FKD_FUZZ_SECONDS:-20} s each)"
  cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DFKD_FUZZ=ON \
    -DFKD_BUILD_TESTS=OFF >/dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzzers
  shopt -s nullglob
  for fuzzer in build-fuzz/fuzz_*; do
    name=$(basename "$fuzzer")
    corpus="build-fuzz/corpus-$name"
    mkdir -p "$corpus"
    seeds="tests/fuzz/seeds/$name"
    [ -d "$seeds" ] || seeds=""
    echo "--- $name"
    "$fuzzer" -max_total_time="${FKD_FUZZ_SECONDS:-20}" -seed=1 -print_final_stats=1 \
      "$corpus" $seeds 2>&1 | grep -E "stat::number_of_executed_units|ERROR|SUMMARY" || true
    # libFuzzer exits non-zero on a crash; PIPESTATUS keeps that exit code.
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzzer $name found a crash" >&2; exit 1; }
  done
else
  echo "clang not found: fuzz targets skipped (deploy/install-deps.sh installs it)"
fi
step "all tests passed"
