"""The whole service under AddressSanitizer + LeakSanitizer (issue 23,
item 2): when GS_BUILD_DIR is a sanitizer build (GS_SANITIZE=ON, as CI's
build/test-native), the tiny-model service serves a few dozen mixed
requests (text, streams, images, client cancels, hostile bodies, WebSocket
asks with an image frame and a cancel), then gets SIGTERM. Every process
must stay free of sanitizer reports and exit cleanly: LeakSanitizer runs
when the master and the workers exit (their main returns) and reports to
the shared log; a leak also makes the process exit non-zero (23).

Gateways are forked children that leave with _exit(), which skips
LeakSanitizer's exit-time check; they are covered only if the gateway's
exit path calls __lsan_do_leak_check() (docs/reliability.md says which
processes this run checks). Skipped on a build without sanitizers."""
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
from websockets.sync.client import connect

from service import Service, data_url

HELLO = [{"role": "user", "content": "Hello, who are you?"}]
REPORT = re.compile(r"LeakSanitizer|AddressSanitizer|runtime error:|SUMMARY: UndefinedBehavior")


def sanitized(build_dir):
    cache = build_dir / "CMakeCache.txt"
    return cache.exists() and re.search(r"^GS_SANITIZE:BOOL=(ON|1|TRUE)$",
                                        cache.read_text(), re.M | re.I)


def cancel_mid_stream(s):
    c = s.conn(60)
    c.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": HELLO, "max_tokens": 2000, "ignore_eos": True, "stream": True}),
        {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    assert r.readline().startswith(b"data: ")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()


def ws_session(s, img):
    with connect(f"ws://{s.host}:{s.port}/v1/ws", open_timeout=10, close_timeout=5,
                 max_size=None) as ws:
        ws.send(json.dumps({"type": "ask", "id": "t", "messages": HELLO, "max_tokens": 8}))
        ws.send(json.dumps({"type": "ask", "id": "i", "images": 1, "max_tokens": 8,
                            "messages": [{"role": "user", "content": [
                                {"type": "image_ref", "index": 0},
                                {"type": "text", "text": "What is this?"}]}]}))
        ws.send(img.read_bytes())
        ws.send(json.dumps({"type": "ask", "id": "long", "messages": HELLO,
                            "max_tokens": 4000, "ignore_eos": True}))
        # a model name whose quote in the error would split a character:
        # the error frame must still come (it is JSON, so valid UTF-8)
        ws.send(json.dumps({"type": "ask", "id": "m", "messages": HELLO,
                            "model": "a" + "\u00e9" * 150}, ensure_ascii=False))
        ws.send("{not json")
        ends, cancelled = {}, False
        end = time.time() + 120
        while len(ends) < 4 and time.time() < end:
            m = json.loads(ws.recv(timeout=max(0.1, end - time.time())))
            if m.get("id") == "long" and m["type"] == "delta" and not cancelled:
                ws.send(json.dumps({"type": "cancel", "id": "long"}))
                cancelled = True
            if m["type"] in ("done", "error") and m.get("id") in ("t", "i", "long", "m"):
                ends[m["id"]] = m
        assert ends["t"]["type"] == ends["i"]["type"] == "done", ends
        assert ends["long"].get("finish_reason") == "cancelled", ends
        assert ends["m"]["type"] == "error" and ends["m"]["status"] == 404, ends
        assert "does not exist" in ends["m"]["message"]
        # and one left running when the socket closes
        ws.send(json.dumps({"type": "ask", "id": "gone", "messages": HELLO,
                            "max_tokens": 4000, "ignore_eos": True}))
        json.loads(ws.recv(timeout=60))


def test_service_run_under_asan_and_lsan_reports_nothing(build_dir, fixtures, tmp_path,
                                                         monkeypatch):
    if not sanitized(build_dir):
        pytest.skip(f"{build_dir} is not a sanitizer build (GS_SANITIZE=ON)")
    # the children inherit it: leaks on, reports to stderr (the log), and a
    # report makes the process exit non-zero
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
    monkeypatch.setenv("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, workers=2, gateways=2)
    imgs = fixtures / "ref" / "images"
    try:
        s.wait_ready(2)
        done = []

        def client(k):
            msgs = HELLO if k % 3 else [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(
                    imgs / ("model_56x56.png" if k % 2 else "exif6_120x80.jpg"))}},
                {"type": "text", "text": "Describe it."}]}]
            if k % 2:
                st, body = s.chat(msgs, max_tokens=12, temperature=0.7, seed=k)
                assert st == 200, body
            else:
                st, chunks, text, err = s.stream(msgs, max_tokens=12,
                                                 stream_options={"include_usage": True})
                assert st == 200 and err is None, err
            done.append(k)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
        for t in threads:
            t.start()
        for _ in range(4):
            cancel_mid_stream(s)
        for body in (b"{not json", b'{"messages": 5}', json.dumps(
                {"messages": HELLO, "max_tokens": -1}).encode(), json.dumps(
                {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
                    "url": "data:image/png;base64,iVBORw0KGgo="}}]}]}).encode()):
            st, _, _ = s.request("POST", "/v1/chat/completions", body,
                                 {"Content-Type": "application/json"})
            assert 400 <= st < 500
        ws_session(s, imgs / "model_56x56.png")
        for t in threads:
            t.join(180)
            assert not t.is_alive()
        assert len(done) == 24
        assert s.request("GET", "/metrics")[0] == 200
    finally:
        rc = s.stop(timeout=120)
    log = s.log_text()
    assert not REPORT.search(log), log[max(0, REPORT.search(log).start() - 2000):][:8000]
    assert rc == 0, log[-3000:]
    # every child left on its own with status 0 (a report would make it 23)
    assert not re.search(r"(worker|gateway) \d+ \(pid \d+\) (exited with status [1-9]|was killed)",
                         log), log[-3000:]
    assert "stopped" in log
