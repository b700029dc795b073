"""Large request bodies against the whole service (master, gateway, worker
on the tiny model): a body of many megabytes is parsed off the gateway's
event loop (other clients are answered meanwhile), a job too large for the
wire is refused with 413 and a message that says so, a client that goes
away while its body is being parsed costs nothing, no refused request
keeps its key's stream slot, images whose headers already overflow the
context are refused before their pixels are decoded, a worker holds at
most --image-memory-mb of prepared pixels (jobs past it wait; jobs
without images go by), and a gateway at most max_body_memory_mb of request
bodies (uploads past it get 503; a body is let go once parsed)."""
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import threading
import time
import zlib

import pytest

from service import HealthProbe, Service

ROUTE = "/v1/chat/completions"
KEY = "key-large"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("large")
    keys = tmp / "keys"
    # one stream at a time: a slot kept by a refused request shows at once
    keys.write_text("sha256:" + hashlib.sha256(KEY.encode()).hexdigest() + " name=large streams=1\n")
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp, "--api-key-file", keys)
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def big_text_body(mib):
    """A chat body whose text is mib MiB (over the 16 MiB a job carries)."""
    words = "lorem ipsum dolor sit amet\n" * (mib * 1024 * 1024 // 27)
    return json.dumps({"messages": [{"role": "user", "content": words}], "max_tokens": 1}).encode()


def good_request(svc):
    st, body = svc.chat(HELLO, key=KEY, max_tokens=2, temperature=0, timeout=60)
    assert st == 200, body


def test_refused_requests_release_their_stream_slot(svc):
    # Each refusal below happens in the gateway, after the key's stream slot
    # was taken; with streams=1 a slot kept by any of them refuses the next
    # good request with 429.
    cases = [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"messages": []}', {"Content-Type": "application/json"}, 400),
        (json.dumps({"messages": HELLO}).encode(), {"Content-Type": "text/plain"}, 415),
        (json.dumps({"messages": HELLO, "model": "another"}).encode(), {}, 404),
        (big_text_body(20), {}, 413),
    ]
    for body, headers, status in cases:
        st, _, text = svc.request("POST", ROUTE, body, {**AUTH, **headers}, timeout=120)
        assert st == status, (st, text[:300])
        good_request(svc)


def test_job_too_large_says_why(svc):
    st, _, text = svc.request("POST", ROUTE, big_text_body(20), AUTH, timeout=120)
    assert st == 413, text[:300]
    err = json.loads(text)["error"]
    assert err["code"] == "ETOOBIG" and "16 MiB" in err["message"], err


def test_large_body_is_parsed_off_the_loop(svc):
    # While the gateway parses a 24 MiB body (hundreds of ms of jansson),
    # /health on the same gateway keeps answering in a few ms. Parsed on
    # the loop, /health waited about as long as the whole request.
    body = big_text_body(24)
    with HealthProbe(svc) as probe:
        t = time.perf_counter()
        st, _, text = svc.request("POST", ROUTE, body, AUTH, timeout=120)
        took = time.perf_counter() - t
    assert st == 413, text[:300]
    print(f"24 MiB body answered in {took * 1e3:.0f} ms; worst /health meanwhile "
          f"{probe.worst * 1e3:.1f} ms")
    assert probe.worst < 0.3 * took, (probe.worst, took)


def test_client_gone_while_its_body_is_parsed(svc):
    body = big_text_body(24)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=60)
        s.sendall(b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        s.close()  # gone before the answer: the parse runs on without it
    # the slots come back once each parse has ended
    deadline = time.time() + 60
    while True:
        st, body_ = svc.chat(HELLO, key=KEY, max_tokens=2, temperature=0, timeout=60)
        if st == 200 or time.time() > deadline:
            break
        assert st == 429, body_
        time.sleep(0.1)
    assert st == 200, body_
    assert svc.proc.poll() is None
    log = svc.log_text()
    for bad in ("AddressSanitizer", "runtime error", "LeakSanitizer", "restarting it"):
        assert bad not in log, log[-3000:]


def png_header_only(w, h):
    """A PNG whose header says w x h RGB but whose pixel data stops short:
    its header reads fine, its decode fails."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)[:40]) + chunk(b"IEND", b""))


def test_images_over_the_context_are_refused_from_their_headers(svc):
    url = "data:image/png;base64," + base64.b64encode(png_header_only(6000, 6000)).decode()
    part = {"type": "image_url", "image_url": {"url": url}}
    # 16 images whose headers alone overflow the context: ECONTEXT, with the
    # prompt's token count, before any pixel is decoded (a decode would
    # have failed on the first image's short data)
    msgs = [{"role": "user", "content": [part] * 16 + [{"type": "text", "text": "hi"}]}]
    st, body = svc.chat(msgs, key=KEY, max_tokens=1, timeout=60)
    assert st == 400, body
    assert body["error"]["code"] == "ECONTEXT", body
    assert "exceeds the context" in body["error"]["message"], body
    # one such image fits the context: its decode runs, and fails
    msgs = [{"role": "user", "content": [part, {"type": "text", "text": "hi"}]}]
    st, body = svc.chat(msgs, key=KEY, max_tokens=1, timeout=60)
    assert st == 400 and body["error"]["code"] != "ECONTEXT", body
    assert "image 0" in body["error"]["message"], body
    good_request(svc)


def png_solid(w, h):
    """A valid w x h RGB PNG of one colour (small: its rows compress)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    row = b"\0" + bytes([40, 90, 160]) * w
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * h, 9)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def small_pixels(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("pixels"),
                "--image-memory-mb", "50")
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def test_image_memory_budget(small_pixels):
    svc = small_pixels
    # A 1400x1400 image is 2,500 tokens of 4 x 1176 floats: about 45 MiB
    # of pixels, so with 50 MiB one such job is prepared at a time.
    url = "data:image/png;base64," + base64.b64encode(png_solid(1400, 1400)).decode()
    img_msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "colour?"}]}]
    st, alone = svc.chat(img_msgs, max_tokens=4, temperature=0, timeout=120)
    assert st == 200, alone
    results, done_at = {}, {}

    def ask(name, msgs):
        st, body = svc.chat(msgs, max_tokens=4, temperature=0, timeout=300)
        results[name] = (st, body)
        done_at[name] = time.perf_counter()

    threads = [threading.Thread(target=ask, args=(f"img{i}", img_msgs)) for i in range(3)]
    for t in threads:
        t.start()
    # a text job sent meanwhile does not wait behind them
    time.sleep(0.3)
    ask("text", HELLO)
    for t in threads:
        t.join(300)
    for name, (st, body) in results.items():
        assert st == 200, (name, body)
    for i in range(3):
        got = results[f"img{i}"][1]["choices"][0]["message"]["content"]
        assert got == alone["choices"][0]["message"]["content"], i
    assert done_at["text"] < max(done_at[f"img{i}"] for i in range(3))
    log = svc.log_text()
    assert "at most 50 MiB of prepared pixels" in log, log[-2000:]
    assert "waits for image memory" in log, log[-3000:]


@pytest.fixture()
def body_cap(build_dir, fixtures, tmp_path):
    cfg = tmp_path / "glmserve.json"
    cfg.write_text(json.dumps({"max_body_memory_mb": 8, "max_body_mb": 64}))
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path / "svc", "--config", cfg)
    s.cfg = cfg
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def text_body(n):
    """A chat body of about n bytes (a long system text, 1 output token)."""
    return json.dumps({"messages": [{"role": "system", "content": "x " * (n // 2)}, *HELLO],
                       "max_tokens": 1}).encode()


def body_bytes(svc):
    st, _, text = svc.request("GET", "/metrics", timeout=10)
    assert st == 200
    [v] = [line.split()[1] for line in text.splitlines()
           if line.startswith("glmserve:request_body_bytes ")]
    return int(float(v))


def test_request_bodies_held_at_once_are_capped(body_cap):
    svc = body_cap
    # Bodies are let go once parsed: many in a row, 5 MB each, all pass.
    for _ in range(4):
        st, _, text = svc.request("POST", ROUTE, text_body(5 << 20), timeout=120)
        assert st == 400 and "context" in text, text[:300]
    # An upload of 6 MB in progress holds 6 of the 8 MB: a 4 MB one is
    # refused at its headers with 503 + Retry-After, and passes once the
    # first has arrived.
    big = text_body(6 << 20)
    slow = socket.create_connection(("127.0.0.1", svc.port), timeout=60)
    slow.sendall(b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(big)).encode()
                 + b"\r\n\r\n" + big[:1000])
    time.sleep(0.3)
    st, headers, text = svc.request("POST", ROUTE, text_body(4 << 20), timeout=60)
    assert st == 503, text[:300]
    assert headers.get("Retry-After") == "1", headers
    assert "request bytes" in json.loads(text)["error"]["message"], text
    assert body_bytes(svc) == len(big)  # counted from its Content-Length
    slow.sendall(big[1000:])
    head = slow.recv(65536)
    assert head.startswith(b"HTTP/1.1 400"), head[:200]
    slow.close()
    assert body_bytes(svc) == 0  # let go once parsed
    st, _, text = svc.request("POST", ROUTE, text_body(4 << 20), timeout=120)
    assert st == 400 and "context" in text, text[:300]


def test_sighup_applies_body_limits(body_cap):
    svc = body_cap
    body = text_body(3 << 20)
    st, _, text = svc.request("POST", ROUTE, body, timeout=120)
    assert st == 400 and "context" in text, text[:300]
    svc.cfg.write_text(json.dumps({"max_body_memory_mb": 8, "max_body_mb": 2}))
    os.kill(svc.proc.pid, signal.SIGHUP)
    end = time.time() + 10
    while "reloaded keys" not in svc.log_text() and time.time() < end:
        time.sleep(0.05)
    assert "reloaded keys" in svc.log_text()
    st, _, text = svc.request("POST", ROUTE, body, timeout=120)
    assert st == 413, text[:300]
    svc.cfg.write_text(json.dumps({"max_body_memory_mb": 2, "max_body_mb": 64}))
    os.kill(svc.proc.pid, signal.SIGHUP)
    end = time.time() + 10
    while svc.log_text().count("reloaded keys") < 2 and time.time() < end:
        time.sleep(0.05)
    st, headers, text = svc.request("POST", ROUTE, body, timeout=120)
    assert st == 503, text[:300]
