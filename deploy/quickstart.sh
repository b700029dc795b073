#!/usr/bin/env bash
# quickstart.sh - install dependencies, build glmserve (Release) and run it.
#
#   MODEL=DIR IMAGE=FILE PROMPT=TEXT deploy/quickstart.sh
#
# MODEL defaults to the tiny random-weight test model in tests/fixtures (it
# answers with random text; point MODEL at a downloaded GLM-4.6V-Flash
# folder for real answers). Until the HTTP gateway lands this runs the
# streaming command-line front end, glmserve-run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy/install-deps.sh --no-cross --no-python
# Build CUDA only for a GPU that is actually here (its own architecture).
cuda=(-DGS_CUDA=OFF)
backend=cpu
if command -v nvidia-smi >/dev/null && cap="$(nvidia-smi --query-gpu=compute_cap \
    --format=csv,noheader 2>/dev/null | head -1 | tr -d . )" && [ -n "$cap" ]; then
    cuda=(-DGS_CUDA=ON "-DGS_CUDA_ARCHS=$cap")
    backend=cuda
fi
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DGS_BUILD_TESTS=OFF "${cuda[@]}" >/dev/null
cmake --build build/release -j "$(nproc)"
model="${MODEL:-$root/tests/fixtures/tiny-glm4v}"
image="${IMAGE:-$root/tests/fixtures/ref/images/medium_640x480.jpg}"
prompt="${PROMPT:-What is in this image?}"
args=(--model "$model" --prompt "$prompt" --max-tokens "${MAX_TOKENS:-64}" --backend "$backend")
[ -n "$image" ] && [ -f "$image" ] && args+=(--image "$image")
exec build/release/worker/glmserve-run "${args[@]}"
