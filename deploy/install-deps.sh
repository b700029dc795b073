#!/usr/bin/env bash
# install-deps.sh - install every system package glmserve needs to build,
# run and test, idempotently, on Debian 12 / Ubuntu 22.04+ (amd64 or arm64).
#
#   deploy/install-deps.sh [--no-cross] [--no-python] [BUILD_DIR]
#
# Also creates a Python virtualenv for the test suite at BUILD_DIR/venv
# (default: build/venv). Run as root (or with sudo available).
# --no-cross skips the aarch64 cross toolchain + qemu (only used by .ci/run
# on x86-64 hosts); --no-python skips the test virtualenv.
set -euo pipefail

cross=1
python=1
build_dir=""
for a in "$@"; do
    case "$a" in
    --no-cross) cross=0 ;;
    --no-python) python=0 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "install-deps: unknown option $a" >&2; exit 2 ;;
    *) build_dir="$a" ;;
    esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${build_dir:-$here/build}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

host_arch="$(dpkg --print-architecture)"

# Packages for the native build, runtime and tests. chromium drives the
# browser tests (Playwright; the font draws its Chinese screenshots); libjs-marked and node-dompurify are the web
# UI's Markdown renderer and sanitizer, served by the gateway (vendor_dirs).
# libdnnl-dev (oneDNN) runs CPU prefill GEMMs on the BF16 matrix units; the
# aarch64 cross build goes without it (its F32 path only).
pkgs=(
    build-essential cmake pkg-config ninja-build git ca-certificates
    libuv1-dev node-llhttp libnng-dev libjansson-dev libturbojpeg0-dev
    libspng-dev libpng-dev zlib1g-dev libopenblas-dev libdnnl-dev
    libssl-dev libpcre2-dev libwslay-dev libcurl4-openssl-dev
    python3 python3-venv python3-pip clang-format
    curl nginx wrk logrotate openssl
    chromium fonts-wqy-microhei libjs-marked node-dompurify
)
# The aarch64 cross build + emulation used by .ci/run on x86-64.
cross_pkgs=(crossbuild-essential-arm64 qemu-user-static)
# libwslay-dev is not multiarch co-installable (it conflicts with its
# arm64 twin); the cross build does not need it.
arm64_libs=(
    libuv1-dev:arm64 libnng-dev:arm64 libjansson-dev:arm64
    libturbojpeg0-dev:arm64 libspng-dev:arm64
    libpng-dev:arm64 zlib1g-dev:arm64 libopenblas-dev:arm64
    libssl-dev:arm64 libpcre2-dev:arm64
)

missing() {
    local out=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            out+=("$p")
    done
    echo "${out[@]:-}"
}

want=("${pkgs[@]}")
if [ "$cross" = 1 ] && [ "$host_arch" = amd64 ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
        need_update=1
    fi
    want+=("${cross_pkgs[@]}" "${arm64_libs[@]}")
fi
todo="$(missing "${want[@]}")"
if [ -n "$todo" ]; then
    # Debian's sources are fine for arm64 too; Ubuntu needs ports.ubuntu.com
    # for arm64, which is outside this script's scope (use --no-cross there).
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $todo
elif [ "${need_update:-0}" = 1 ]; then
    $SUDO apt-get update -qq
fi

if [ "$python" = 1 ]; then
    mkdir -p "$build_dir"
    venv="$build_dir/venv"
    if [ ! -x "$venv/bin/python" ]; then
        /usr/bin/python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c 'import pytest, numpy, openai, websockets, playwright, matplotlib, aiohttp, yaml, kubernetes_validate' 2>/dev/null; then
        "$venv/bin/pip" install -q --disable-pip-version-check \
            -r "$here/tests/requirements.txt"
    fi
fi
echo "install-deps: ok"
