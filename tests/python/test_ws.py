"""GET /v1/ws (docs/api.md, "WebSocket /v1/ws") against the real service on
the tiny fixture model: asks stream deltas then done with the same text as
the HTTP route, several asks share a socket, cancel ends one ask, images
travel as binary frames, API keys come in an auth message, and the RFC 6455
rules hold on raw sockets (unmasked frame 1002, invalid UTF-8 1007, too big
1009). Closing the socket mid-answer frees the worker's KV pages."""
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from service import HealthProbe, Service, data_url

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def key_line(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest() + "\n"


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("ws"))
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.fixture(scope="module")
def keyed(build_dir, fixtures, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wskeys")
    keys = tmp / "keys"
    keys.write_text(key_line("key-A"))
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp, "--api-key-file", keys)
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def url(s):
    return f"ws://{s.host}:{s.port}/v1/ws"


def ws_connect(s, **kw):
    return connect(url(s), open_timeout=10, close_timeout=5, max_size=None, **kw)


def recv_json(ws, timeout=60):
    return json.loads(ws.recv(timeout=timeout))


def collect(ws, ids, timeout=120):
    """Reads until every id in ids has its done or error; returns
    {id: {"content", "reasoning", "end": the done/error message, "deltas"}}."""
    out = {i: {"content": "", "reasoning": "", "end": None, "deltas": 0} for i in ids}
    end = time.time() + timeout
    while any(v["end"] is None for v in out.values()):
        m = recv_json(ws, max(0.1, end - time.time()))
        r = out[m["id"]]
        assert r["end"] is None, m
        if m["type"] == "delta":
            r["content"] += m.get("content", "")
            r["reasoning"] += m.get("reasoning", "")
            r["deltas"] += 1
        else:
            assert m["type"] in ("done", "error"), m
            r["end"] = m
    return out


def close_code(ws, timeout=10):
    """Waits for the server's close; returns its code."""
    with pytest.raises(ConnectionClosed) as ei:
        while True:
            ws.recv(timeout=timeout)
    return ei.value.rcvd.code if ei.value.rcvd else None


# ---- raw sockets (frames the websockets package will not send) -------------------------------

def raw_open(s, rcvbuf=None):
    """A WebSocket handshake on a plain socket (rcvbuf: its receive buffer,
    set before the connect so that the window is that small)."""
    sock = socket.socket()
    sock.settimeout(10)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((s.host, s.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /v1/ws HTTP/1.1\r\nHost: {s.host}:{s.port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert f"Sec-WebSocket-Accept: {accept}".encode() in head, head
    return sock


def frame(opcode, payload, mask=True, fin=True, length=None):
    n = len(payload) if length is None else length
    b = bytes([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        b += bytes([mbit | n])
    elif n < 65536:
        b += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        b += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask:
        k = os.urandom(4)
        b += k + bytes(c ^ k[i % 4] for i, c in enumerate(payload))
    else:
        b += payload
    return b


def raw_read_close(sock, timeout=10):
    """Reads server frames until a close frame; returns its code."""
    sock.settimeout(timeout)
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            c = sock.recv(65536)
            assert c, "connection closed without a close frame"
            buf += c

    while True:
        need(2)
        op, n = buf[0] & 0x0F, buf[1] & 0x7F
        assert not buf[1] & 0x80, "server frames are not masked"
        off = 2
        if n == 126:
            need(4)
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            need(10)
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        need(off + n)
        payload, buf = buf[off:off + n], buf[off + n:]
        if op == 8:
            return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


# ---- the protocol ---------------------------------------------------------------------------

def test_handshake_refusals(svc):
    st, h, body = svc.request("GET", "/v1/ws")
    assert st == 426 and h.get("Sec-WebSocket-Version") == "13", (st, h, body)
    st, _, body = svc.request("GET", "/v1/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert st == 426, body
    st, _, body = svc.request("GET", "/v1/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "short"})
    assert st == 400 and "Sec-WebSocket-Key" in json.loads(body)["error"]["message"]


def test_ask_streams_deltas_then_done_like_http(svc):
    st, body = svc.chat(HELLO, max_tokens=16, temperature=0)
    assert st == 200, body
    with ws_connect(svc) as ws:
        ws.send(json.dumps({"type": "ask", "id": "a1", "messages": HELLO, "max_tokens": 16,
                            "temperature": 0}))
        r = collect(ws, ["a1"])["a1"]
    done = r["end"]
    assert done["type"] == "done", done
    assert r["content"] == body["choices"][0]["message"]["content"]
    assert r["deltas"] >= 2
    assert done["finish_reason"] == body["choices"][0]["finish_reason"]
    assert done["usage"]["completion_tokens"] == body["usage"]["completion_tokens"]
    assert done["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert set(done["timings"]) == {"queue_ms", "ttft_ms", "decode_ms"}


def test_two_asks_in_flight_on_one_socket(svc):
    with ws_connect(svc) as ws:
        for i in ("x", "y"):
            ws.send(json.dumps({"type": "ask", "id": i, "messages": HELLO, "max_tokens": 12,
                                "temperature": 0}))
        r = collect(ws, ["x", "y"])
    assert r["x"]["end"]["type"] == r["y"]["end"]["type"] == "done"
    assert r["x"]["content"] == r["y"]["content"] != ""


def test_cancel_ends_one_ask_the_other_completes(svc):
    with ws_connect(svc) as ws:
        ws.send(json.dumps({"type": "ask", "id": "long", "messages": HELLO, "max_tokens": 4000,
                            "ignore_eos": True}))
        m = recv_json(ws)
        assert m["type"] == "delta" and m["id"] == "long", m
        ws.send(json.dumps({"type": "ask", "id": "short", "messages": HELLO, "max_tokens": 8,
                            "temperature": 0}))
        ws.send(json.dumps({"type": "cancel", "id": "long"}))
        r = collect(ws, ["long", "short"])
        assert r["long"]["end"] == {"type": "done", "id": "long", "finish_reason": "cancelled"}
        assert r["short"]["end"]["type"] == "done"
        assert r["short"]["end"]["usage"]["completion_tokens"] == 8
        # cancelling an unknown id is an error; the socket stays usable
        ws.send(json.dumps({"type": "cancel", "id": "long"}))
        m = recv_json(ws)
        assert m["type"] == "error" and m["status"] == 404 and m["id"] == "long", m


def test_image_as_binary_frame_equals_data_url_over_http(svc, fixtures):
    img = fixtures / "ref" / "images" / "model_56x56.png"
    text = {"type": "text", "text": "What is in this image?"}
    http_msgs = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(img)}}, text]}]
    st, body = svc.chat(http_msgs, max_tokens=16, temperature=0)
    assert st == 200, body
    ws_msgs = [{"role": "user", "content": [{"type": "image_ref", "index": 0}, text]}]
    with ws_connect(svc) as ws:
        ws.send(json.dumps({"type": "ask", "id": "img", "messages": ws_msgs, "max_tokens": 16,
                            "temperature": 0, "images": 1}))
        ws.send(img.read_bytes())
        r = collect(ws, ["img"])["img"]
        assert r["end"]["type"] == "done", r
        assert r["content"] == body["choices"][0]["message"]["content"]
        assert r["end"]["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"]
        # an index past the frames sent is refused
        ws.send(json.dumps({"type": "ask", "id": "bad", "messages": [{"role": "user", "content": [
            {"type": "image_ref", "index": 1}, text]}], "images": 1}))
        ws.send(img.read_bytes())
        m = recv_json(ws)
        assert m["type"] == "error" and m["id"] == "bad" and m["status"] == 400, m


def test_data_urls_in_asks_equal_http(svc, fixtures):
    # Long data: URL payloads are lifted out of an ask before its JSON is
    # parsed, as over HTTP: an ask that starts at once, one that waits for a
    # binary frame too, and one whose data: URL is no image part's (a tool's
    # parameter) all give what the same request gives over HTTP.
    a = fixtures / "ref" / "images" / "model_56x56.png"
    b = fixtures / "ref" / "images" / "model_84x56.png"
    text = {"type": "text", "text": "Compare these."}
    tools = [{"type": "function", "function": {"name": "show", "description": "shows a picture",
              "parameters": {"type": "object", "url": data_url(b)}}}]
    cases = {
        "lifted": ([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(a)}}, text]}], {}, None),
        "withframe": ([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(b)}},
            {"type": "image_ref", "index": 0}, text]}], {}, a),
        "tool": ([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(a)}}, text]}], {"tools": tools},
            None),
    }
    with ws_connect(svc) as ws:
        for cid, (msgs, extra, frame_img) in cases.items():
            http_msgs = json.loads(json.dumps(msgs))
            for part in http_msgs[0]["content"]:
                if part["type"] == "image_ref":
                    part.clear()
                    part.update({"type": "image_url", "image_url": {"url": data_url(frame_img)}})
            st, body = svc.chat(http_msgs, max_tokens=12, temperature=0, **extra)
            assert st == 200, (cid, body)
            ask = {"type": "ask", "id": cid, "messages": msgs, "max_tokens": 12,
                   "temperature": 0, **extra}
            if frame_img:
                ask["images"] = 1
            ws.send(json.dumps(ask))
            if frame_img:
                ws.send(frame_img.read_bytes())
            r = collect(ws, [cid])[cid]
            assert r["end"]["type"] == "done", (cid, r)
            assert r["content"] == body["choices"][0]["message"]["content"], cid
            assert r["end"]["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"], cid


def test_large_message_parsed_off_the_loop_in_order(svc):
    # A message of 24 MB is parsed on the thread pool, the socket paused:
    # the gateway answers /health meanwhile, and the messages sent right
    # after it are answered after it, in order.
    big = json.dumps({"type": "nope", "id": "big", "pad": "lorem ipsum " * (2 << 20)})
    with HealthProbe(svc) as probe, ws_connect(svc) as ws:
        t = time.perf_counter()
        ws.send(big)
        ws.send(json.dumps({"type": "cancel", "id": "after"}))
        ws.send(json.dumps({"type": "ask", "id": "q", "messages": [
            {"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}))
        m = recv_json(ws)
        took = time.perf_counter() - t
        assert m["type"] == "error" and m["status"] == 400 and "nope" in m["message"], m
        m = recv_json(ws)
        assert m["type"] == "error" and m["status"] == 404 and m["id"] == "after", m
        r = collect(ws, ["q"])["q"]
        assert r["end"]["type"] == "done", r
    print(f"24 MB message answered in {took * 1e3:.0f} ms; worst /health {probe.worst * 1e3:.1f} ms")
    assert probe.worst < 0.3 * took, (probe.worst, took)
    # gone while its message is parsed: nothing breaks
    for _ in range(3):
        with ws_connect(svc) as ws:
            ws.send(big)
    with ws_connect(svc) as ws:
        ws.send(json.dumps({"type": "ask", "id": "z", "messages": [
            {"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}))
        assert collect(ws, ["z"])["z"]["end"]["type"] == "done"


def test_malformed_messages_keep_the_socket(svc):
    with ws_connect(svc) as ws:
        ws.send("{not json")
        m = recv_json(ws)
        assert m["type"] == "error" and m["status"] == 400 and m["id"] is None, m
        assert "invalid JSON" in m["message"]
        ws.send(json.dumps({"type": "dance", "id": "d"}))
        m = recv_json(ws)
        assert m["type"] == "error" and m["id"] == "d", m
        ws.send(json.dumps({"type": "ask", "id": "e", "messages": []}))
        m = recv_json(ws)
        assert m["type"] == "error" and m["id"] == "e" and m["status"] == 400, m
        ws.send(b"\x89PNG stray")
        m = recv_json(ws)
        assert m["type"] == "error" and "binary" in m["message"], m
        ws.send(json.dumps({"type": "ask", "id": "ok", "messages": HELLO, "max_tokens": 4}))
        assert collect(ws, ["ok"])["ok"]["end"]["type"] == "done"


def test_keys_auth_message_and_1008(keyed):
    # an ask before auth: error then 1008
    with ws_connect(keyed) as ws:
        ws.send(json.dumps({"type": "ask", "id": "a", "messages": HELLO, "max_tokens": 4}))
        m = recv_json(ws)
        assert m["type"] == "error" and m["status"] == 401, m
        assert close_code(ws) == 1008
    # a bad key: error then 1008
    with ws_connect(keyed) as ws:
        ws.send(json.dumps({"type": "auth", "key": "key-B"}))
        m = recv_json(ws)
        assert m["type"] == "error" and m["status"] == 401, m
        assert close_code(ws) == 1008
    # a good key, then asks
    with ws_connect(keyed) as ws:
        ws.send(json.dumps({"type": "auth", "key": "key-A"}))
        assert recv_json(ws) == {"type": "auth", "ok": True}
        ws.send(json.dumps({"type": "ask", "id": "a", "messages": HELLO, "max_tokens": 4}))
        assert collect(ws, ["a"])["a"]["end"]["type"] == "done"
    # or an Authorization header on the upgrade
    with ws_connect(keyed, additional_headers={"Authorization": "Bearer key-A"}) as ws:
        ws.send(json.dumps({"type": "ask", "id": "h", "messages": HELLO, "max_tokens": 4}))
        assert collect(ws, ["h"])["h"]["end"]["type"] == "done"
    with pytest.raises(InvalidStatus) as ei:
        ws_connect(keyed, additional_headers={"Authorization": "Bearer key-B"})
    assert ei.value.response.status_code == 401


# ---- RFC 6455 on raw sockets ------------------------------------------------------------------

def test_unmasked_client_frame_closes_1002(svc):
    sock = raw_open(svc)
    try:
        sock.sendall(frame(1, b'{"type":"ask"}', mask=False))
        assert raw_read_close(sock) == 1002
    finally:
        sock.close()


def test_invalid_utf8_text_closes_1007(svc):
    sock = raw_open(svc)
    try:
        sock.sendall(frame(1, b'{"type":"\xff\xfe"}'))
        assert raw_read_close(sock) == 1007
    finally:
        sock.close()


def test_frame_over_the_limit_closes_1009(svc):
    sock = raw_open(svc)
    try:  # the header announces 2^40 bytes: refused at the first bytes of payload
        sock.sendall(frame(2, b"", length=1 << 40)[:10] + os.urandom(4) + os.urandom(64))
        assert raw_read_close(sock) == 1009
    finally:
        sock.close()


def test_fragments_and_ping(svc):
    sock = raw_open(svc)
    try:
        msg = json.dumps({"type": "cancel", "id": "nothing"}).encode()
        sock.sendall(frame(1, msg[:5], fin=False) + frame(9, b"hi") + frame(0, msg[5:]))
        sock.settimeout(10)
        got = b""
        while got.count(b"nothing") < 1 or b"hi" not in got:
            c = sock.recv(65536)
            assert c, got
            got += c
        assert got.startswith(b"\x8a\x02hi"), got  # the pong first, then the error
        assert b'"status":404' in got
        sock.sendall(frame(8, struct.pack(">H", 1000)))
        assert raw_read_close(sock) == 1000
    finally:
        sock.close()


def kv_pages_used(svc):
    _, _, body = svc.request("GET", "/metrics")
    m = re.search(r"^glmserve:kv_pages_used (\d+)", body, re.M)
    return int(m.group(1)) if m else None


def test_closing_the_socket_cancels_its_asks(svc):
    with ws_connect(svc) as ws:
        for i in ("c1", "c2"):
            ws.send(json.dumps({"type": "ask", "id": i, "messages": HELLO, "max_tokens": 4000,
                                "ignore_eos": True}))
        seen = set()
        while seen != {"c1", "c2"}:
            m = recv_json(ws)
            assert m["type"] == "delta", m
            seen.add(m["id"])
        end = time.time() + 10
        while (kv_pages_used(svc) or 0) == 0 and time.time() < end:
            time.sleep(0.05)  # the heartbeat shows the pages in use
        assert kv_pages_used(svc) > 0
    # the socket is closed here, both asks still running
    end = time.time() + 15
    while kv_pages_used(svc) != 0 and time.time() < end:
        time.sleep(0.1)
    assert kv_pages_used(svc) == 0
    st, _, body = svc.request("GET", "/metrics")
    assert 'glmserve:requests_total{route="/v1/ws",status="101"}' in body


def test_drain_closes_sockets_1001(build_dir, fixtures, tmp_path):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path)
    try:
        with ws_connect(s) as ws:
            ws.send(json.dumps({"type": "ask", "id": "d", "messages": HELLO, "max_tokens": 4}))
            assert collect(ws, ["d"])["d"]["end"]["type"] == "done"
            s.proc.send_signal(signal.SIGTERM)
            assert close_code(ws) == 1001
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
