#!/usr/bin/env bash
# contention.sh - the CPU engine's throughput when it does not own its
# cores: bench_engine with one thread per core, alone and beside busy
# neighbour processes (one busy loop per neighbour), for one or two builds
# measured in alternating rounds (a baseline build first, then this one).
#
#   tools/bench_engine/contention.sh BUILD_DIR [BASELINE_BUILD_DIR] [ROUNDS]
#
# Prints a Markdown table: output tok/s at concurrency 1 and 16 with 0, 1
# and 2 busy neighbours, per build and round. OPENBLAS_CORETYPE is passed
# through (set it to compare builds whose OpenBLAS choice differs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
new="$(cd "${1:?usage: contention.sh BUILD_DIR [BASELINE_BUILD_DIR] [ROUNDS]}" && pwd)"
old="${2:-}"
[ -n "$old" ] && old="$(cd "$old" && pwd)"
rounds="${3:-2}"
threads="$(nproc)"
hogs=()
stop_hogs() {
    for p in "${hogs[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    hogs=()
}
trap stop_hogs EXIT

# One measurement: "c1_tok_s c16_tok_s" of one bench_engine run.
measure() {
    "$1/tools/bench_engine/bench_engine" --model "$root/tests/fixtures/tiny-glm4v" \
        --threads "$threads" --levels 1,16 --max-tokens 32 2>/dev/null |
        awk -F'|' '$2+0 == 1 && NF > 5 {c1=$4+0} $2+0 == 16 && NF > 5 {c16=$4+0}
                   END {printf "%d %d\n", c1, c16}'
}

echo "| build | round | busy neighbours | tok/s at c=1 | tok/s at c=16 |"
echo "|---|---|---|---|---|"
for r in $(seq "$rounds"); do
    for n in 0 1 2; do
        stop_hogs
        for _ in $(seq "$n"); do
            sh -c 'while :; do :; done' &
            hogs+=($!)
        done
        for b in ${old:+"$old"} "$new"; do
            name=new
            [ "$b" = "$old" ] && name=baseline
            read -r c1 c16 < <(measure "$b")
            echo "| $name | $r | $n | $c1 | $c16 |"
        done
    done
done
stop_hogs
