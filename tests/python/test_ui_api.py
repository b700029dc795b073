"""What the browser UI needs from the gateway (docs/api.md), against the
real service on the tiny model: GET /v1/info without a key, /vendor/NAME
from vendor_dirs (first folder holding the file wins, no folders, a
missing folder skipped), the page's security headers, the WebSocket's
queue reports ({"type": "queued", "position"}) when the worker is busy,
requests_finished_total by finish reason (a cancel is counted), and the
gateway's own share histograms."""
import json
import re
import threading
import time

import pytest
from websockets.sync.client import connect

from service import Service

HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def vendor(tmp_path_factory):
    """Two vendor folders: a.js in both (the first must win), b.js in the second."""
    base = tmp_path_factory.mktemp("vendor")
    one, two = base / "one", base / "two"
    one.mkdir()
    two.mkdir()
    (one / "a.js").write_text("// one\n")
    (two / "a.js").write_text("// two\n")
    (two / "b.js").write_text("// b\n")
    (two / "sub").mkdir()
    (two / "sub" / "c.js").write_text("// c\n")
    return base


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory, vendor):
    dirs = f"{vendor / 'missing'}:{vendor / 'one'}:{vendor / 'two'}"
    # One sequence at a time, so a second ask has to wait in the queue.
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("uiapi"),
                "--vendor-dirs", dirs, "--max-seqs", "1")
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def metric(text, name, labels=""):
    m = re.search(r"^" + re.escape(name + labels) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def scrape(s):
    status, _, body = s.request("GET", "/metrics")
    assert status == 200
    return body


def test_info_needs_no_key(svc, build_dir, fixtures, tmp_path):
    status, headers, body = svc.request("GET", "/v1/info")
    assert status == 200, body
    info = json.loads(body)
    assert info["auth"] is False
    assert info["max_images"] == 16 and info["max_body_mb"] == 64
    assert info["max_model_len"] == 8192
    assert info["ws"] is True and info["ready"] is True
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["version"])
    # With keys: still answered without one, and says a key is needed.
    keys = tmp_path / "keys"
    keys.write_text("my-key name=dev\n")
    k = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--api-key-file", keys,
                "--max-images", "3")
    try:
        status, _, body = k.request("GET", "/v1/info")
        assert status == 200, body
        info = json.loads(body)
        assert info["auth"] is True and info["max_images"] == 3
        assert "my-key" not in body
        assert k.request("GET", "/v1/models")[0] == 401
    finally:
        assert k.stop() == 0


def test_vendor_first_folder_wins(svc):
    status, headers, body = svc.request("GET", "/vendor/a.js")
    assert status == 200 and body == "// one\n"
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-type"].startswith("text/javascript")
    status, _, body = svc.request("GET", "/vendor/b.js")
    assert status == 200 and body == "// b\n"
    for path in ["/vendor/sub/c.js", "/vendor/../one/a.js", "/vendor/%2e%2e/one/a.js",
                 "/vendor/", "/vendor/nope.js", "/vendor/.hidden"]:
        status, _, body = svc.request("GET", path)
        assert status == 404, (path, body)
        assert json.loads(body)["error"]["code"] == "ENOENT"
    assert "vendor_dirs" in svc.log_text() and "missing" in svc.log_text()


def test_page_security_headers(svc):
    status, headers, body = svc.request("GET", "/")
    if status == 404:
        pytest.skip("no static/index.html in this tree yet")
    assert status == 200
    headers = {k.lower(): v for k, v in headers.items()}
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "object-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY"


def ws_url(s):
    return f"ws://{s.host}:{s.port}/v1/ws"


def test_queue_reports_and_cancel_counted(svc):
    before = scrape(svc)
    with connect(ws_url(svc), open_timeout=10, max_size=None) as ws:
        # The first ask holds the only sequence slot for a while.
        ws.send(json.dumps({"type": "ask", "id": "long", "messages": HELLO, "max_tokens": 400,
                            "seed": 1, "ignore_eos": True}))
        first = json.loads(ws.recv(timeout=60))
        assert first["type"] == "delta" and first["id"] == "long", first
        ws.send(json.dumps({"type": "ask", "id": "second", "messages": HELLO, "max_tokens": 4,
                            "seed": 2}))
        places = {"second": [], "third": []}
        # "third" goes once "second" waits (the worker's two prep threads
        # could otherwise queue them in either order).
        while not places["second"]:
            m = json.loads(ws.recv(timeout=60))
            assert m["type"] in ("delta", "queued"), m
            if m["type"] == "queued":
                assert m["id"] == "second", m
                places["second"].append(m["position"])
        ws.send(json.dumps({"type": "ask", "id": "third", "messages": HELLO, "max_tokens": 4,
                            "seed": 3}))
        deltas_before_start = {"second": 0, "third": 0}
        done = set()
        cancelled = False
        deadline = time.time() + 120
        while len(done) < 3 and time.time() < deadline:
            m = json.loads(ws.recv(timeout=60))
            if m["type"] == "queued":
                places[m["id"]].append(m["position"])
                if m["id"] == "third" and m["position"] == 2 and not cancelled:
                    ws.send(json.dumps({"type": "cancel", "id": "long"}))
                    cancelled = True
            elif m["type"] == "delta" and m["id"] != "long":
                if 0 not in places[m["id"]]:
                    deltas_before_start[m["id"]] += 1
            elif m["type"] == "done":
                done.add(m["id"])
            elif m["type"] == "error":
                pytest.fail(m)
        assert done == {"long", "second", "third"}
        # Each waited: its place, then 0 when it started, before any delta.
        assert places["second"][0] == 1 and places["second"][-1] == 0, places
        assert places["third"][0] == 2 and places["third"][-1] == 0, places
        assert 1 in places["third"], places  # moved up when "long" was cancelled
        assert deltas_before_start == {"second": 0, "third": 0}
    after = scrape(svc)
    fin = 'glmserve:requests_finished_total{finish_reason="%s"}'
    assert metric(after, fin % "cancelled") - metric(before, fin % "cancelled") == 1
    assert metric(after, fin % "stop") + metric(after, fin % "length") - \
        metric(before, fin % "stop") - metric(before, fin % "length") == 2


def test_no_queue_report_when_it_starts_at_once(svc):
    with connect(ws_url(svc), open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps({"type": "ask", "id": "a", "messages": HELLO, "max_tokens": 8,
                            "seed": 1}))
        kinds = []
        while True:
            m = json.loads(ws.recv(timeout=60))
            kinds.append(m["type"])
            if m["type"] in ("done", "error"):
                break
        assert kinds[-1] == "done" and "queued" not in kinds, kinds


def test_sse_ignores_queue_reports(svc):
    """An HTTP stream that waits behind a WebSocket ask has only chunks."""
    with connect(ws_url(svc), open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps({"type": "ask", "id": "hold", "messages": HELLO, "max_tokens": 200,
                            "seed": 1, "ignore_eos": True}))
        assert json.loads(ws.recv(timeout=60))["type"] == "delta"
        out = []
        t = threading.Thread(target=lambda: out.append(svc.stream(HELLO, max_tokens=4, seed=5)))
        t.start()
        t.join(120)
        assert not t.is_alive()
    status, chunks, text, err = out[0]
    assert status == 200 and err is None, (status, err)
    assert chunks and all("choices" in c for c in chunks), chunks[:3]


def test_gateway_share_histograms(svc):
    for i in range(3):
        status, body = svc.chat(HELLO, max_tokens=4, seed=i)
        assert status == 200, body
    text = scrape(svc)
    for name in ("glmserve:gateway_dispatch_seconds", "glmserve:gateway_relay_seconds"):
        count = metric(text, name + "_count")
        total = metric(text, name + "_sum")
        assert count >= 3, (name, text)
        # The gateway's own share is small: under 50 ms on average even here.
        assert 0 < total / count < 0.05, (name, total, count)


def test_ws_rate_limit_says_how_long_to_wait(build_dir, fixtures, tmp_path):
    """A WebSocket ask over a rate limit gets 429 with retry_after, the
    HTTP route's Retry-After, as a number the page can count down."""
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--ip-rate", "0.05",
                "--ip-burst", "0")
    try:
        with connect(ws_url(s), open_timeout=10, max_size=None) as ws:
            for i in range(2):
                ws.send(json.dumps({"type": "ask", "id": f"a{i}", "messages": HELLO,
                                    "max_tokens": 2, "seed": i}))
                while True:
                    m = json.loads(ws.recv(timeout=60))
                    if m["type"] in ("done", "error"):
                        break
            assert m["type"] == "error" and m["id"] == "a1", m
            assert m["status"] == 429 and m["code"] == "EBUSY", m
            assert isinstance(m["retry_after"], int) and 1 <= m["retry_after"] <= 21, m
        status, headers, _ = s.request("POST", "/v1/chat/completions",
                                       {"messages": HELLO, "max_tokens": 2})
        assert status == 429
        assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
