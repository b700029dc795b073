#!/usr/bin/env bash
# run.sh - the gateway's HTTP path against nginx on the same static file.
#
#   tools/bench_http/run.sh BUILD_DIR [BUILD_DIR...] [-d SECONDS] [-t THREADS]
#                           [-c CONNECTIONS] [-f FILE]
#
# Builds nothing: each BUILD_DIR must hold gateway/glmserve and
# worker/glmserve-worker (a Release build for numbers worth quoting); more
# than one compares builds (before/after a change) in the same run.
# Starts one gateway per build (glmserve --gateways 1, one worker on the
# tiny fixture model; one at a time) serving static/, and one nginx (one worker process, its own
# config, pid file and logs in a temporary folder, listen 127.0.0.1:PORT)
# serving the same folder; runs wrk with the same duration, threads and
# connections against each (GET /FILE, keep-alive), each once after a 2 s
# warm-up, and prints a markdown table: requests/s, p50 and p99 latency, and
# gateway/nginx per build. Defaults: -d 10 -t 2 -c 64 -f README.md.
# Needs wrk, nginx and curl (deploy/install-deps.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 1 ] || { sed -n '2,18p' "$0"; exit 2; }
builds=()
dur=10 threads=2 conns=64 file=README.md
while [ $# -gt 0 ]; do
    case "$1" in
    -d) dur="$2"; shift 2 ;;
    -t) threads="$2"; shift 2 ;;
    -c) conns="$2"; shift 2 ;;
    -f) file="$2"; shift 2 ;;
    -*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    *) builds+=("$(cd "$1" && pwd)"); shift ;;
    esac
done
[ ${#builds[@]} -ge 1 ] || { echo "run.sh: no build folder" >&2; exit 2; }
for build in "${builds[@]}"; do
    for b in "$build/gateway/glmserve" "$build/worker/glmserve-worker"; do
        [ -x "$b" ] || { echo "run.sh: $b not built" >&2; exit 1; }
    done
done
for t in wrk nginx curl python3; do
    command -v "$t" >/dev/null || { echo "run.sh: $t not found" >&2; exit 1; }
done
static="$here/static"
[ -f "$static/$file" ] || { echo "run.sh: $static/$file does not exist" >&2; exit 1; }

tmp="$(mktemp -d)"
gs_pid="" ng_pid=""
stop_gateway() {
    [ -n "$gs_pid" ] && kill -TERM "$gs_pid" 2>/dev/null && wait "$gs_pid" 2>/dev/null || true
    gs_pid=""
}
cleanup() {
    stop_gateway
    [ -n "$ng_pid" ] && kill -QUIT "$ng_pid" 2>/dev/null && wait "$ng_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_url() { # url what
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: $2 did not answer $1" >&2
    return 1
}

# ---- nginx ---------------------------------------------------------------------------
ng_port="$(free_port)"
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    types { text/plain md txt; text/html html; }
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$ng_port;
        root $static;
    }
}
EOF
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
ng_pid=$!
wait_url "http://127.0.0.1:$ng_port/$file" nginx || { cat "$tmp/nginx/logs/error.log" >&2; exit 1; }

# ---- wrk --------------------------------------------------------------------------------
# One line per run: "requests/s p50_us p99_us non2xx errors".
cat >"$tmp/report.lua" <<'EOF'
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %.1f %d %d %d %d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50),
        latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
bench() { # url -> RESULT line fields
    wrk -t"$threads" -c"$conns" -d2s "$1" >/dev/null # warm-up
    wrk -t"$threads" -c"$conns" -d"${dur}s" --latency -s "$tmp/report.lua" "$1" |
        sed -n 's/^RESULT //p'
}
check() { # name bad err
    if [ "$2" != 0 ] || [ "$3" != 0 ]; then
        echo "run.sh: $1: $2 non-2xx answers, $3 socket errors" >&2
        exit 1
    fi
}
rows=()
for build in "${builds[@]}"; do
    gs_port="$(free_port)"
    "$build/gateway/glmserve" --model "$here/tests/fixtures/tiny-glm4v" --host 127.0.0.1 \
        --port "$gs_port" --gateways 1 --workers 1 --static-dir "$static" \
        --run-dir "$tmp/run" --pid-file "$tmp/glmserve.pid" --kv-memory 64 \
        --max-model-len 8192 >"$tmp/glmserve.log" 2>&1 &
    gs_pid=$!
    wait_url "http://127.0.0.1:$gs_port/$file" glmserve ||
        { tail -20 "$tmp/glmserve.log" >&2; exit 1; }
    cmp -s <(curl -fsS "http://127.0.0.1:$gs_port/$file") \
        <(curl -fsS "http://127.0.0.1:$ng_port/$file") ||
        { echo "run.sh: the gateway and nginx answer different bytes" >&2; exit 1; }
    read -r g_rps g_p50 g_p99 g_bad g_err < <(bench "http://127.0.0.1:$gs_port/$file")
    check "$(basename "$build")" "$g_bad" "$g_err"
    rows+=("$(basename "$build")" "$g_rps" "$g_p50" "$g_p99")
    stop_gateway
done
read -r n_rps n_p50 n_p99 n_bad n_err < <(bench "http://127.0.0.1:$ng_port/$file")
check nginx "$n_bad" "$n_err"

size="$(stat -c %s "$static/$file")"
echo "GET /$file ($size bytes), wrk -t$threads -c$conns -d${dur}s, keep-alive, $(nproc) CPU(s)"
echo
python3 - "$n_rps" "$n_p50" "$n_p99" "${rows[@]}" <<'EOF'
import sys
n = list(map(float, sys.argv[1:4]))
a = sys.argv[4:]
gws = [(a[i], *map(float, a[i + 1:i + 4])) for i in range(0, len(a), 4)]
ms = lambda us: f"{us / 1000:.2f} ms"
many = len(gws) > 1
print("| server | requests/s | p50 latency | p99 latency |")
print("|---|---|---|---|")
for name, rps, p50, p99 in gws:
    label = f"glmserve gateway, 1 process ({name})" if many else "glmserve gateway (1 process)"
    print(f"| {label} | {rps:,.0f} | {ms(p50)} | {ms(p99)} |")
print(f"| nginx (1 worker process) | {n[0]:,.0f} | {ms(n[1])} | {ms(n[2])} |")
for name, rps, p50, p99 in gws:
    label = f"gateway ({name}) / nginx" if many else "gateway / nginx"
    print(f"| {label} | {rps / n[0]:.2f}x | {p50 / n[1]:.2f}x | {p99 / n[2]:.2f}x |")
EOF
