#!/usr/bin/env python3
"""bench_prefill.py - glmserve's CPU prefill GEMMs (F32 SGEMM path and BF16
matrix-unit path, measured by the bench_prefill binary) against PyTorch's
BF16 linear (torch.nn.functional.linear, BF16 weights and inputs) at the same
GLM-4.6V-Flash text shapes and thread count, in one run.

On a shared machine the timings drift, so the two programs alternate for
--rounds rounds (glmserve's two paths interleave inside each of its runs);
each number in the table is the median over rounds of per-round medians.

torch is a developer-only dependency (pip install torch); without it the
table has glmserve's two paths only.

Usage: bench_prefill.py --bin BUILD/tools/bench_cpu/bench_prefill
                        [--threads N] [--tokens 758] [--layers 1]
                        [--reps 3] [--rounds 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GEMMS = ["qkv", "o", "gate_up", "down"]


def shapes(a):
    qd, kd = a.heads * a.head_dim, a.kv_heads * a.head_dim
    # [out, in] per GEMM, as bench_prefill.c
    return {"qkv": (qd + 2 * kd, a.hidden), "o": (a.hidden, qd),
            "gate_up": (2 * a.inter, a.hidden), "down": (a.hidden, a.inter)}


def run_glmserve(a):
    cmd = [a.bin, "--threads", str(a.threads), "--tokens", str(a.tokens),
           "--layers", str(a.layers), "--reps", str(a.reps), "--json",
           "--hidden", str(a.hidden), "--heads", str(a.heads),
           "--kv-heads", str(a.kv_heads), "--head-dim", str(a.head_dim),
           "--inter", str(a.inter)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res, rel = {}, {}
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if "path" in j:
            res[(j["path"], j["gemm"])] = j["ms"]
        elif "rel_diff" in j:
            rel[j["gemm"]] = j["rel_diff"]
    return res, rel


class TorchBench:
    def __init__(self, a, torch):
        self.t, self.a = torch, a
        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        sh = shapes(a)
        self.w = [{g: (torch.rand(o, i) * 2 - 1).mul_(i ** -0.5).to(torch.bfloat16)
                   for g, (o, i) in sh.items()} for _ in range(a.layers)]
        self.b = (torch.rand(sh["qkv"][0]) * 0.1).to(torch.bfloat16)
        self.x = {g: (torch.rand(a.tokens, i) * 2 - 1).to(torch.bfloat16)
                  for g, (o, i) in sh.items()}

    def run(self):
        F = self.t.nn.functional
        times = {g: [] for g in GEMMS}
        times["layer"] = []
        with self.t.inference_mode():
            for r in range(-1, self.a.reps):  # -1: warm-up
                tl = 0.0
                acc = {g: 0.0 for g in GEMMS}
                for lw in self.w:
                    for g in GEMMS:
                        t0 = time.perf_counter()
                        F.linear(self.x[g], lw[g], self.b if g == "qkv" else None)
                        dt = (time.perf_counter() - t0) * 1e3
                        acc[g] += dt
                        tl += dt
                if r >= 0:
                    for g in GEMMS:
                        times[g].append(acc[g])
                    times["layer"].append(tl)
        return {("torch", g): statistics.median(v) for g, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--tokens", type=int, default=758)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--inter", type=int, default=13696)
    a = p.parse_args()

    try:
        import torch
        tb = TorchBench(a, torch)
        tver = torch.__version__
    except ImportError:
        tb, tver = None, None
        print("torch is not installed: glmserve's two paths only", file=sys.stderr)

    rounds, rel = [], {}
    for r in range(a.rounds):
        res, rel = run_glmserve(a)
        if tb:
            res.update(tb.run())
        rounds.append(res)
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(
            f"{k[0]} {k[1]} {v:.0f}" for k, v in sorted(res.items()) if k[1] == "layer"),
            file=sys.stderr)

    med = {k: statistics.median(rd[k] for rd in rounds) for k in rounds[0]}
    paths = [p for p in ("f32", "bf16", "torch") if (p, "layer") in med]
    sh = shapes(a)
    fl = {g: 2.0 * a.tokens * o * i * a.layers for g, (o, i) in sh.items()}
    fl["layer"] = sum(fl.values())

    print(f"prefill GEMMs, {a.tokens} tokens, {a.layers} layer(s), {a.threads} threads; "
          f"median of {a.rounds} rounds x {a.reps} reps" + (f"; torch {tver}" if tver else ""))
    head = f"{'gemm':8} {'[out x in]':12}" + "".join(f" {p + ' ms':>10}" for p in paths)
    if "bf16" in paths:
        head += f" {'bf16 vs f32':>12}"
    if "torch" in paths and "bf16" in paths:
        head += f" {'torch/bf16':>11}"
    best = "bf16" if "bf16" in paths else "f32"
    head += f" {best + ' GF/s':>10}"
    print(head)
    for g in GEMMS + ["layer"]:
        shp = f"{sh[g][0]}x{sh[g][1]}" if g in sh else ""
        line = f"{g:8} {shp:12}" + "".join(f" {med[(p, g)]:10.1f}" for p in paths)
        if "bf16" in paths:
            line += f" {med[('f32', g)] / med[('bf16', g)]:11.2f}x"
        if "torch" in paths and "bf16" in paths:
            line += f" {med[('torch', g)] / med[('bf16', g)]:10.2f}x"
        line += f" {fl[g] / med[(best, g)] * 1e-6:10.1f}"
        print(line)
    if rel:
        print("bf16 vs f32 outputs, max |diff| / max |f32|: " +
              ", ".join(f"{g} {rel[g]:.1e}" for g in GEMMS if g in rel))


if __name__ == "__main__":
    main()
