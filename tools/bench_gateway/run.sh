#!/usr/bin/env bash
# run.sh - the gateway's cost per streamed request, measured in one run:
# one glmserve (one gateway, one worker) and, alternating, the same jobs
# sent to its worker directly over IPC (bench_worker --url ipc://..., which
# dials the worker's socket like a second gateway), through the gateway as
# SSE (bench_gateway --mode sse) and through its WebSocket (--mode ws), at
# concurrency 1 (32 requests) and 64 (128 requests), 32 output tokens,
# temperature 0.
#
#   tools/bench_gateway/run.sh BUILD_DIR [MODEL_DIR]
#
# BUILD_DIR: a Release build with glmserve, glmserve-worker, bench_worker
# and bench_gateway. ROUNDS (default 3) and PORT may be set in the
# environment. Every (round, path, concurrency) has its own prompts (a tag
# after the "Request i. " prefix), so no path reuses another's prefix
# cache entries; the order of the paths rotates each round. Prints every
# row, then the medians per (path, concurrency) and the gateway's added
# TTFT p50 and tokens/s ratio against the worker-level row.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$(cd "${1:?usage: run.sh BUILD_DIR [MODEL_DIR]}" && pwd)"
model="${2:-$root/tests/fixtures/tiny-glm4v}"
rounds="${ROUNDS:-3}"
port="${PORT:-$((20000 + RANDOM % 20000))}"
prompt="Describe what you see in detail."
tmp="$(mktemp -d)"
gpid=
cleanup() {
    if [ -n "$gpid" ]; then
        kill "$gpid" 2>/dev/null || true
        wait "$gpid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$build/gateway/glmserve" --model "$model" --port "$port" --workers 1 --kv-memory 512 \
    --max-model-len 8192 --run-dir "$tmp/run" >"$tmp/glmserve.log" 2>&1 &
gpid=$!
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    kill -0 "$gpid" 2>/dev/null || { cat "$tmp/glmserve.log" >&2; exit 1; }
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/ready" >/dev/null || {
    echo "run.sh: glmserve not ready in 120 s" >&2
    exit 1
}

# One measurement: appends "path;C;ok;failed;tok/s;p50;p99" to $tmp/rows.
# bench_worker's row (ok / refused / failed) counts refused as failed.
bench() {
    local path="$1" c="$2" n="$3" r="$4" out
    case "$path" in
    ipc)
        out="$("$build/tools/bench_worker/bench_worker" --url "ipc://$tmp/run/worker-0.sock" \
            --levels "$c" --requests "$n" --max-tokens 32 --temperature 0 \
            --prompt "[r$r ipc c$c] $prompt")" || echo "run.sh: bench_worker exited $?" >&2
        ;;
    *)
        out="$("$build/tools/bench_gateway/bench_gateway" --url "http://127.0.0.1:$port" \
            --mode "$path" --levels "$c" --requests "$n" --max-tokens 32 --temperature 0 \
            --tag "[r$r $path c$c] " --prompt "$prompt")" ||
            echo "run.sh: bench_gateway exited $?" >&2
        ;;
    esac
    echo "$out" | awk -F'|' -v p="$path" -v r="$r" '
        NR > 2 && NF > 5 {
            n = split($4, j, "/"); split($6, t, "/")
            failed = n == 3 ? j[2] + j[3] : j[2]
            printf "%s;%d;%d;%d;%s;%s;%s\n", p, $3, j[1], failed, $5 + 0, t[1] + 0, t[2] + 0
            printf "| round %s, %s | %d | %d / %d | %s | %s / %s |\n", r, p, $3, j[1], failed,
                $5 + 0, t[1] + 0, t[2] + 0 > "/dev/stderr"
        }' >>"$tmp/rows" 2>>"$tmp/table"
}

paths=(ipc sse ws)
for r in $(seq "$rounds"); do
    for c in 1 64; do
        n=$([ "$c" = 1 ] && echo 32 || echo 128)
        for k in 0 1 2; do
            bench "${paths[$(((k + r - 1) % 3))]}" "$c" "$n" "$r"
        done
    done
done

name() {
    case "$1" in
    ipc) echo "worker (IPC, bench_worker)" ;;
    sse) echo "gateway, SSE" ;;
    ws) echo "gateway, WebSocket" ;;
    esac
}
echo "| path | concurrency | jobs ok / failed | output tok/s | TTFT p50 / p99 (ms) |"
echo "|---|---|---|---|---|"
cat "$tmp/table"
# The median of column $3 of the rows of path $1 at concurrency $2.
med() {
    awk -F';' -v p="$1" -v c="$2" -v k="$3" '$1 == p && $2 == c { print $k }' "$tmp/rows" |
        sort -g | awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : 0 }'
}
sum() {
    awk -F';' -v p="$1" -v c="$2" -v k="$3" '$1 == p && $2 == c { s += $k } END { print s + 0 }' \
        "$tmp/rows"
}
echo
echo "Medians of $rounds rounds:"
echo
echo "| path | concurrency | jobs ok / failed (all rounds) | output tok/s | TTFT p50 / p99 (ms) | added TTFT p50 (ms) | tok/s vs worker |"
echo "|---|---|---|---|---|---|---|"
for c in 1 64; do
    wt=$(med ipc "$c" 5)
    w50=$(med ipc "$c" 6)
    for p in ipc sse ws; do
        tps=$(med "$p" "$c" 5)
        p50=$(med "$p" "$c" 6)
        p99=$(med "$p" "$c" 7)
        if [ "$p" = ipc ]; then
            add="-"
            ratio="-"
        else
            add=$(awk -v a="$p50" -v b="$w50" 'BEGIN { printf "%+.2f", a - b }')
            ratio=$(awk -v a="$tps" -v b="$wt" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
        fi
        printf "| %s | %s | %s / %s | %s | %s / %s | %s | %s |\n" "$(name "$p")" "$c" \
            "$(sum "$p" "$c" 3)" "$(sum "$p" "$c" 4)" "$tps" "$p50" "$p99" "$add" "$ratio"
    done
done
