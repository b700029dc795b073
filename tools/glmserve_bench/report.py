"""What the user sees: the progress bar on stderr, the text report, the
comparison table and the chart."""
from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO


class Progress:
    """A plain-text bar on stderr: redrawn in place on a terminal, one
    line per tenth of the requests otherwise (logs, CI)."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr):
        self.total, self.label, self.stream = total, label, stream
        self.tty = stream.isatty()
        self.done = self.failed = 0
        self.t0 = time.perf_counter()
        self.last_tenth = -1
        self.draw()

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        self.draw()

    def draw(self) -> None:
        frac = self.done / self.total if self.total else 1.0
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = (f"{self.label} [{bar}] {self.done}/{self.total}"
                f" failed {self.failed}  {time.perf_counter() - self.t0:.1f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done >= self.total else ""))
        else:
            tenth = int(frac * 10)
            if tenth == self.last_tenth:
                return
            self.last_tenth = tenth
            self.stream.write(line + "\n")
        self.stream.flush()


def _f(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def load_name(load: dict[str, Any]) -> str:
    if "concurrency" in load:
        return f"concurrency {load['concurrency']}"
    return f"rate {load['rate']:g}/s"


def print_level(level: dict[str, Any], out: TextIO = sys.stdout) -> None:
    s = level["summary"]
    w = out.write
    w(f"\n== {load_name(level['load'])} ==\n")
    w(f"requests             {s['ok']} ok / {s['failed']} failed of {s['requests']}\n")
    for err, n in s["errors"].items():
        w(f"  {n} x {err}\n")
    if not s.get("ttft_ms"):
        return
    w(f"duration             {s['duration_s']:.2f} s\n")
    w(f"request throughput   {s['request_throughput']:.2f} req/s\n")
    w(f"output tokens        {s['output_tokens']} (usage: {s['output_tokens_usage']} over "
      f"{s['requests_with_usage']} requests; streamed chunks: {s['output_chunks']})\n")
    w(f"output tokens/s      {s['output_tokens_per_s']:.1f} (chunks/s {s['output_chunks_per_s']:.1f})\n")
    w(f"{'':20} {'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9}\n")
    for key, name in (("ttft_ms", "TTFT ms"), ("itl_ms", "ITL ms"), ("tpot_ms", "TPOT ms"),
                      ("e2e_ms", "E2E ms")):
        d = s.get(key)
        if d:
            w(f"{name:20} {d['mean']:9.2f} {d['p50']:9.2f} {d['p90']:9.2f} {d['p99']:9.2f}\n")
        else:
            w(f"{name:20} {'n/a':>9}\n")
    by_image = s.get("ttft_ms_by_image") or {}
    if len(by_image) > 1:
        w("TTFT p50 by image   " + ", ".join(f"{k} {d['p50']:.1f} ms (n={d['n']})"
                                            for k, d in by_image.items()) + "\n")
    g = s["goodput"]
    if g["slo_ttft_ms"] is not None or g["slo_itl_ms"] is not None:
        w(f"goodput              {g['requests_per_s']:.2f} req/s, {g['output_tokens_per_s']:.1f} tok/s "
          f"({g['good_requests']}/{s['requests']} within TTFT <= {_f(g['slo_ttft_ms'], '{:g}')} ms, "
          f"TPOT <= {_f(g['slo_itl_ms'], '{:g}')} ms)\n")
    gw = level.get("gateway")
    if gw is not None:
        for key, what in (("dispatch", "gateway dispatch"), ("relay", "gateway relay")):
            d = gw.get(key)
            if d is None:
                w(f"{what:20} n/a\n")
            else:
                w(f"{what:20} mean {d['mean_ms']:.3f} ms, p50 {_f(d['p50_ms'], '{:.3f}')} ms, "
                  f"p99 {_f(d['p99_ms'], '{:.3f}')} ms ({d['count']} observations)\n")


def summary_table(doc: dict[str, Any]) -> str:
    rows = ["| load | ok / failed | req/s | out tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms "
            "| E2E p50 / p99 ms |", "|---|---|---|---|---|---|---|"]
    for lv in doc["levels"]:
        s = lv["summary"]
        t, i, e = s.get("ttft_ms") or {}, s.get("itl_ms") or {}, s.get("e2e_ms") or {}
        rows.append(f"| {load_name(lv['load'])} | {s['ok']} / {s['failed']} "
                    f"| {s.get('request_throughput', 0):.2f} | {s.get('output_tokens_per_s', 0):.1f} "
                    f"| {_f(t.get('p50'))} / {_f(t.get('p99'))} | {_f(i.get('p50'))} / {_f(i.get('p99'))} "
                    f"| {_f(e.get('p50'))} / {_f(e.get('p99'))} |")
    return "\n".join(rows)


def _x(load: dict[str, Any]) -> float:
    return load.get("concurrency", load.get("rate", 0))


def compare_table(docs: list[dict[str, Any]], labels: list[str]) -> str:
    """The first document's levels against the second's at the same load:
    both rows and the ratios first/second for throughput and TTFT."""
    a, b = docs[0], docs[1]
    by_load = {_x(lv["load"]): lv for lv in b["levels"]}
    rows = [f"| load | server | ok / failed | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms "
            f"| ITL p50 ms | E2E p50 ms |", "|---|---|---|---|---|---|---|---|---|"]

    def row(lv: dict[str, Any], label: str) -> str:
        s = lv["summary"]
        t, i, e = s.get("ttft_ms") or {}, s.get("itl_ms") or {}, s.get("e2e_ms") or {}
        return (f"| {load_name(lv['load'])} | {label} | {s['ok']} / {s['failed']} "
                f"| {s.get('request_throughput', 0):.2f} | {s.get('output_tokens_per_s', 0):.1f} "
                f"| {_f(t.get('p50'))} | {_f(t.get('p99'))} | {_f(i.get('p50'))} | {_f(e.get('p50'))} |")

    def ratio(x: Optional[float], y: Optional[float]) -> str:
        return "n/a" if not x or not y else f"**{x / y:.2f}x**"

    for la in a["levels"]:
        lb = by_load.get(_x(la["load"]))
        rows.append(row(la, labels[0]))
        if lb is None:
            continue
        rows.append(row(lb, labels[1]))
        sa, sb = la["summary"], lb["summary"]
        ta, tb = sa.get("ttft_ms") or {}, sb.get("ttft_ms") or {}
        ia, ib = sa.get("itl_ms") or {}, sb.get("itl_ms") or {}
        ea, eb = sa.get("e2e_ms") or {}, sb.get("e2e_ms") or {}
        rows.append(f"| {load_name(la['load'])} | {labels[0]} / {labels[1]} | "
                    f"| {ratio(sa.get('request_throughput'), sb.get('request_throughput'))} "
                    f"| {ratio(sa.get('output_tokens_per_s'), sb.get('output_tokens_per_s'))} "
                    f"| {ratio(ta.get('p50'), tb.get('p50'))} | {ratio(ta.get('p99'), tb.get('p99'))} "
                    f"| {ratio(ia.get('p50'), ib.get('p50'))} | {ratio(ea.get('p50'), eb.get('p50'))} |")
    return "\n".join(rows)


def gateway_table(doc: dict[str, Any]) -> Optional[str]:
    """The gateway's dispatch and relay histograms per level (None when no
    level has them): request bytes in -> job sent, once per request, and
    worker event in -> bytes written, once per event."""
    levels = [lv for lv in doc["levels"] if lv.get("gateway")]
    if not levels:
        return None
    rows = ["| load | dispatch: n, mean / p50 / p99 ms | relay: n, mean / p50 / p99 ms |",
            "|---|---|---|"]
    for lv in levels:
        cells = []
        for key in ("dispatch", "relay"):
            d = lv["gateway"].get(key)
            cells.append("n/a" if d is None else
                         f"{d['count']}, {d['mean_ms']:.3f} / {_f(d['p50_ms'], '{:.3f}')} / "
                         f"{_f(d['p99_ms'], '{:.3f}')}")
        rows.append(f"| {load_name(lv['load'])} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def plot(docs: list[dict[str, Any]], labels: list[str], path: str) -> None:
    """Two panels against load, one colour per document: TTFT p50 (solid),
    TTFT p99 (dashed) and E2E p50 (dotted) on a log scale, and output
    tokens/s."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, (ax_l, ax_t) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=100)
    by_rate = all("rate" in lv["load"] for d in docs for lv in d["levels"])
    for n, (doc, label) in enumerate(zip(docs, labels)):
        colour = f"C{n}"
        lv = sorted((lv for lv in doc["levels"] if lv["summary"].get("ttft_ms")),
                    key=lambda lv: _x(lv["load"]))
        x = [_x(v["load"]) for v in lv]
        s = [v["summary"] for v in lv]
        ax_l.plot(x, [v["ttft_ms"]["p50"] for v in s], "o-", color=colour, label=f"{label} TTFT p50")
        ax_l.plot(x, [v["ttft_ms"]["p99"] for v in s], "s--", color=colour, label=f"{label} TTFT p99")
        ax_l.plot(x, [v["e2e_ms"]["p50"] for v in s], "^:", color=colour, label=f"{label} E2E p50")
        ax_t.plot(x, [v["output_tokens_per_s"] for v in s], "o-", color=colour, label=label)
    for ax in (ax_l, ax_t):
        ax.set_xscale("log", base=10 if by_rate else 2)
        ax.set_xlabel("request rate (req/s)" if by_rate else "concurrency")
        ax.grid(True, which="both", alpha=0.3)
        if not by_rate:
            ticks = sorted({_x(lv["load"]) for d in docs for lv in d["levels"]})
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax_l.set_yscale("log")
    ax_l.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_l.yaxis.set_minor_formatter(NullFormatter())
    ax_l.set_ylabel("latency (ms)")
    ax_l.set_title("latency against load")
    ax_l.legend(fontsize=7)
    ax_t.set_yscale("log")
    ax_t.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_t.yaxis.set_minor_formatter(NullFormatter())
    ax_t.set_ylabel("output tokens/s")
    ax_t.set_title("throughput against load")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
