#!/usr/bin/env bash
# run.sh - glmserve against the reference server (FastAPI + transformers,
# tools/reference_server) on the same model, in one run: both servers up at
# once, and at each concurrency level tools/glmserve-bench loads glmserve
# over SSE, glmserve over its WebSocket (requests of its own: a second
# request with the same image would be served from glmserve's caches), then
# the reference over SSE with the same requests as glmserve's SSE run (same
# seed, same images and questions; ignore_eos so every answer has
# MAX_TOKENS tokens). Then the comparison: the tables, the ratios glmserve /
# reference, the gateway's share (its dispatch and relay histograms) and
# the chart.
#
#   tools/bench_serving/run.sh BUILD_DIR [MODEL_DIR]
#
# BUILD_DIR: a Release build with glmserve and glmserve-worker. Environment:
#   PYTHON      python with the tool's packages (default build/venv/bin/python)
#   REF_PYTHON  python with the reference server's (default build/refvenv/bin/python;
#               tools/reference_server/README.md says how to make it)
#   LEVELS      concurrency levels (default "1 4 16 64")
#   MAX_TOKENS  output tokens per request (default 32)
#   THREADS     compute threads of each server: glmserve --threads and torch's
#               (default 1: on a small shared machine two spinning threads per
#               server collapse whenever a core is taken; THREADS=$(nproc) on a
#               dedicated one)
#   OUT         where the JSON files and chart.png go (default build/bench_serving)
# The rest of the environment reaches both servers (OPENBLAS_CORETYPE=SkylakeX,
# say, picks glmserve's OpenBLAS kernels on a CPU its detection does not know).
# Level c sends max(16, 2c) requests to each server; each level has its own
# requests (--first-request), so no level reuses another's images.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(cd "${1:?usage: run.sh BUILD_DIR [MODEL_DIR]}" && pwd)"
model="$(cd "${2:-$root/tests/fixtures/tiny-glm4v}" && pwd)"
py="${PYTHON:-$root/build/venv/bin/python}"
refpy="${REF_PYTHON:-$root/build/refvenv/bin/python}"
levels="${LEVELS:-1 4 16 64}"
max_tokens="${MAX_TOKENS:-32}"
threads="${THREADS:-1}"
out="${OUT:-$root/build/bench_serving}"
gport=$((20000 + RANDOM % 20000))
rport=$((gport + 1))
mkdir -p "$out"
tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

wait_up() { # URL PID LOG
    for _ in $(seq 600); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }
        sleep 0.2
    done
    echo "run.sh: $1 not up in 120 s" >&2
    exit 1
}

"$build/gateway/glmserve" --model "$model" --port "$gport" --workers 1 --gateways 1 \
    --threads "$threads" --kv-memory 512 --max-model-len 8192 --run-dir "$tmp/run" >"$out/glmserve.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$gport/ready" "${pids[-1]}" "$out/glmserve.log"
"$refpy" "$root/tools/reference_server/server.py" --model "$model" --port "$rport" \
    --threads "$threads" >"$out/reference.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$rport/health" "${pids[-1]}" "$out/reference.log"

bench() { # URL LABEL C FIRST N JSON [ARGS...]
    local url="$1" label="$2" c="$3" first="$4" n="$5" json="$6"
    shift 6
    "$py" "$root/tools/glmserve-bench" --base-url "$url" --label "$label" --concurrency "$c" \
        --num-requests "$n" --first-request "$first" --max-tokens "$max_tokens" --ignore-eos \
        --seed 1 --quiet --json "$json" "$@" >"$json.txt" 2>&1 || {
        cat "$json.txt" >&2
        exit 1
    }
    echo "$label: $(grep '^| concurrency' "$json.txt")"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "; threads per server $threads;" \
    "OPENBLAS_CORETYPE ${OPENBLAS_CORETYPE:-unset};" \
    "max_tokens $max_tokens; $(date -u +%Y-%m-%dT%H:%MZ)"
first=0
gjson=() rjson=() wjson=()
for c in $levels; do
    n=$((2 * c > 16 ? 2 * c : 16))
    bench "http://127.0.0.1:$gport" glmserve "$c" "$first" "$n" "$out/glmserve-c$c.json"
    bench "http://127.0.0.1:$gport" "glmserve (WebSocket)" "$c" "$((first + 100000))" "$n" \
        "$out/glmserve-ws-c$c.json" --mode ws
    bench "http://127.0.0.1:$rport" reference "$c" "$first" "$n" "$out/reference-c$c.json"
    gjson+=("$out/glmserve-c$c.json")
    wjson+=("$out/glmserve-ws-c$c.json")
    rjson+=("$out/reference-c$c.json")
    first=$((first + n))
done

join() { local IFS=,; echo "$*"; }
echo
"$py" "$root/tools/glmserve-bench" --compare "$(join "${gjson[@]}")" "$(join "${rjson[@]}")" \
    --labels glmserve,reference --plot "$out/chart.png"
echo
echo "glmserve over the WebSocket (each level right after SSE, requests of its own):"
echo
"$py" "$root/tools/glmserve-bench" --compare "$(join "${wjson[@]}")" "$(join "${gjson[@]}")" \
    --labels "glmserve WS,glmserve SSE" | sed '/gateway.s share/,$d'
echo
echo "chart: $out/chart.png"
