"""The real service under test: glmserve (master, gateways, workers) on the
tiny fixture model, on a free port, with helpers to talk to it over plain
HTTP (http.client, so every byte and status is visible) and to find its
processes. Every request has a timeout; a service that dies fails fast."""
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def data_url(path):
    data = path.read_bytes()
    kind = "png" if data[:4] == b"\x89PNG" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


class HealthProbe:
    """A context that polls GET /health on svc every 5 ms in a thread;
    .worst is the slowest answer in seconds (a measure of how long the
    gateway's event loop was held meanwhile)."""

    def __init__(self, svc):
        self.svc, self.worst, self.stop = svc, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            st, _, _ = self.svc.request("GET", "/health", timeout=60)
            assert st == 200
            self.worst = max(self.worst, time.perf_counter() - t)
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)


class Service:
    def __init__(self, build_dir, model, tmp_path, *args, workers=1, gateways=1, host="127.0.0.1",
                 ready=True, netns=None, heartbeat_timeout_ms=2000):
        self.build_dir = build_dir
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path
        self.host = host
        self.port = free_port()
        self.log_path = tmp_path / "glmserve.log"
        self.pid_file = tmp_path / "glmserve.pid"
        self.args = ["--model", str(model), "--host", host, "--port", str(self.port),
                     "--workers", str(workers), "--gateways", str(gateways), "--kv-memory", "64",
                     "--max-model-len", "8192", "--run-dir", str(tmp_path / "run"),
                     "--pid-file", str(self.pid_file), "--drain-timeout", "20",
                     "--heartbeat-timeout-ms", str(heartbeat_timeout_ms), *map(str, args)]
        cmd = [str(build_dir / "gateway" / "glmserve"), *self.args]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.netns = netns
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        if ready:
            self.wait_ready(workers)

    # ---- process helpers ----------------------------------------------------
    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def pids(self, kind):
        """{index: pid} of the latest start of each worker or gateway."""
        out = {}
        for m in re.finditer(rf"started {kind} (\d+) \(pid (\d+)\)", self.log_text()):
            out[int(m.group(1))] = int(m.group(2))
        return out

    def alive(self, pid):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def wait_ready(self, workers_up=1, timeout=90):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"glmserve exited with {self.proc.returncode}:\n"
                                     + self.log_text()[-3000:])
            try:
                st, _, body = self.request("GET", "/ready", timeout=2)
                last = body
                if st == 200 and json.loads(body)["workers_up"] >= workers_up:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready in {timeout} s (last /ready: {last}):\n"
                             + self.log_text()[-3000:])

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.log.close()
        return rc

    # ---- HTTP ---------------------------------------------------------------
    def conn(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = self.conn(timeout)
        try:
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode(errors="replace")
        finally:
            c.close()

    def chat(self, messages, key=None, timeout=120, **kw):
        """Non-streaming chat: (status, parsed JSON body)."""
        h = {"Authorization": f"Bearer {key}"} if key else {}
        st, _, body = self.request("POST", "/v1/chat/completions",
                                   {"messages": messages, **kw}, h, timeout)
        return st, json.loads(body)

    def stream(self, messages, key=None, timeout=120, on_chunk=None, **kw):
        """Streaming chat: (status, [parsed chunks], text, error or None).
        on_chunk(i, chunk) is called for each data chunk as it arrives."""
        c = self.conn(timeout)
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        c.request("POST", "/v1/chat/completions",
                  json.dumps({"messages": messages, "stream": True, **kw}), h)
        r = c.getresponse()
        if r.status != 200:
            body = r.read().decode()
            c.close()
            return r.status, [], "", json.loads(body)
        chunks, text, err, done = [], "", None, False
        while True:
            line = r.readline()  # de-chunked by http.client
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                rest = r.read()  # the end of the chunked body: nothing may follow [DONE]
                assert rest.strip() == b"", rest
                break
            obj = json.loads(data)
            if "error" in obj:
                err = obj["error"]
                continue
            chunks.append(obj)
            for ch in obj.get("choices", []):
                text += ch.get("delta", {}).get("content") or ""
            if on_chunk:
                on_chunk(len(chunks), obj)
        c.close()
        if not done and err is None:
            err = {"message": "stream ended without [DONE]"}
        return 200, chunks, text, err
