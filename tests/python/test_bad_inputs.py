"""Hostile and malformed input against the whole service (master, gateway,
worker on the tiny model): each case gets the right HTTP status and an
OpenAI-shaped JSON error body ({"error": {"message", "type", "param",
"code"}}), nothing crashes or hangs, and at the end the same master,
gateway and worker processes still serve /health and a good chat request.

Cases are (id, how it is sent, expected status, a word the message must
contain or None). How it is sent:
- a dict: the JSON body of POST /v1/chat/completions;
- ("body", bytes[, content type]): those exact bytes as that body;
- ("raw", bytes): those bytes on a fresh TCP connection (the request line
  and headers included), the first response read back;
- ("http", method, path[, headers]): an http.client request.

The slowloris case (a client trickling header bytes until the server's
10 s header timeout) runs in a thread started with the service, so its
wait overlaps the other cases; its test only collects the result."""
import base64
import json
import socket
import struct
import threading
import time
import zlib

import pytest

from service import Service, data_url

ROUTE = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]
TIMEOUT = 30  # seconds, every socket operation


# ---- raw HTTP ------------------------------------------------------------------


def read_response(f):
    """One HTTP/1.x response from a socket file: (status, {header: value}, body).
    Headers are lower-cased; repeated ones are joined with ', '."""
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed before a response")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    assert parts[0] in ("HTTP/1.1", "HTTP/1.0"), line
    status = int(parts[1])
    headers = {}
    while True:
        h = f.readline().decode("latin-1").rstrip("\r\n")
        if not h:
            break
        k, v = h.split(":", 1)
        k = k.strip().lower()
        headers[k] = headers[k] + ", " + v.strip() if k in headers else v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                f.readline()
                break
            body += f.read(n)
            f.readline()
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:
        body = f.read()  # until close
    return status, headers, body


def raw(svc, data, n=1, timeout=TIMEOUT):
    """Sends data on a fresh connection and reads n responses."""
    s = socket.create_connection((svc.host, svc.port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before all was sent: the answer is still there
        f = s.makefile("rb")
        return [read_response(f) for _ in range(n)]
    finally:
        s.close()


def post_raw(body, ctype="application/json", extra=b""):
    return (b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " +
            ctype.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" +
            extra + b"Connection: close\r\n\r\n" + body)


def check_error_body(status, headers, body, word=None):
    """The body is {"error": {"message", "type", "param", "code"}} as OpenAI's."""
    assert headers.get("content-type", "").startswith("application/json"), (status, headers)
    obj = json.loads(body)
    assert set(obj) == {"error"}, obj
    e = obj["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert isinstance(e["message"], str) and e["message"], e
    assert isinstance(e["type"], str) and e["type"], e
    assert e["param"] is None or isinstance(e["param"], str), e
    assert e["code"] is None or isinstance(e["code"], (str, int)), e
    if word:
        assert word.lower() in e["message"].lower(), e
    if status < 500:
        assert e["type"] != "server_error", e  # the client's fault, said as such
    return e


# ---- images made here ----------------------------------------------------------------


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(w=30000, h=30000):
    """A valid-looking RGB PNG whose header claims w x h: one compressed
    row of zeros (a few hundred bytes) where 2.7 GB would be."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * w), 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + \
        png_chunk(b"IEND", b"")


def image_msg(url):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What is it?"}]}]


def b64_url(kind, data):
    return f"data:{kind};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def images(fixtures):
    d = fixtures / "ref" / "images"
    return {"png": data_url(d / "gray_123x77.png"),
            "jpeg_bytes": (d / "exif3_90x60.jpg").read_bytes()}


# ---- the service -------------------------------------------------------------------------


def slowloris(svc, out):
    """Trickles a request's header bytes (one every 0.5 s) until the server
    answers; out gets (status, headers, body, seconds) or an exception."""
    t0 = time.time()
    try:
        s = socket.create_connection((svc.host, svc.port), timeout=20)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.5)
        f = s.makefile("rb")
        got = None
        for i in range(40):  # at most ~20 s
            try:
                s.sendall(b"X-Slow-%d: y\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                peek = s.recv(1, socket.MSG_PEEK)
            except socket.timeout:
                continue
            s.settimeout(5)
            got = read_response(f) if peek else None
            break
        s.close()
        out.append((*got, time.time() - t0) if got else ConnectionError("no answer"))
    except Exception as e:  # noqa: BLE001 - reported by the test
        out.append(e)


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("bad"),
                "--max-body-mb", "1", "--max-images", "4")
    s.start_pids = {"master": s.proc.pid, "gateway": s.pids("gateway"),
                    "worker": s.pids("worker")}
    s.slow = []
    s.slow_thread = threading.Thread(target=slowloris, args=(s, s.slow), daemon=True)
    s.slow_thread.start()
    yield s
    s.slow_thread.join(30)
    assert s.stop() == 0, s.log_text()[-3000:]


# ---- the catalogue -----------------------------------------------------------------------

CHUNKED_HEAD = (b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")

CASES = [
    # the body as a whole
    ("malformed_json", ("body", b'{"messages": [{"role": "user", "content": "hi"}'), 400, "JSON"),
    ("json_array_body", ("body", b'[{"role": "user", "content": "hi"}]'), 400, "object"),
    ("json_string_body", ("body", b'"hello"'), 400, "JSON"),
    ("empty_body", ("body", b""), 400, "JSON"),
    ("json_nan", ("body", b'{"messages": [{"role": "user", "content": "hi"}], '
                          b'"temperature": NaN}'), 400, "JSON"),
    ("duplicate_key", ("body", b'{"messages": [], "messages": [{"role": "user", '
                               b'"content": "hi"}]}'), 400, "duplicate"),
    ("deep_nesting", ("body", b'{"messages": ' + b"[" * 100000 + b"]" * 100000 + b"}"), 400,
     "JSON"),
    ("invalid_utf8_in_message",
     ("body", b'{"messages": [{"role": "user", "content": "caf\xc3\x28 \xff\xfe"}]}'), 400, None),
    ("nul_escape_in_message",
     ("body", b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}'), 400, None),
    ("wrong_content_type", ("body", b'{"messages": [{"role": "user", "content": "hi"}]}',
                            "text/plain"), 415, "Content-Type"),
    ("content_type_json_prefix", ("body", b'{"messages": [{"role": "user", "content": "hi"}]}',
                                  "application/jsonx"), 415, "Content-Type"),
    ("lone_surrogate", ("body", b'{"messages": [{"role": "user", "content": "\\ud800"}]}'), 400,
     "JSON"),
    ("integer_too_big", ("body", b'{"messages": [{"role": "user", "content": "hi"}], '
                                 b'"max_tokens": 99999999999999999999999}'), 400, "JSON"),
    # messages
    ("missing_messages", {"max_tokens": 1}, 400, "messages"),
    ("empty_messages", {"messages": []}, 400, "messages"),
    ("messages_string", {"messages": "hello"}, 400, "messages"),
    ("messages_object", {"messages": {"role": "user", "content": "hi"}}, 400, "messages"),
    ("messages_of_strings", {"messages": ["hello"]}, 400, None),
    ("message_content_number", {"messages": [{"role": "user", "content": 5}]}, 400, None),
    ("message_without_role", {"messages": [{"content": "hi"}]}, 400, "role"),
    ("unknown_role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("role_number", {"messages": [{"role": 7, "content": "hi"}]}, 400, "role"),
    # quoted back cut to 40 bytes in the middle of a character: must still be answered
    ("role_non_ascii", {"messages": [{"role": "a" + "\u00e9" * 30, "content": "hi"}]}, 400,
     "role"),
    ("part_type_non_ascii", {"messages": [{"role": "user", "content": [
        {"type": "a" + "\u00e9" * 30, "text": "hi"}]}]}, 400, "type"),
    ("unknown_part_type", {"messages": [{"role": "user", "content": [
        {"type": "audio", "text": "hi"}]}]}, 400, "type"),
    ("text_part_without_text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     400, "text"),
    # wrong types
    ("max_tokens_string", {"messages": HELLO, "max_tokens": "10"}, 400, "max_tokens"),
    ("max_tokens_float", {"messages": HELLO, "max_tokens": 1.5}, 400, "max_tokens"),
    ("temperature_string", {"messages": HELLO, "temperature": "hot"}, 400, "temperature"),
    ("temperature_bool", {"messages": HELLO, "temperature": True}, 400, "temperature"),
    ("top_p_string", {"messages": HELLO, "top_p": "all"}, 400, "top_p"),
    ("top_k_string", {"messages": HELLO, "top_k": "5"}, 400, "top_k"),
    ("top_k_float", {"messages": HELLO, "top_k": 2.5}, 400, "top_k"),
    ("stop_number", {"messages": HELLO, "stop": 5}, 400, "stop"),
    ("stop_list_of_numbers", {"messages": HELLO, "stop": [1, 2]}, 400, "stop"),
    ("seed_string", {"messages": HELLO, "seed": "lucky"}, 400, "seed"),
    ("stream_string", {"messages": HELLO, "stream": "yes"}, 400, "stream"),
    ("stream_number", {"messages": HELLO, "stream": 1}, 400, "stream"),
    ("model_number", {"messages": HELLO, "model": 5}, 400, "model"),
    ("enable_thinking_string", {"messages": HELLO, "chat_template_kwargs":
                                {"enable_thinking": "no"}}, 400, "enable_thinking"),
    # out of range
    ("max_tokens_zero", {"messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens_negative", {"messages": HELLO, "max_tokens": -5}, 400, "max_tokens"),
    ("temperature_negative", {"messages": HELLO, "temperature": -1}, 400, "temperature"),
    ("temperature_huge", {"messages": HELLO, "temperature": 1e6}, 400, "temperature"),
    ("top_p_zero", {"messages": HELLO, "top_p": 0}, 400, "top_p"),
    ("top_p_above_one", {"messages": HELLO, "top_p": 1.5}, 400, "top_p"),
    ("top_k_below_minus_one", {"messages": HELLO, "top_k": -2}, 400, "top_k"),
    ("seed_negative", {"messages": HELLO, "seed": -1}, 400, "seed"),
    ("too_many_stops", {"messages": HELLO, "stop": [f"s{i}" for i in range(17)]}, 400, "stop"),
    ("empty_stop", {"messages": HELLO, "stop": [""]}, 400, "stop"),
    ("presence_penalty_range", {"messages": HELLO, "presence_penalty": 5}, 400,
     "presence_penalty"),
    ("context_exceeded", {"messages": HELLO, "max_tokens": 2_000_000_000}, 400, "context"),
    # unsupported features
    ("n_3", {"messages": HELLO, "n": 3}, 400, "n=1"),
    ("logprobs_true", {"messages": HELLO, "logprobs": True}, 400, "logprobs"),
    ("response_format_json", {"messages": HELLO, "response_format": {"type": "json_object"}},
     400, "response_format"),
    ("unknown_model", {"messages": HELLO, "model": "gpt-17"}, 404, "does not exist"),
    # quoted back cut to 200 bytes in the middle of a character
    ("unknown_model_cut_utf8", {"messages": HELLO, "model": "a" + "\u00e9" * 150}, 404,
     "does not exist"),
    # images
    ("image_invalid_base64", {"messages": image_msg("data:image/png;base64,@@not*base64!!")},
     400, "base64"),
    ("image_data_url_not_image", {"messages": image_msg(b64_url("text/plain", b"hello"))},
     415, "not an image"),
    ("image_not_a_data_url_form", {"messages": image_msg("data:image/png,rawbytes")}, 400,
     "base64"),
    ("image_non_image_bytes", {"messages": image_msg(b64_url("image/png", b"hello world " * 8))},
     415, "not an image"),
    ("image_truncated_jpeg", "truncated_jpeg", 400, None),
    ("image_decompression_bomb", {"messages": image_msg(b64_url("image/png", png_bomb()))},
     413, "pixels"),
    ("image_remote_url", {"messages": image_msg("http://example.com/cat.png")}, 400,
     "remote"),
    ("image_empty", {"messages": image_msg("data:image/png;base64,")}, 400, "empty"),
    ("image_url_missing", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}]}, 400, "url"),
    ("image_part_raw", {"messages": [{"role": "user", "content": [{"type": "image"}]}]}, 400,
     "image_url"),
    ("too_many_images", "too_many_images", 400, "images"),
    # HTTP
    ("wrong_method_chat", ("http", "GET", ROUTE), 405, "allow"),
    ("wrong_method_health", ("http", "DELETE", "/health"), 405, "allow"),
    ("unknown_path", ("http", "GET", "/v2/nothing"), 404, "no route"),
    ("unknown_path_post", ("http", "POST", "/v1/completions"), 404, "no route"),
    ("unknown_path_not_utf8", ("raw", b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"), 404,
     "no route"),
    ("unknown_path_cut_utf8", ("raw", b"GET /a" + "\u00e9".encode() * 150 +
                               b" HTTP/1.1\r\nHost: x\r\n\r\n"), 404, "no route"),
    ("huge_header", ("raw", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 +
                     b"\r\n\r\n"), 431, "too large"),
    ("too_many_headers", ("raw", b"GET /health HTTP/1.1\r\nHost: x\r\n" +
                          b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n"),
     431, "headers"),
    ("huge_body_declared", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 104857600\r\n"
                            b"\r\n{"), 413, "too large"),
    ("huge_body_sent", ("raw", post_raw(b'{"messages": "' + b"x" * (3 << 19) + b'"}')), 413,
     "too large"),
    ("huge_body_chunked", ("raw", CHUNKED_HEAD + b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
                                                          for _ in range(20)) + b"0\r\n\r\n"),
     413, "too large"),
    ("bad_chunk_size", ("raw", CHUNKED_HEAD + b"zz\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("nul_in_path", ("raw", b"GET /hea\0lth HTTP/1.1\r\nHost: x\r\n\r\n"), 400, None),
    ("header_without_colon", ("raw", b"GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
     400, None),
    ("bad_content_length", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 12abc\r\n\r\n{}"), 400, None),
    ("length_and_chunked", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"0\r\n\r\n"), 400, None),
    ("transfer_encoding_gzip", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: gzip\r\n\r\nabc"), 400, None),
    ("two_content_lengths", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x"), 400, None),
    ("negative_content_length", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: -1\r\n\r\n{}"), 400, None),
    ("bare_cr_in_header", ("raw", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"), 400,
     None),
    ("http_0_9", ("raw", b"GET /health\r\n\r\n"), 505, "version"),
    ("http_2_0_version", ("raw", b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n"), 505, "version"),
    ("garbage_request_line", ("raw", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
     400, None),
    ("expect_unknown", ("raw", b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}"), 417, "Expect"),
]


def send(svc, how, images):
    """-> (status, headers lower-cased, body bytes)"""
    if how == "truncated_jpeg":
        data = images["jpeg_bytes"]
        how = {"messages": image_msg(b64_url("image/jpeg", data[:len(data) // 3]))}
    elif how == "too_many_images":
        how = {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": images["png"]}}] * 5}]}
    if isinstance(how, dict):
        return raw(svc, post_raw(json.dumps(how).encode()))[0]
    kind = how[0]
    if kind == "body":
        return raw(svc, post_raw(how[1], *how[2:]))[0]
    if kind == "raw":
        return raw(svc, how[1])[0]
    if kind == "http":
        method, path = how[1], how[2]
        st, h, body = svc.request(method, path, headers=how[3] if len(how) > 3 else None,
                                  timeout=TIMEOUT)
        return st, {k.lower(): v for k, v in h.items()}, body.encode()
    raise AssertionError(how)


def test_catalogue_size():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,how,status,word", CASES, ids=[c[0] for c in CASES])
def test_bad_input(svc, images, name, how, status, word):
    st, headers, body = send(svc, how, images)
    assert st == status, (st, body[:500])
    check_error_body(st, headers, body, word)
    if status == 405:
        allow = headers.get("allow", "")
        assert allow, headers
        assert ("POST" if name == "wrong_method_chat" else "GET") in allow, headers
    # the worker and the gateway are still there after each case
    for kind in ("gateway", "worker"):
        for pid in svc.start_pids[kind].values():
            assert svc.alive(pid), f"{kind} {pid} died after {name}:\n" + svc.log_text()[-2000:]


# ---- answered correctly, not refused ---------------------------------------------------------


def test_http_1_0(svc):
    """An HTTP/1.0 request gets an answer and the connection closes after it."""
    [(st, h, body)] = raw(svc, b"GET /health HTTP/1.0\r\n\r\n")
    assert st == 200 and json.loads(body)["status"] == "ok"
    assert h.get("connection", "").lower() == "close"
    req = json.dumps({"messages": HELLO, "max_tokens": 2, "temperature": 0}).encode()
    [(st, h, body)] = raw(svc, b"POST " + ROUTE.encode() + b" HTTP/1.0\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n" % len(req) + req)
    assert st == 200, body
    assert json.loads(body)["object"] == "chat.completion"
    # HTTP/1.0 streams run until the connection closes (no chunks)
    req = json.dumps({"messages": HELLO, "max_tokens": 2, "stream": True}).encode()
    [(st, h, body)] = raw(svc, b"POST " + ROUTE.encode() + b" HTTP/1.0\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n" % len(req) + req)
    assert st == 200 and "transfer-encoding" not in h, h
    assert body.rstrip().endswith(b"data: [DONE]"), body


def test_pipelined(svc):
    """Three requests in one write: three answers, in order."""
    req = json.dumps({"messages": HELLO, "max_tokens": 1, "temperature": 0}).encode()
    data = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST " + ROUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/json\r\nContent-Length: %d\r\n\r\n" % len(req) + req +
            b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (s1, _, b1), (s2, _, b2), (s3, h3, b3) = raw(svc, data, n=3)
    assert s1 == 200 and json.loads(b1)["status"] == "ok"
    assert s2 == 200 and json.loads(b2)["choices"][0]["finish_reason"] == "length"
    assert s3 == 404
    check_error_body(s3, h3, b3, "no route")


def test_slowloris(svc):
    """A client trickling header bytes is cut with 408 at the header
    timeout (10 s), counted from the accept, not from the last byte."""
    svc.slow_thread.join(30)
    assert svc.slow, "the slowloris thread did not finish"
    got = svc.slow[0]
    if isinstance(got, Exception):
        raise got
    st, h, body, secs = got
    assert st == 408, (st, body)
    check_error_body(st, h, body, "timed out")
    assert 9 <= secs <= 15, secs


def test_still_serving_same_processes(svc):
    st, _, body = svc.request("GET", "/health", timeout=TIMEOUT)
    assert st == 200 and json.loads(body)["status"] == "ok"
    st, body = svc.chat(HELLO, max_tokens=2, temperature=0, timeout=TIMEOUT)
    assert st == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert svc.proc.poll() is None
    assert svc.proc.pid == svc.start_pids["master"]
    assert svc.pids("gateway") == svc.start_pids["gateway"]
    assert svc.pids("worker") == svc.start_pids["worker"]
    for kind in ("gateway", "worker"):
        for pid in svc.start_pids[kind].values():
            assert svc.alive(pid)
    log = svc.log_text()
    for bad in ("AddressSanitizer", "runtime error", "LeakSanitizer", "restarting it"):
        assert bad not in log, log[-3000:]
