#!/usr/bin/env bash
# demo.sh — builds fedkd (Release) and runs the default job: `fedkd simulate`
# with no arguments (teacher, soft labels, federated rounds, the comparison
# table and an HTML report in runs/default/). Extra arguments go to simulate.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs" --target fedkd fedkd-client >/dev/null
exec ./build/fedkd simulate "$@"
