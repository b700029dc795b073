"""Summaries of a level's results, and the gateway's histograms from
Prometheus text.

Definitions (all from the client's clock):
- TTFT: send to the first non-empty text delta.
- ITL: the gaps between successive non-empty deltas, pooled over requests.
- TPOT: per request, (end - first) / (output tokens - 1).
- E2E: send to the end of the answer ([DONE] or the WebSocket's done).
- duration: the first send to the last end; throughputs divide by it.
- goodput: the requests that succeeded and meet every given objective
  (TTFT <= --slo-ttft-ms, TPOT <= --slo-itl-ms), per second."""
from __future__ import annotations

import math
import re
from typing import Any, Optional

import numpy as np

from .clients import Result

QUANTILES = (50, 90, 99)


def dist(values: list[float]) -> Optional[dict[str, float]]:
    """mean, p50, p90, p99 (linear interpolation) of values, None if empty."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    out = {"mean": float(a.mean())}
    for q in QUANTILES:
        out[f"p{q}"] = float(np.percentile(a, q))
    out["n"] = len(values)
    return out


def summarize(results: list[Result], slo_ttft_ms: Optional[float],
              slo_itl_ms: Optional[float]) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = r.error[:120]
            errors[key] = errors.get(key, 0) + 1
    s: dict[str, Any] = {"requests": len(results), "ok": len(ok),
                         "failed": len(results) - len(ok), "errors": errors}
    if not results:
        return s
    starts = [r.start for r in results if r.start]
    ends = [r.end for r in ok] or [max(starts)]
    duration = max(ends) - min(starts) if starts else 0.0
    ttft = [1e3 * (r.first - r.start) for r in ok]
    e2e = [1e3 * (r.end - r.start) for r in ok]
    itl = [1e3 * g for r in ok for g in np.diff(r.chunk_times)]
    tpot_of = {r.index: 1e3 * (r.end - r.first) / (r.tokens - 1) for r in ok if r.tokens > 1}
    out_tokens = sum(r.tokens for r in ok)
    good = [r for r in ok
            if (slo_ttft_ms is None or 1e3 * (r.first - r.start) <= slo_ttft_ms)
            and (slo_itl_ms is None or tpot_of.get(r.index, 0.0) <= slo_itl_ms)]
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    s.update({
        "duration_s": duration,
        "request_throughput": per_s(len(ok)),
        "output_tokens": out_tokens,
        "output_tokens_usage": sum(r.usage_tokens or 0 for r in ok),
        "requests_with_usage": sum(r.usage_tokens is not None for r in ok),
        "output_chunks": sum(r.chunks for r in ok),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in ok),
        "output_tokens_per_s": per_s(out_tokens),
        "output_chunks_per_s": per_s(sum(r.chunks for r in ok)),
        "ttft_ms": dist(ttft),
        "itl_ms": dist(itl),
        "tpot_ms": dist(list(tpot_of.values())),
        "e2e_ms": dist(e2e),
        "ttft_ms_by_image": {size: dist([1e3 * (r.first - r.start) for r in ok if r.image == size])
                             for size in sorted({r.image for r in ok},
                                                key=lambda s: [int(v) for v in s.split("x")])},
        "goodput": {"slo_ttft_ms": slo_ttft_ms, "slo_itl_ms": slo_itl_ms,
                    "good_requests": len(good), "requests_per_s": per_s(len(good)),
                    "output_tokens_per_s": per_s(sum(r.tokens for r in good)),
                    "fraction": len(good) / len(results)},
    })
    return s


# ---- Prometheus histograms ------------------------------------------------

GATEWAY_HISTOGRAMS = {
    "dispatch": "glmserve:gateway_dispatch_seconds",  # request bytes in -> job sent
    "relay": "glmserve:gateway_relay_seconds",  # worker event in -> bytes written
}
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LE = re.compile(r'le="([^"]*)"')


def parse_histograms(text: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """{name: {"buckets": {le: cumulative count}, "sum", "count"}} for each
    histogram of names found in the text; series with other labels are
    added together."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        metric, labels, value = m.group(1), m.group(2) or "", m.group(3)
        for name in names:
            if not metric.startswith(name + "_"):
                continue
            h = out.setdefault(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
            kind = metric[len(name) + 1:]
            v = float(value)
            if kind == "bucket":
                le = _LE.search(labels)
                if le:
                    b = float(le.group(1))  # "+Inf" parses as inf
                    h["buckets"][b] = h["buckets"].get(b, 0.0) + v
            elif kind in ("sum", "count"):
                h[kind] += v
    return out


def histogram_delta(before: Optional[dict[str, Any]], after: Optional[dict[str, Any]]):
    if after is None:
        return None
    if before is None:
        before = {"buckets": {}, "sum": 0.0, "count": 0.0}
    return {"buckets": {le: c - before["buckets"].get(le, 0.0) for le, c in after["buckets"].items()},
            "sum": after["sum"] - before["sum"], "count": after["count"] - before["count"]}


def histogram_quantile(q: float, buckets: dict[float, float]) -> Optional[float]:
    """Prometheus's estimate: linear within the bucket holding rank q*total;
    the highest finite bound when the rank falls in +Inf."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def gateway_share(before: str, after: str) -> dict[str, Any]:
    """Mean, p50 and p99 (milliseconds) of each gateway histogram over the
    run, from the difference of two scrapes; None for an absent one."""
    names = list(GATEWAY_HISTOGRAMS.values())
    hb, ha = parse_histograms(before, names), parse_histograms(after, names)
    out: dict[str, Any] = {}
    for key, name in GATEWAY_HISTOGRAMS.items():
        d = histogram_delta(hb.get(name), ha.get(name))
        if d is None or d["count"] <= 0:
            out[key] = None
            continue
        p50 = histogram_quantile(0.5, d["buckets"])
        p99 = histogram_quantile(0.99, d["buckets"])
        out[key] = {"metric": name, "count": int(d["count"]), "mean_ms": 1e3 * d["sum"] / d["count"],
                    "p50_ms": None if p50 is None else 1e3 * p50,
                    "p99_ms": None if p99 is None else 1e3 * p99}
    return out
