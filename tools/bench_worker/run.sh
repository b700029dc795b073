#!/usr/bin/env bash
# run.sh - the cost of the worker process boundary, measured in one run:
# the same jobs through a glmserve-worker over ipc:// and through an engine
# in process, at concurrency 1 and 64. Each measurement is one bench_worker
# run with both paths (--url and --inproc), which alternates blocks of jobs
# between them, so that the machine's slow and fast spells fall on both.
#
#   tools/bench_worker/run.sh BUILD_DIR [MODEL_DIR] [ROUNDS]
#
# BUILD_DIR: a Release build with glmserve-worker and bench_worker.
# MODEL_DIR: default the tiny fixture model. Prints one table per round.
# WORKER_ARGS: extra glmserve-worker flags, e.g. "--stream-interval-us 0"
# (one frame per step instead of the default coalescing). PER_STEP=1 also
# measures a worker with --stream-interval-us 0, in the same rounds.
# REQUESTS: jobs per path and level (default 128).
# RATES: e.g. "300 600": also, per kind of prompt, open-loop runs at those
# arrival rates (jobs/s, Poisson; bench_worker --rate), both paths under
# the same arrivals.
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
# for every measurement, as bench_worker makes a fresh in-process engine.
# $1: a label for the worker rows; the rest: glmserve-worker flags.
both() {
    local label="$1"
    shift
    "$build/worker/glmserve-worker" --model "$model" --listen "ipc://$tmp/w.sock" \
        --kv-memory 512 --max-model-len 8192 --log-level warn --threads "${THREADS:-0}" "$@" &
    wpid=$!
    "$build/tools/bench_worker/bench_worker" --url "ipc://$tmp/w.sock" --inproc --model "$model" \
        --kv-memory 512 --threads "${THREADS:-0}" "${args[@]}" | tail -n +3 |
        sed "s/worker (IPC)/$label/"
    kill "$wpid"
    wait "$wpid" || true
}
echo "| path | concurrency | jobs ok / refused / failed | output tok/s | client TTFT p50 / p99 (ms) | worker TTFT p50 (ms) | job p50: client / worker (ms) |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
    for kind in text image; do
        echo "| round $r, $kind | | | | | | |"
        for level in 1 64; do
            args=(--levels "$level" --requests "${REQUESTS:-128}" --max-tokens 32)
            [ "$kind" = image ] && args+=(--image "$img")
            # shellcheck disable=SC2086
            both "worker (IPC)" ${WORKER_ARGS:-}
            [ -n "${PER_STEP:-}" ] || continue
            both "worker (IPC, a frame per step)" --stream-interval-us 0
        done
        for rate in ${RATES:-}; do
            args=(--rate "$rate" --requests "${REQUESTS:-128}" --max-tokens 32)
            [ "$kind" = image ] && args+=(--image "$img")
            # shellcheck disable=SC2086
            both "worker (IPC)" ${WORKER_ARGS:-}
        done
    done
done
