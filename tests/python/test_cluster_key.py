"""The cluster key (cluster_key_file / --cluster-key-file): gateways and
workers that share it serve together; a worker that dials in with another
key or none is refused and gets no job, and a worker that has a key
refuses a gateway (here bench_worker, a client of the worker protocol)
whose hello lacks it. Everything on loopback tcp://."""
import json
import subprocess
import time

from service import Service, free_port

KEY = "k3y-0f-this-cluster-0123456789abcdef"


def key_file(path, text):
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def start_worker(build_dir, model, log, *args):
    return subprocess.Popen(
        [str(build_dir / "worker" / "glmserve-worker"), "--model", str(model),
         "--kv-memory", "64", "--max-model-len", "8192", *map(str, args)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def wait_log(path, text, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def workers_up(s):
    st, _, body = s.request("GET", "/ready", timeout=5)
    return json.loads(body)["workers_up"]


def test_cluster_key(build_dir, fixtures, tmp_path):
    model = fixtures / "tiny-glm4v"
    good = key_file(tmp_path / "key", KEY)
    other = key_file(tmp_path / "other", "another-key-of-32-bytes-or-more!")
    port = free_port()
    s = Service(build_dir, model, tmp_path / "svc", "--cluster-key-file", good,
                "--worker-listen", f"tcp://127.0.0.1:{port}")
    procs = []
    try:
        # the local worker got the key from the master and serves
        st, body = s.chat([{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
        assert st == 200, body
        url = f"tcp://127.0.0.1:{port}"
        # dialing in with another key, or none: refused on both ends
        for name, extra in (("wrong", ["--cluster-key-file", other]), ("none", [])):
            log = tmp_path / f"{name}.log"
            procs.append(start_worker(build_dir, model, log, "--connect", url, "--name", name,
                                      *extra))
            want = "another cluster key" if extra else "no cluster key"
            assert wait_log(s.log_path, f"its hello has {want}"), s.log_text()[-2000:]
        # the wrong-key worker refuses the gateway's hello too
        assert wait_log(tmp_path / "wrong.log", "refused the gateway"), \
            (tmp_path / "wrong.log").read_text()[-2000:]
        time.sleep(0.5)
        assert workers_up(s) == 1
        # the right key: it joins
        procs.append(start_worker(build_dir, model, tmp_path / "right.log", "--connect", url,
                                  "--name", "right", "--cluster-key-file", good))
        s.wait_ready(2)
        for _ in range(4):
            st, body = s.chat([{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
            assert st == 200, body
        # a worker with a key refuses a client of the protocol without it
        wport = free_port()
        wlog = tmp_path / "listener.log"
        procs.append(start_worker(build_dir, model, wlog, "--listen",
                                  f"tcp://127.0.0.1:{wport}", "--cluster-key-file", good))
        assert wait_log(wlog, "serving"), wlog.read_text()[-2000:]
        r = subprocess.run([str(build_dir / "tools" / "bench_worker" / "bench_worker"), "--url",
                            f"tcp://127.0.0.1:{wport}", "--requests", "1", "--levels", "1"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, r.stdout + r.stderr
        assert wait_log(wlog, "refused the gateway"), wlog.read_text()[-2000:]
        assert "no cluster key" in wlog.read_text()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        assert s.stop() == 0, s.log_text()[-3000:]


def test_bad_cluster_key_file(build_dir, fixtures, tmp_path):
    short = key_file(tmp_path / "short", "tooshort")
    r = subprocess.run([str(build_dir / "gateway" / "glmserve"), "--model",
                        str(fixtures / "tiny-glm4v"), "--port", str(free_port()),
                        "--cluster-key-file", short, "--run-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "cluster-key-file" in r.stdout + r.stderr and "16" in r.stdout + r.stderr
    r = subprocess.run([str(build_dir / "worker" / "glmserve-worker"), "--model",
                        str(fixtures / "tiny-glm4v"), "--listen", "tcp://127.0.0.1:1",
                        "--cluster-key-file", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cluster-key-file" in r.stdout + r.stderr
