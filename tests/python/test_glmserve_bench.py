"""tools/glmserve-bench against the real service at a small scale: over SSE
with a fixed-concurrency sweep and over the WebSocket with a Poisson rate,
every request succeeds, TTFT < end-to-end for each, the output tokens the
tool counts equal the usage it was sent and the service's own
generation_tokens_total, the JSON and the PNG are written, and --compare
reads them back."""
import json
import re
import subprocess
import sys

import pytest

from service import Service

MAX_TOKENS = 6
SIZES = "64x64,128x96,200x150"


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("glmserve_bench"))
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def generated_tokens(svc):
    st, _, body = svc.request("GET", "/metrics")
    assert st == 200
    m = re.search(r"^glmserve:generation_tokens_total(?:\{[^}]*\})? (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def bench(root, svc, tmp_path, name, *args):
    out_json, out_png = tmp_path / f"{name}.json", tmp_path / f"{name}.png"
    before = generated_tokens(svc)
    p = subprocess.run([sys.executable, str(root / "tools" / "glmserve-bench"),
                        "--base-url", f"http://127.0.0.1:{svc.port}", "--max-tokens", str(MAX_TOKENS),
                        "--ignore-eos", "--image-sizes", SIZES,
                        "--seed", "7", "--slo-ttft-ms", "60000", "--label", name,
                        "--json", str(out_json), "--plot", str(out_png), *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out_json.read_text())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "failed 0" in p.stderr  # the progress bar
    # What the service generated during the run: the warm-up (a request
    # per image size) plus every level.
    total = sum(lv["summary"]["output_tokens"] for lv in doc["levels"])
    assert generated_tokens(svc) - before == total + MAX_TOKENS * len(SIZES.split(","))
    return doc, p.stdout


def check_level(lv, n):
    s = lv["summary"]
    assert (s["requests"], s["ok"], s["failed"]) == (n, n, 0), s["errors"]
    assert s["output_tokens"] == s["output_tokens_usage"] == n * MAX_TOKENS
    assert s["requests_with_usage"] == n
    assert n <= s["output_chunks"] <= s["output_tokens"]
    for r in lv["requests"]:
        assert r["ok"] and 0 < r["ttft_ms"] < r["e2e_ms"], r
        assert r["usage_tokens"] == MAX_TOKENS and r["finish_reason"] == "length", r
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        d = s[key]
        assert 0 < d["p50"] <= d["p99"] and d["mean"] > 0, (key, d)
    assert s["ttft_ms"]["p50"] < s["e2e_ms"]["p50"]
    assert s["request_throughput"] > 0 and s["output_tokens_per_s"] > 0
    assert s["goodput"]["good_requests"] == n  # a 60 s TTFT objective
    gw = lv["gateway"]
    assert set(gw) == {"dispatch", "relay"}
    for d in gw.values():  # absent histograms read as None ("n/a")
        if d is not None:
            assert d["count"] > 0 and d["mean_ms"] >= 0 and d["p50_ms"] <= d["p99_ms"]


def test_sse_concurrency_sweep_and_ws_rate(root, svc, tmp_path):
    sse, out = bench(root, svc, tmp_path, "sse", "--mode", "sse", "--concurrency", "1,3",
                     "--num-requests", "6")
    assert [lv["load"] for lv in sse["levels"]] == [{"concurrency": 1}, {"concurrency": 3}]
    for lv in sse["levels"]:
        check_level(lv, 6)
    assert "| concurrency 3 | 6 / 0 |" in out

    ws, _ = bench(root, svc, tmp_path, "ws", "--mode", "ws", "--rate", "40", "--num-requests", "8")
    assert [lv["load"] for lv in ws["levels"]] == [{"rate": 40.0}]
    check_level(ws["levels"][0], 8)

    # The same seed sends the same images: SSE's first level and the
    # WebSocket's run used requests 0.. of seed 7.
    assert [r["image"] for r in sse["levels"][0]["requests"]] == \
        [r["image"] for r in ws["levels"][0]["requests"][:6]]

    chart = tmp_path / "both.png"
    p = subprocess.run([sys.executable, str(root / "tools" / "glmserve-bench"), "--compare",
                        str(tmp_path / "sse.json"), str(tmp_path / "ws.json"), "--plot", str(chart)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| concurrency 1 | sse | 6 / 0 |" in p.stdout
    assert chart.read_bytes()[:4] == b"\x89PNG"
