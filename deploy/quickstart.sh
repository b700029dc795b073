#!/usr/bin/env bash
# quickstart.sh - install what is missing, build glmserve (Release) and run
# the service in the foreground with its browser UI.
#
#   deploy/quickstart.sh                       the bundled tiny test model
#   MODEL=/models/GLM-4.6V-Flash deploy/quickstart.sh
#
# Environment:
#   MODEL         a Hugging Face GLM-4.6V-Flash folder (weights are never
#                 downloaded). Default: the tiny random-weight test model in
#                 tests/fixtures, whose answers are random text.
#   HOST, PORT    where to listen (127.0.0.1, 8080). A HOST other than a
#                 loopback address is served only with API keys: give
#                 API_KEY_FILE, or one key is made and printed.
#   API_KEY_FILE  keys file (docs/api-keys.md); optional on loopback.
#   BACKEND       cpu | cuda (default: cuda when nvidia-smi sees a GPU)
#   WORKERS       worker processes (default 1)
#   NO_INSTALL=1  skip deploy/install-deps.sh (packages already there)
#   BUILD_DIR     build folder (build/release); NO_BUILD=1 runs the
#                 binaries already built there
# Extra arguments are passed to glmserve (glmserve --help lists them).
# Ctrl-C stops the service (running answers finish first, up to 30 s).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf 'quickstart: %s\n' "$*" >&2; }

if [ "${NO_INSTALL:-0}" != 1 ]; then
    deploy/install-deps.sh --no-cross --no-python >&2
fi

# Build CUDA only for a GPU that is actually here (its own architecture).
cuda=(-DGS_CUDA=OFF)
backend="${BACKEND:-cpu}"
if [ -z "${BACKEND:-}" ] && command -v nvidia-smi >/dev/null &&
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null |
        head -1 | tr -d .)" && [ -n "$cap" ]; then
    cuda=(-DGS_CUDA=ON "-DGS_CUDA_ARCHS=$cap")
    backend=cuda
elif [ "$backend" = cuda ]; then
    cuda=(-DGS_CUDA=ON)
fi
build="${BUILD_DIR:-$root/build/release}"
if [ "${NO_BUILD:-0}" != 1 ]; then
    say "building (Release, backend $backend) in $build"
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGS_BUILD_TESTS=OFF "${cuda[@]}" \
        >/dev/null
    cmake --build "$build" -j "$(nproc)" >/dev/null
fi
if [ ! -x "$build/gateway/glmserve" ]; then
    say "$build/gateway/glmserve is not built"
    exit 2
fi

tiny="$root/tests/fixtures/tiny-glm4v"
model="${MODEL:-$tiny}"
if [ ! -f "$model/config.json" ]; then
    say "MODEL=$model is not a model folder (no config.json)"
    exit 2
fi
host="${HOST:-127.0.0.1}"
port="${PORT:-8080}"
args=(--model "$model" --host "$host" --port "$port" --backend "$backend"
    --workers "${WORKERS:-1}")

# Never an unauthenticated port on the network: off loopback, keys are on.
loopback=0
case "$host" in
127.* | ::1 | localhost) loopback=1 ;;
esac
key=""
if [ -n "${API_KEY_FILE:-}" ]; then
    args+=(--api-key-file "$API_KEY_FILE")
elif [ "$loopback" = 0 ]; then
    keyfile="$build/quickstart-keys"
    key="gs-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    umask 077
    printf 'sha256:%s name=quickstart\n' \
        "$(printf %s "$key" | sha256sum | cut -d' ' -f1)" >"$keyfile"
    args+=(--api-key-file "$keyfile")
fi

url_host="$host"
case "$host" in 0.0.0.0 | ::) url_host="$(hostname -I 2>/dev/null | awk '{print $1}')" ;; esac
case "$url_host" in *:*) url_host="[$url_host]" ;; esac
echo
if [ "$model" = "$tiny" ]; then
    echo "  Serving the bundled TINY TEST MODEL: its weights are random, so its"
    echo "  answers are random text. Set MODEL=/path/to/GLM-4.6V-Flash for real"
    echo "  answers."
fi
echo "  Open the UI:  http://${url_host:-$host}:$port/"
if [ -n "$key" ]; then
    echo "  API key (the UI asks for it; made for this run, stored hashed in"
    echo "  $keyfile):  $key"
fi
echo "  API:          http://${url_host:-$host}:$port/v1/chat/completions (docs/api.md)"
echo "  Stop:         Ctrl-C"
echo
exec "$build/gateway/glmserve" "${args[@]}" "$@"
