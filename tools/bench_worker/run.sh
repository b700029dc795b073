#!/usr/bin/env bash
# run.sh - the cost of the worker process boundary, measured in one run:
# the same jobs through a glmserve-worker over ipc:// and through an engine
# in process (bench_worker --inproc), alternating, at concurrency 1 and 64.
#
#   tools/bench_worker/run.sh BUILD_DIR [MODEL_DIR] [ROUNDS]
#
# BUILD_DIR: a Release build with glmserve-worker and bench_worker.
# MODEL_DIR: default the tiny fixture model. Prints one table per round.
# WORKER_ARGS: extra glmserve-worker flags, e.g. "--stream-interval-us 0"
# (one frame per step instead of the default coalescing). PER_STEP=1 runs
# a third path: the worker with --stream-interval-us 0, in the same rounds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(cd "${1:?usage: run.sh BUILD_DIR [MODEL_DIR] [ROUNDS]}" && pwd)"
model="${2:-$root/tests/fixtures/tiny-glm4v}"
rounds="${3:-2}"
img="$root/tests/fixtures/ref/images/small_100x140.jpg"
tmp="$(mktemp -d)"
wpid=
trap 'kill "$wpid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
# Both sides start cold: a fresh worker (empty prefix and encoder caches)
# for every measurement, as bench_worker --inproc makes a fresh engine.
bench() {
    "$build/tools/bench_worker/bench_worker" --inproc --model "$model" --kv-memory 512 \
        --threads "${THREADS:-0}" "$@" |
        tail -n +3
    "$build/worker/glmserve-worker" --model "$model" --listen "ipc://$tmp/w.sock" \
        --kv-memory 512 --max-model-len 8192 --log-level warn --threads "${THREADS:-0}" \
        ${WORKER_ARGS:-} &
    wpid=$!
    "$build/tools/bench_worker/bench_worker" --url "ipc://$tmp/w.sock" "$@" | tail -n +3
    kill "$wpid"
    wait "$wpid" || true
    [ -n "${PER_STEP:-}" ] || return 0
    # PER_STEP=1: also a worker sending one frame per step (no coalescing).
    "$build/worker/glmserve-worker" --model "$model" --listen "ipc://$tmp/w.sock" \
        --kv-memory 512 --max-model-len 8192 --log-level warn --threads "${THREADS:-0}" \
        --stream-interval-us 0 &
    wpid=$!
    "$build/tools/bench_worker/bench_worker" --url "ipc://$tmp/w.sock" "$@" | tail -n +3 |
        sed 's/worker (IPC)/worker (IPC, a frame per step)/'
    kill "$wpid"
    wait "$wpid" || true
}
echo "| path | concurrency | jobs ok / refused / failed | output tok/s | client TTFT p50 / p99 (ms) | worker TTFT p50 (ms) |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
    for kind in text image; do
        extra=()
        [ "$kind" = image ] && extra=(--image "$img")
        echo "| round $r, $kind | | | | | |"
        bench --levels 1 --requests 32 --max-tokens 32 "${extra[@]}"
        bench --levels 64 --requests 128 --max-tokens 32 "${extra[@]}"
    done
done
