#!/usr/bin/env python3
"""soak.py - a long steady load against glmserve on the tiny model, with
the memory (RSS) and open file descriptors of every process sampled, and a
verdict against a stated bound. Not part of CI (it runs for minutes).

    build/venv/bin/python tools/soak/soak.py --build build/release \\
        [--minutes 30] [--sse-rate 4] [--ws-rate 2] [--out build/soak]

It starts `glmserve` (master, one gateway, one worker) on a free loopback
port, loads it with two tools/glmserve-bench processes at steady Poisson
rates (image + question requests over SSE and over the WebSocket, every
request with its own image, so the encoder and prefix caches keep
filling), samples each process every --interval seconds, then stops the
service with SIGTERM (it must exit 0).

The bound: after the warm-up (the first --warmup-minutes), no process's
RSS may grow by more than max(--rss-growth-pct of its warm value,
--rss-growth-mib) to the end, and its descriptor count by more than
--fd-growth. Writes samples.csv, summary.json and soak.png (RSS and
descriptors against time) to --out; exits 1 when the bound is broken or a
request failed."""
import argparse
import csv
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(x) for x in out.split()]


def role_of(pid):
    try:
        cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None
    return "worker" if cmd.endswith("glmserve-worker") else "gateway"


def sample(pid):
    """(rss KiB, open descriptors) of pid, or None when it is gone."""
    try:
        rss = 0
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except OSError:
        return None


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def verdict_and_plot(a, rows, out, head, ok):
    """The bound per process after the warm-up; summary.json and soak.png.
    rows: (t_s, role, pid, rss_kib, fds). Returns whether all is within it."""
    verdict = {}
    warm_t = a.warmup_minutes * 60
    for pid in sorted({r[2] for r in rows}):
        mine = [r for r in rows if r[2] == pid]
        warm = [r for r in mine if r[0] >= warm_t]
        if not warm:
            continue
        rss0, rss1 = warm[0][3], max(r[3] for r in warm[-max(1, len(warm) // 6):])
        fd0, fd1 = warm[0][4], warm[-1][4]
        limit = max(rss0 * a.rss_growth_pct / 100, a.rss_growth_mib * 1024)
        good = rss1 - rss0 <= limit and fd1 - fd0 <= a.fd_growth
        ok &= good
        verdict[f"{mine[0][1]} {pid}"] = {
            "rss_warm_mib": round(rss0 / 1024, 1), "rss_end_mib": round(rss1 / 1024, 1),
            "rss_peak_mib": round(max(r[3] for r in mine) / 1024, 1),
            "rss_growth_mib": round((rss1 - rss0) / 1024, 2), "rss_limit_mib": round(limit / 1024, 1),
            "fds_warm": fd0, "fds_end": fd1, "within_bound": good}
    summary = dict(head, warmup_minutes=a.warmup_minutes, processes=verdict, ok=ok)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for pid in sorted({r[2] for r in rows}):
            mine = [r for r in rows if r[2] == pid]
            label = f"{mine[0][1]} ({pid})"
            ax1.plot([r[0] / 60 for r in mine], [r[3] / 1024 for r in mine], label=label)
            ax2.plot([r[0] / 60 for r in mine], [r[4] for r in mine], label=label)
        ax1.set(xlabel="minutes", ylabel="RSS (MiB)", title="memory")
        ax2.set(xlabel="minutes", ylabel="open descriptors", title="descriptors")
        for ax in (ax1, ax2):
            ax.axvline(a.warmup_minutes, color="grey", linestyle=":")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "soak.png", dpi=90)
    except ImportError:
        pass
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="build folder with gateway/glmserve")
    ap.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "tiny-glm4v"))
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--warmup-minutes", type=float, default=5)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--sse-rate", type=float, default=4)
    ap.add_argument("--ws-rate", type=float, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rss-growth-pct", type=float, default=10)
    ap.add_argument("--rss-growth-mib", type=float, default=16)
    ap.add_argument("--fd-growth", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "build" / "soak"))
    ap.add_argument("--analyze", action="store_true",
                    help="no run: the verdict and the plot again from --out's samples.csv and "
                         "summary.json (say, with another --warmup-minutes)")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.analyze:
        with open(out / "samples.csv") as f:
            rows = [(float(r["t_s"]), r["role"], int(r["pid"]), int(r["rss_kib"]), int(r["fds"]))
                    for r in csv.DictReader(f)]
        old = json.loads((out / "summary.json").read_text())
        head = {k: old[k] for k in ("minutes", "sse_rate", "ws_rate", "requests_done",
                                    "requests_failed", "glmserve_exit")}
        ok = head["glmserve_exit"] == 0 and head["requests_failed"] == 0
        sys.exit(0 if verdict_and_plot(a, rows, out, head, ok) else 1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(out / "glmserve.log", "wb")
    svc = subprocess.Popen([str(pathlib.Path(a.build) / "gateway" / "glmserve"), "--model", a.model,
                            "--port", str(port), "--threads", str(a.threads), "--kv-memory", "256",
                            "--run-dir", str(out / "run")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while True:
        try:
            if get(base + "/ready")[0] == 200:
                break
        except OSError:
            pass
        if svc.poll() is not None or time.time() > deadline:
            sys.exit(f"soak: glmserve did not become ready (see {out / 'glmserve.log'})")
        time.sleep(0.2)
    seconds = int(a.minutes * 60)
    bench = [sys.executable, str(ROOT / "tools" / "glmserve-bench"), "--base-url", base,
             "--duration", str(seconds), "--max-tokens", str(a.max_tokens), "--ignore-eos",
             "--quiet", "--no-warmup"]
    loads = []
    for mode, rate, seed in (("sse", a.sse_rate, 1), ("ws", a.ws_rate, 2)):
        if rate > 0:
            n = int(rate * seconds * 1.3) + 16  # Poisson: enough for the whole duration
            loads.append(subprocess.Popen(
                bench + ["--mode", mode, "--rate", str(rate), "--num-requests", str(n),
                         "--seed", str(seed), "--json",
                         str(out / f"load-{mode}.json")],
                stdout=open(out / f"load-{mode}.txt", "w"), stderr=subprocess.STDOUT))
    rows, t0 = [], time.time()
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "role", "pid", "rss_kib", "fds"])
        while any(p.poll() is None for p in loads):
            t = round(time.time() - t0, 1)
            procs = [("master", svc.pid)] + [(role_of(c), c) for c in children(svc.pid)]
            for role, pid in procs:
                s = sample(pid) if role else None
                if s:
                    rows.append((t, role, pid, *s))
                    w.writerow(rows[-1])
            f.flush()
            print(f"soak: {t:7.0f} s  " + "  ".join(f"{r[1]} {r[3] // 1024} MiB {r[4]} fds"
                                                    for r in rows if r[0] == t), flush=True)
            time.sleep(a.interval)
    svc.send_signal(signal.SIGTERM)
    rc = svc.wait(120)
    failed = done = 0
    for mode in ("sse", "ws"):
        p = out / f"load-{mode}.json"
        if p.exists():
            summ = json.loads(p.read_text())["levels"][0]["summary"]
            done += summ["ok"]
            failed += summ["failed"]
    ok = verdict_and_plot(a, rows, out, {"minutes": a.minutes, "sse_rate": a.sse_rate,
                                         "ws_rate": a.ws_rate, "requests_done": done,
                                         "requests_failed": failed, "glmserve_exit": rc},
                          rc == 0 and failed == 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
