#!/usr/bin/env bash
# run_all.sh - build and run the whole test suite, as CI does.
#
#   tests/run_all.sh            native (ASan+UBSan) build + ctest, CUDA
#                               compile check (sm_75 ... sm_90) when nvcc is present,
#                               aarch64 cross build + ctest under qemu
#                               (x86-64 hosts with the cross toolchain),
#                               the libFuzzer targets briefly (clang),
#                               then pytest.
# Environment: GS_SKIP_ARM64=1 / GS_SKIP_CUDA=1 / GS_SKIP_FUZZ=1 skip those stages;
# JOBS=N sets build parallelism (default: nproc).
# Expects deploy/install-deps.sh to have run (README's test command does).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${JOBS:-$(nproc)}"
status=0
stage() { printf '\n=== %s ===\n' "$*"; }

stage "format (clang-format, .clang-format)"
fmt="$(command -v clang-format-14 || command -v clang-format || true)"
if [ -n "$fmt" ]; then
    bad=0
    while IFS= read -r f; do
        "$fmt" --dry-run -Werror "$f" >/dev/null 2>&1 || { echo "not formatted: $f"; bad=1; }
    done < <(git ls-files '*.c' '*.h' 2>/dev/null)
    [ "$bad" = 0 ] && echo "format: ok" || { echo "format: run clang-format -i on the files above"; status=1; }
else
    echo "format: clang-format not installed, skipped"
fi

stage "native build (ASan + UBSan, -Werror)"
cmake -S . -B build/test-native -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGS_WERROR=ON \
    -DGS_SANITIZE=ON -DGS_CUDA=OFF >/dev/null
if cmake --build build/test-native -j "$jobs"; then
    stage "native tests (ctest)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
        ctest --test-dir build/test-native --output-on-failure -j 2 || status=1
else
    echo "run_all: native build FAILED"
    status=1
fi

if [ "${GS_SKIP_CUDA:-0}" != 1 ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
    # Every architecture the build lists (GS_CUDA_ARCHS: sm_75 T4 ... sm_90
    # H100): sm_75 has no BF16 math, so its F16 path must compile too.
    stage "CUDA compile check (every listed architecture, sm_75-sm_90, no GPU needed)"
    cmake -S . -B build/test-cuda -DGS_WERROR=ON -DGS_CUDA=ON >/dev/null
    cmake --build build/test-cuda -j "$jobs" || status=1
else
    stage "CUDA compile check skipped (no nvcc)"
fi

if [ "${GS_SKIP_ARM64:-0}" != 1 ] && [ "$(uname -m)" = x86_64 ] &&
    command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null; then
    stage "aarch64 cross build"
    cmake -S . -B build/test-arm64 --toolchain cmake/aarch64-linux-gnu.cmake \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGS_WERROR=ON -DGS_CUDA=OFF \
        -DGS_TEST_BLAS_THREADS=1 >/dev/null
    if cmake --build build/test-arm64 -j "$jobs"; then
        stage "aarch64 tests under qemu-aarch64 (ctest)"
        # OpenBLAS spins forever under qemu unless it is single-threaded.
        OPENBLAS_NUM_THREADS=1 ctest --test-dir build/test-arm64 --output-on-failure -j 2 \
            --timeout 600 || status=1
    else
        echo "run_all: aarch64 build FAILED"
        status=1
    fi
else
    stage "aarch64 stage skipped (not an x86-64 host with the cross toolchain)"
fi

if [ "${GS_SKIP_FUZZ:-0}" != 1 ] && command -v clang >/dev/null; then
    stage "fuzz (libFuzzer, ${GS_FUZZ_SECONDS:-20} s per target)"
    JOBS="$jobs" tests/fuzz/run.sh "${GS_FUZZ_SECONDS:-20}" || status=1
else
    stage "fuzz stage skipped (no clang)"
fi

stage "python tests (pytest)"
py="build/venv/bin/python"
[ -x "$py" ] || py=python3
set +e
GS_BUILD_DIR="$root/build/test-native" "$py" -m pytest -q tests/python
rc=$?
set -e
# 5 = no tests collected: treat as a failure too, the suite must test something.
[ "$rc" = 0 ] || status=1

stage "done"
if [ "$status" = 0 ]; then echo "run_all: all stages passed"; else echo "run_all: FAILED"; fi
exit "$status"
