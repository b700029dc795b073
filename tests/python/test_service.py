"""The whole service (glmserve master, gateway and worker processes) on the
tiny fixture model: answers equal transformers', nothing is lost when a
worker is killed or stalls, keys reload without dropping a stream, a worker
on another host (network namespace) serves over tcp://, every fatal exit
is non-zero with a reason."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest

from service import Service, data_url, free_port


@pytest.fixture(scope="module")
def cases(fixtures):
    return {c["name"]: c for c in
            json.loads((fixtures / "ref" / "model_cases.json").read_text())["cases"]}


def messages_of(case, fixtures):
    """The case's messages with each image part as an image_url data URL."""
    imgs = iter(case["images"])
    out = []
    for m in case["messages"]:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": data_url(
                fixtures / "ref" / next(imgs))}} if p["type"] == "image" else p for p in content]
        out.append({**m, "content": content})
    return out


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("svc"))
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.mark.parametrize("name", ["text_only", "one_image", "two_images"])
def test_greedy_answers_equal_transformers(svc, fixtures, cases, name):
    case = cases[name]
    msgs = messages_of(case, fixtures)
    n = len(case["greedy_ids"])
    st, body = svc.chat(msgs, max_tokens=n, temperature=0)
    assert st == 200, body
    ch = body["choices"][0]
    assert ch["finish_reason"] == "length"
    assert ch["message"]["content"] == case["greedy_text"]
    assert body["usage"]["completion_tokens"] == n
    st, chunks, text, err = svc.stream(msgs, max_tokens=n, temperature=0,
                                       stream_options={"include_usage": True})
    assert st == 200 and err is None
    assert text == case["greedy_text"]
    assert chunks[-1]["usage"]["completion_tokens"] == n and chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_probes_and_models(svc):
    st, _, body = svc.request("GET", "/health")
    assert st == 200 and json.loads(body)["status"] == "ok"
    st, _, body = svc.request("GET", "/ready")
    assert st == 200 and json.loads(body) == {"ready": True, "workers_up": 1, "workers": 1}
    st, _, body = svc.request("GET", "/v1/models")
    assert st == 200 and json.loads(body)["data"][0]["id"] == "tiny-glm4v"
    st, _, body = svc.request("GET", "/metrics")
    assert st == 200 and "glmserve:workers_up 1" in body


def stream_many(svc, n, msgs, **kw):
    """n concurrent streams; returns (results, started) where started[i]
    is set once stream i has its second chunk."""
    results = [None] * n
    started = [threading.Event() for _ in range(n)]

    def run(i):
        try:
            results[i] = svc.stream(msgs, on_chunk=lambda k, _: k >= 2 and started[i].set(),
                                    **kw)
        except Exception as e:  # a hang or a reset is a failure, reported below
            results[i] = ("exception", repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results, started


def check_complete_or_explicit(results, max_tokens):
    ok = errors = 0
    for r in results:
        assert r is not None and r[0] == 200, r
        _, chunks, text, err = r
        if err is None:
            assert chunks[-1]["choices"][0]["finish_reason"] == "length", chunks[-1]
            ok += 1
        else:
            assert "worker" in err["message"], err
            errors += 1
    return ok, errors


def test_kill_9_of_a_worker_mid_stream(build_dir, fixtures, tmp_path):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, workers=2)
    try:
        s.wait_ready(2)
        msgs = [{"role": "user", "content": "Tell me a long story."}]
        threads, results, started = stream_many(s, 20, msgs, max_tokens=300, temperature=0)
        for e in started:
            assert e.wait(60), "a stream did not start"
        victim = s.pids("worker")[0]
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(120)
            assert not t.is_alive(), "a client hangs"
        ok, errors = check_complete_or_explicit(results, 300)
        assert errors >= 1 and ok >= 1, (ok, errors)
        # restarted, and the next 20 requests all succeed
        end = time.time() + 60
        while s.pids("worker")[0] == victim and time.time() < end:
            time.sleep(0.1)
        assert s.pids("worker")[0] != victim
        s.wait_ready(2)
        assert "killed by signal 9" in s.log_text()
        threads, results, _ = stream_many(s, 20, msgs, max_tokens=8, temperature=0)
        for t in threads:
            t.join(120)
        assert all(r[0] == 200 and r[3] is None for r in results), results
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_sigstopped_worker_is_declared_dead_and_restarted(build_dir, fixtures, tmp_path):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, workers=2,
                heartbeat_timeout_ms=1000)
    try:
        s.wait_ready(2)
        msgs = [{"role": "user", "content": "Tell me a long story."}]
        threads, results, started = stream_many(s, 6, msgs, max_tokens=300, temperature=0)
        for e in started:
            assert e.wait(60)
        victim = s.pids("worker")[0]
        t0 = time.time()
        os.kill(victim, signal.SIGSTOP)
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a client hangs on a stopped worker"
        assert time.time() - t0 < 30
        ok, errors = check_complete_or_explicit(results, 300)
        assert errors >= 1
        log = s.log_text()
        assert "declared dead: no heartbeat" in log
        end = time.time() + 30
        while s.pids("worker")[0] == victim and time.time() < end:
            time.sleep(0.1)
        assert s.pids("worker")[0] != victim and not s.alive(victim)
        s.wait_ready(2)
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_jobs_of_a_worker_stalled_before_its_first_token_are_resent(build_dir, fixtures,
                                                                     tmp_path):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, workers=2,
                heartbeat_timeout_ms=1000)
    try:
        s.wait_ready(2)
        os.kill(s.pids("worker")[0], signal.SIGSTOP)  # looks up until its heartbeats stop
        msgs = [{"role": "user", "content": "Hello"}]
        threads, results, _ = stream_many(s, 8, msgs, max_tokens=16, temperature=0)
        for t in threads:
            t.join(60)
            assert not t.is_alive()
        assert all(r[0] == 200 and r[3] is None for r in results), results
        assert "resent" in s.log_text()
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def key_line(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest() + "\n"


def test_sighup_swaps_keys_without_dropping_an_open_stream(build_dir, fixtures, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(key_line("key-A"))
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--api-key-file", keys)
    try:
        msgs = [{"role": "user", "content": "Hello"}]
        st, body = s.chat(msgs, max_tokens=4)
        assert st == 401 and body["error"]["type"] == "authentication_error"
        st, body = s.chat(msgs, key="key-B", max_tokens=4)
        assert st == 401
        threads, results, started = stream_many(s, 1, msgs, key="key-A", max_tokens=400,
                                                temperature=0)
        assert started[0].wait(60)
        keys.write_text(key_line("key-B"))
        os.kill(s.proc.pid, signal.SIGHUP)
        end = time.time() + 10
        while "reloaded keys" not in s.log_text() and time.time() < end:
            time.sleep(0.05)
        assert "reloaded keys" in s.log_text()
        assert s.chat(msgs, key="key-A", max_tokens=4)[0] == 401
        assert s.chat(msgs, key="key-B", max_tokens=4)[0] == 200
        threads[0].join(120)
        st, chunks, text, err = results[0]
        assert st == 200 and err is None, err
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        # a bad keys file is refused and the running keys stay
        keys.write_text("sha256:nothex\n")
        os.kill(s.proc.pid, signal.SIGHUP)
        end = time.time() + 10
        while "reload refused" not in s.log_text() and time.time() < end:
            time.sleep(0.05)
        assert "reload refused" in s.log_text()
        assert s.chat(msgs, key="key-B", max_tokens=4)[0] == 200
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_sigterm_lets_streams_finish_then_exits_zero(build_dir, fixtures, tmp_path):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path)
    msgs = [{"role": "user", "content": "Hello"}]
    threads, results, started = stream_many(s, 3, msgs, max_tokens=200, temperature=0)
    for e in started:
        assert e.wait(60)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    assert all(r[0] == 200 and r[3] is None and
               r[1][-1]["choices"][0]["finish_reason"] == "length" for r in results), results
    assert s.stop() == 0
    log = s.log_text()
    assert "draining" in log and "stopped" in log
    assert not s.pid_file.exists()


@pytest.mark.parametrize("args,code,words", [
    (["--port", "70000"], 2, "port"),
    (["--bogus"], 2, "bogus"),
    (["--host", "0.0.0.0"], 2, "without API keys"),
    (["--backend", "tpu"], 2, "backend"),
    (["--api-key-file", "/nonexistent/keys"], 1, "keys"),
])
def test_bad_configuration_is_a_clear_error(build_dir, fixtures, tmp_path, args, code, words):
    r = subprocess.run([str(build_dir / "gateway" / "glmserve"), "--model",
                        str(fixtures / "tiny-glm4v"), "--port", str(free_port()),
                        "--run-dir", str(tmp_path / "run"), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == code, r.stderr
    assert words in r.stderr


def test_config_file_and_port_in_use(build_dir, fixtures, tmp_path):
    busy = __import__("socket").socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    cfg = tmp_path / "glmserve.json"
    cfg.write_text(json.dumps({"model": str(fixtures / "tiny-glm4v"),
                               "port": busy.getsockname()[1]}))
    r = subprocess.run([str(build_dir / "gateway" / "glmserve"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    busy.close()
    assert r.returncode == 1 and "cannot listen" in r.stderr
    cfg.write_text(json.dumps({"model": str(fixtures / "tiny-glm4v"), "prot": 1}))
    r = subprocess.run([str(build_dir / "gateway" / "glmserve"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'prot'" in r.stderr


def netns_available():
    if os.geteuid() != 0 or not shutil.which("ip"):
        return "needs root and iproute2"
    name = "gs-probe-" + uuid.uuid4().hex[:6]
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode:
        return "ip netns add failed: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", name])
    return None


def test_worker_in_another_network_namespace_serves_over_tcp(build_dir, fixtures, tmp_path,
                                                              cases):
    why = netns_available()
    if why:
        pytest.skip(f"network namespaces unavailable here: {why}")
    tag = uuid.uuid4().hex[:6]
    nw, ng = f"gs-w-{tag}", f"gs-g-{tag}"
    net = f"10.231.{int(tag[:2], 16)}"
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    worker = s = None
    try:
        for ns in (nw, ng):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"vw{tag}", "type", "veth", "peer", "name", f"vg{tag}")
        sh("ip", "link", "set", f"vw{tag}", "netns", nw)
        sh("ip", "link", "set", f"vg{tag}", "netns", ng)
        sh("ip", "-n", nw, "addr", "add", f"{net}.1/24", "dev", f"vw{tag}")
        sh("ip", "-n", ng, "addr", "add", f"{net}.2/24", "dev", f"vg{tag}")
        sh("ip", "-n", nw, "link", "set", f"vw{tag}", "up")
        sh("ip", "-n", ng, "link", "set", f"vg{tag}", "up")
        url = f"tcp://{net}.1:7411"
        wlog = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen(["ip", "netns", "exec", nw,
                                   str(build_dir / "worker" / "glmserve-worker"), "--model",
                                   str(fixtures / "tiny-glm4v"), "--listen", url, "--kv-memory",
                                   "64", "--max-model-len", "8192"], stdout=wlog,
                                  stderr=subprocess.STDOUT)
        s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--remote-worker", url,
                    workers=0, netns=ng, ready=False)
        case = cases["one_image"]
        body = json.dumps({"messages": messages_of(case, fixtures), "temperature": 0,
                           "max_tokens": len(case["greedy_ids"])})
        (tmp_path / "req.json").write_text(body)
        end, out = time.time() + 90, None
        while time.time() < end:
            r = subprocess.run(["ip", "netns", "exec", ng, "curl", "-s", "-m", "60",
                                f"http://127.0.0.1:{s.port}/v1/chat/completions", "-H",
                                "Content-Type: application/json", "--data-binary",
                                f"@{tmp_path / 'req.json'}"], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout and '"choices"' in r.stdout:
                out = json.loads(r.stdout)
                break
            time.sleep(0.3)
        assert out, s.log_text()[-3000:]
        assert out["choices"][0]["message"]["content"] == case["greedy_text"]
        assert url in s.log_text() and " up at " in s.log_text()
    finally:
        if s:
            s.stop()
        if worker:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        for ns in (nw, ng):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def metric(svc, name):
    st, _, body = svc.request("GET", "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_client_disconnect_mid_stream_cancels_the_job_and_frees_its_pages(svc):
    c = svc.conn(60)
    c.request("POST", "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "Tell me a very long story."}],
         "max_tokens": 4000, "temperature": 0, "stream": True}),
        {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200
    for _ in range(3):
        assert r.readline().startswith(b"data: ")
        r.readline()
    end = time.time() + 10
    while metric(svc, "glmserve:kv_pages_used") == 0 and time.time() < end:
        time.sleep(0.05)
    assert metric(svc, "glmserve:kv_pages_used") > 0  # the job holds pages while it runs
    c.sock.shutdown(__import__("socket").SHUT_RDWR)
    c.close()
    t0 = time.time()
    while time.time() - t0 < 5:
        if (metric(svc, "glmserve:kv_pages_used") == 0 and
                metric(svc, "glmserve:num_requests_running") == 0):
            break
        time.sleep(0.05)
    # 4000 tokens would take far longer than this: the job was cancelled
    assert metric(svc, "glmserve:kv_pages_used") == 0
    assert metric(svc, "glmserve:num_requests_running") == 0
    assert time.time() - t0 < 5


def test_worker_started_by_hand_dials_in_with_connect(build_dir, fixtures, tmp_path, cases):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--worker-listen", url, workers=0,
                ready=False)
    wlog = open(tmp_path / "worker.log", "wb")
    w = subprocess.Popen([str(build_dir / "worker" / "glmserve-worker"), "--model",
                          str(fixtures / "tiny-glm4v"), "--connect", url, "--kv-memory", "64",
                          "--max-model-len", "8192"], stdout=wlog, stderr=subprocess.STDOUT)
    try:
        s.wait_ready(1)
        case = cases["text_only"]
        st, body = s.chat(messages_of(case, fixtures), max_tokens=len(case["greedy_ids"]),
                          temperature=0)
        assert st == 200 and body["choices"][0]["message"]["content"] == case["greedy_text"]
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0
        end = time.time() + 10
        while time.time() < end and json.loads(s.request("GET", "/ready")[2])["ready"]:
            time.sleep(0.05)
        st, _, body = s.request("GET", "/ready")
        assert st == 503 and json.loads(body)["workers_up"] == 0
    finally:
        if w.poll() is None:
            w.kill()
        assert s.stop() == 0, s.log_text()[-3000:]


def test_full_workers_answer_503_with_retry_after(build_dir, fixtures, tmp_path):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--max-seqs", 1, "--max-queue", 1)
    try:
        msgs = [{"role": "user", "content": "Hello"}]
        out = [None] * 10

        def run(i):
            out[i] = s.request("POST", "/v1/chat/completions",
                               {"messages": msgs, "max_tokens": 48, "temperature": 0})

        threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            assert not t.is_alive()
        busy = [o for o in out if o[0] == 503]
        ok = [o for o in out if o[0] == 200]
        assert len(busy) + len(ok) == 10, [o[0] for o in out]
        assert busy and len(ok) >= 2
        for st, headers, body in busy:
            assert headers.get("Retry-After") == "1"
            assert json.loads(body)["error"]["code"] == "EOVERLOAD"
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]


def test_streamed_text_equals_the_whole_answer_for_any_bytes(svc):
    """Sampled answers of the random model hold characters JSON must escape
    (control characters, quotes, backslashes): the SSE chunks, written
    without jansson, must carry them exactly."""
    msgs = [{"role": "user", "content": 'Write "code" with \\ and\ttabs\n'}]
    seen = set()
    for seed in range(12):
        st, body = svc.chat(msgs, max_tokens=64, temperature=1.5, seed=seed)
        assert st == 200
        whole = body["choices"][0]["message"]
        st, chunks, text, err = svc.stream(msgs, max_tokens=64, temperature=1.5, seed=seed)
        assert st == 200 and err is None
        reasoning = "".join(ch["choices"][0]["delta"].get("reasoning_content") or ""
                            for ch in chunks if ch["choices"])
        assert text == whole["content"]
        assert reasoning.rstrip("\n") == (whole.get("reasoning_content") or "")
        seen.update(c for c in text + reasoning if c in '"\\\n\t\r' or ord(c) < 0x20)
    assert seen, "no character that needs escaping came up"  # the escapes were exercised


def test_remote_image_urls_are_fetched_only_when_allowed(build_dir, fixtures, tmp_path, cases):
    import http.server
    import socket as socketlib

    root = fixtures / "ref"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    silent = socketlib.socket()  # accepts, never answers: a download that times out
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    case = cases["one_image"]
    n = len(case["greedy_ids"])

    def ask(svc, url):
        msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "What is in this image?"}]}]
        return svc.chat(msgs, max_tokens=n, temperature=0)

    url = f"{base}/{case['images'][0]}"
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path / "a", "--fetch-images",
                "--fetch-allow-private", "--fetch-timeout-ms", 1000)
    try:
        st, body = ask(s, url)
        assert st == 200, body
        assert body["choices"][0]["message"]["content"] == case["greedy_text"]
        st, body = ask(s, f"{base}/images/no_such.png")
        assert st == 502 and "404" in body["error"]["message"], body
        st, body = ask(s, f"http://127.0.0.1:{silent.getsockname()[1]}/x.png")
        assert st == 504 and "image 0" in body["error"]["message"], body
        st, body = ask(s, "ftp://example.invalid/x.png")
        assert st == 400
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
    # without fetch_allow_private a loopback URL is never fetched
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path / "b", "--fetch-images")
    try:
        st, body = ask(s, url)
        assert st == 400 and "not allowed" in body["error"]["message"], body
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
    # and by default no URL is fetched at all
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path / "c")
    try:
        st, body = ask(s, url)
        assert st == 400 and "not fetched" in body["error"]["message"], body
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
        httpd.shutdown()
        silent.close()
