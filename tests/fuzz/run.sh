#!/usr/bin/env bash
# run.sh - builds the libFuzzer targets in their own folder (clang,
# -DGS_FUZZ=ON) and runs each for N seconds (default 20).
#
#   tests/fuzz/run.sh [SECONDS]
#
# Environment: GS_FUZZ_BUILD sets the build folder (default build/fuzz);
# JOBS sets build parallelism (default 2). Exits non-zero on a finding;
# the crashing input is left in the build folder (crash-*).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
secs="${1:-20}"
build="${GS_FUZZ_BUILD:-build/fuzz}"
jobs="${JOBS:-2}"

CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGS_FUZZ=ON \
    -DGS_CUDA=OFF -DGS_SANITIZE=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target fuzz_ipc_msg gen_ipc_corpus

seeds="$build/tests/fuzz/seeds/ipc_msg"
corpus="$build/tests/fuzz/corpus/ipc_msg"
mkdir -p "$seeds" "$corpus"
"$build/tests/fuzz/gen_ipc_corpus" "$seeds"

echo "fuzz_ipc_msg: ${secs}s"
cd "$build"
"tests/fuzz/fuzz_ipc_msg" -max_total_time="$secs" -max_len=4096 -timeout=10 \
    -print_final_stats=1 "tests/fuzz/corpus/ipc_msg" "tests/fuzz/seeds/ipc_msg"
