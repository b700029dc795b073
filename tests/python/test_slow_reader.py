"""A client that stops reading its stream (Server-Sent Events or a
WebSocket): once it takes none of the waiting bytes for send_timeout, the
gateway drops it and cancels its job (the worker's pages come back);
other clients are served as before."""
import json
import socket
import time

import pytest

from service import Service
from test_ws import frame, raw_open


def metric(svc, name):
    st, _, body = svc.request("GET", "/metrics")
    assert st == 200
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def svc(build_dir, fixtures, tmp_path):
    # a frame per token (--stream-interval-us 0): the buffers fill sooner
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--send-timeout", 1,
                "--max-model-len", 32768, "--stream-interval-us", 0)
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def wait_cancelled(svc, before, t0, what):
    """Waits for the log line and the cancelled job with its pages freed."""
    cancelled = 'glmserve:requests_finished_total{finish_reason="cancelled"}'
    end = t0 + 120
    while time.time() < end and what not in svc.log_text():
        time.sleep(0.1)
    assert what in svc.log_text(), svc.log_text()[-3000:]
    while time.time() < end and (metric(svc, cancelled) < before + 1
                                 or metric(svc, "glmserve:num_requests_running") > 0):
        time.sleep(0.1)
    assert metric(svc, cancelled) == before + 1
    assert metric(svc, "glmserve:num_requests_running") == 0
    print(f"dropped and cancelled after {time.time() - t0:.1f} s")


def test_an_sse_client_that_stops_reading_is_closed_and_its_job_cancelled(svc):
    cancelled = 'glmserve:requests_finished_total{finish_reason="cancelled"}'
    before = metric(svc, cancelled)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    s.connect((svc.host, svc.port))
    body = json.dumps({"messages": [{"role": "user", "content": "Tell me everything."}],
                       "max_tokens": 30000, "temperature": 0, "ignore_eos": True,
                       "stream": True}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    wait_cancelled(svc, before, time.time(), "http: 127.0.0.1")
    # the connection is closed: reading drains what was sent, then EOF or a reset
    s.settimeout(10)
    got = 0
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
    except ConnectionResetError:
        pass
    s.close()
    assert got > 0
    # everyone else is served as before
    st, r = svc.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    assert st == 200 and r["usage"]["completion_tokens"] == 4


def test_a_websocket_that_stops_reading_is_dropped_and_its_ask_cancelled(svc):
    before = metric(svc, 'glmserve:requests_finished_total{finish_reason="cancelled"}')
    sock = raw_open(svc, rcvbuf=4096)  # a small window, never read
    ask = {"type": "ask", "id": "a", "messages": [{"role": "user", "content": "Go on."}],
           "max_tokens": 30000, "temperature": 0, "ignore_eos": True}
    sock.sendall(frame(0x1, json.dumps(ask).encode()))
    wait_cancelled(svc, before, time.time(), "ws: 127.0.0.1")
    sock.close()
    st, r = svc.chat([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    assert st == 200 and r["usage"]["completion_tokens"] == 4
