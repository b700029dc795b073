"""glmserve-worker on the tiny fixture model, driven over its wire protocol
by bench_worker (the gateway's path minus HTTP): greedy answers equal
transformers' and glmserve-run's, concurrent jobs equal their solo runs,
cancels free every page, the queue bound refuses with a distinct error,
bad jobs and bad frames are refused without harm, SIGTERM drains."""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import prompt_of


def wait_for_socket(path, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early with {proc.returncode}")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    raise AssertionError("worker did not listen in time")


class Worker:
    def __init__(self, build_dir, model, tmp_path, *extra):
        self.sock = str(tmp_path / "w.sock")
        self.url = "ipc://" + self.sock
        self.log = open(tmp_path / "worker.log", "w+")
        self.proc = subprocess.Popen(
            [str(build_dir / "worker" / "glmserve-worker"), "--model", str(model), "--listen",
             self.url, "--kv-memory", "64", "--max-model-len", "8192", "--heartbeat-ms", "100",
             *map(str, extra)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_socket(self.sock, self.proc)

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        self.log.close()
        return rc


@pytest.fixture
def worker(build_dir, fixtures, tmp_path):
    w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path)
    yield w
    assert w.stop() == 0, w.log_text()


def bench(build_dir, url, *args, timeout=120):
    r = subprocess.run([str(build_dir / "tools" / "bench_worker" / "bench_worker"), "--url", url,
                        "--dump", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    return [x for x in lines if "i" in x], [x["stats"] for x in lines if "stats" in x]


@pytest.fixture(scope="module")
def cases(fixtures):
    return {c["name"]: c for c in
            json.loads((fixtures / "ref" / "model_cases.json").read_text())["cases"]}


@pytest.mark.parametrize("name", ["text_only", "one_image", "two_images"])
def test_greedy_equals_transformers_and_glmserve_run(worker, build_dir, run_bin, fixtures, cases,
                                                      name):
    case = cases[name]
    n = len(case["greedy_ids"])
    imgs = []
    for img in case["images"]:
        imgs += ["--image", fixtures / "ref" / img]
    res, _ = bench(build_dir, worker.url, "--prompt", prompt_of(case), "--max-tokens", n,
                   "--temperature", 0, "--unique", 0, "--requests", 1, *imgs)
    assert len(res) == 1 and res[0]["finish"] == "length", res
    assert res[0]["ids"] == case["greedy_ids"]
    assert res[0]["text"] == case["greedy_text"]
    r = subprocess.run([str(run_bin), "--model", str(fixtures / "tiny-glm4v"), "--prompt",
                        prompt_of(case), "--max-tokens", str(n), "--temperature", "0",
                        *map(str, imgs)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == res[0]["text"]


def test_concurrent_jobs_equal_their_solo_runs(worker, build_dir, fixtures):
    img = fixtures / "ref" / "images" / "small_100x140.jpg"
    args = ["--prompt", "What is in the picture?", "--max-tokens", 12, "--temperature", 0,
            "--unique", 0, "--image", img]
    solo, _ = bench(build_dir, worker.url, *args, "--requests", 1)
    many, stats = bench(build_dir, worker.url, *args, "--requests", 20, "--levels", 20, "--stats")
    assert len(many) == 20
    assert all(r["ids"] == solo[0]["ids"] and r["finish"] == "length" for r in many), many
    # every page is back once the jobs ended (cached prefix pages count as free)
    assert stats and stats[-1]["n_free_pages"] == stats[-1]["n_pages"], stats
    assert stats[-1]["n_running"] == 0 and stats[-1]["n_waiting"] == 0


def test_seeded_sampling_repeats_and_unseeded_differs(worker, build_dir):
    args = ["--prompt", "Tell me a story", "--max-tokens", 16, "--temperature", 1.0,
            "--unique", 0, "--requests", 4, "--levels", 4]
    a, _ = bench(build_dir, worker.url, *args, "--seed", 11)
    assert len({tuple(r["ids"]) for r in a}) == 1
    b, _ = bench(build_dir, worker.url, *args)
    assert len({tuple(r["ids"]) for r in b}) > 1, "unseeded requests must not all agree"


def test_cancel_ends_job_and_frees_pages(worker, build_dir):
    res, stats = bench(build_dir, worker.url, "--max-tokens", 200, "--cancel-after", 2,
                       "--requests", 6, "--levels", 3, "--stats")
    assert len(res) == 6
    for r in res:
        assert r["finish"] == "cancelled", r
        assert r["completion_tokens"] < 200
    assert stats[-1]["n_free_pages"] == stats[-1]["n_pages"]


def test_queue_bound_refuses_with_overload(build_dir, fixtures, tmp_path):
    w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--max-seqs", 1, "--max-queue", 1)
    try:
        res, _ = bench(build_dir, w.url, "--max-tokens", 24, "--requests", 10, "--levels", 10)
        refused = [r for r in res if r["refused"]]
        ok = [r for r in res if not r["refused"]]
        assert len(res) == 10 and not any(r["lost"] for r in res)
        assert refused and all(r["error"] == -20 for r in refused), res  # GS_EOVERLOAD
        assert "queue full" in refused[0]["message"]
        assert len(ok) >= 2 and all(r["finish"] == "length" for r in ok)
    finally:
        assert w.stop() == 0


@pytest.mark.parametrize("job,code,words", [
    ('{"messages": "hi"}', -1, "messages"),
    ('{"messages": [{"role": "user", "content": "hi"}], "temprature": 1}', -1, "temprature"),
    ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -4}', -1, "max_tokens"),
    ('{"messages": [{"role": "user", "content": "hi"}], "top_p": 7}', -1, "top_p"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}', -1, "role"),
    ('[1, 2', -1, "JSON"),
    ('{"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", '
     '"text": "x"}]}]}', -1, "image"),
    ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9000}', -19, "context"),
])
def test_bad_jobs_are_refused_with_a_clear_error(worker, build_dir, tmp_path, job, code, words):
    f = tmp_path / "job.json"
    f.write_text(job)
    res, _ = bench(build_dir, worker.url, "--job", f, "--requests", 1)
    assert res[0]["refused"] and res[0]["error"] == code, res
    assert words.lower() in res[0]["message"].lower()
    ok, _ = bench(build_dir, worker.url, "--max-tokens", 4, "--requests", 1)
    assert ok[0]["finish"] == "length"


def test_bad_image_bytes_are_refused(worker, build_dir, tmp_path):
    img = tmp_path / "x.jpg"
    img.write_bytes(b"\xff\xd8\xff not really a jpeg" * 20)
    res, _ = bench(build_dir, worker.url, "--image", img, "--requests", 1)
    assert res[0]["refused"] and "image 0" in res[0]["message"], res


def test_malformed_frames_are_dropped_and_the_worker_keeps_serving(worker, build_dir):
    for payload in [b"GET / HTTP/1.1\r\n\r\n", b"GSIP\x01\x02\x00\x00\xff\xff\xff\xff\0\0\0\0",
                    b"GSIP\x01\x04\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00abc", b"\x00" * 64]:
        s = socket.socket(socket.AF_UNIX)
        s.connect(worker.sock)
        s.sendall(payload)
        time.sleep(0.1)
        s.close()
    res, _ = bench(build_dir, worker.url, "--max-tokens", 4, "--requests", 2, "--levels", 2)
    assert all(r["finish"] == "length" for r in res)
    assert worker.proc.poll() is None


def test_sigterm_drains_running_jobs_then_exits_zero(build_dir, fixtures, tmp_path):
    w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path)
    cmd = [str(build_dir / "tools" / "bench_worker" / "bench_worker"), "--url", w.url, "--dump",
           "--max-tokens", 150, "--requests", 3, "--levels", 3]
    client = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, text=True)
    time.sleep(0.8)  # jobs running
    w.proc.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=120)
    res = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert len(res) == 3
    assert all(r["finish"] == "length" and r["completion_tokens"] == 150 for r in res), res
    assert w.proc.wait(timeout=30) == 0
    log = w.log_text()
    assert "draining" in log and "drained" in log


def test_drain_deadline_ends_jobs_with_an_error(build_dir, fixtures, tmp_path):
    w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--drain-timeout", 0)
    cmd = [str(build_dir / "tools" / "bench_worker" / "bench_worker"), "--url", w.url, "--dump",
           "--max-tokens", 2000, "--requests", 2, "--levels", 2]
    client = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, text=True)
    time.sleep(0.8)
    w.proc.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=120)
    res = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert len(res) == 2
    assert all(r["finish"] == "error" and r["error"] == -24 for r in res), res  # GS_ESHUTDOWN
    assert w.proc.wait(timeout=30) == 0


def test_usage_errors_name_the_flag(build_dir, fixtures, tmp_path):
    exe = str(build_dir / "worker" / "glmserve-worker")
    r = subprocess.run([exe, "--model", str(fixtures / "tiny-glm4v")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--listen" in r.stderr
    r = subprocess.run([exe, "--model", str(fixtures / "tiny-glm4v"), "--listen", "http://x"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--listen" in r.stderr
    r = subprocess.run([exe, "--model", "/nonexistent/model", "--listen", f"ipc://{tmp_path}/x.sock"],
                       capture_output=True, text=True, timeout=30)
    # 3: the model folder cannot be served; no restart cures it
    assert r.returncode == 3 and "nonexistent" in r.stderr


def test_fast_steps_are_coalesced_into_fewer_frames(build_dir, fixtures, tmp_path):
    """Steps faster than the stream interval (the tiny model steps in well
    under a millisecond; 50 ms here so that a slow sanitizer build on a
    busy machine still coalesces): its tokens leave in fewer frames than
    tokens, with the same ids and text as one frame per step
    (--stream-interval-us 0)."""
    args = ["--prompt", "Tell me a story", "--max-tokens", 64, "--temperature", 0, "--unique", 0,
            "--requests", 1]
    out = {}
    for interval in (50000, 0):
        w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--stream-interval-us", interval)
        try:
            res, _ = bench(build_dir, w.url, *args)
        finally:
            assert w.stop() == 0, w.log_text()
        out[interval] = res[0]
    held, each = out[50000], out[0]
    assert held["ids"] == each["ids"] and held["text"] == each["text"]
    assert held["completion_tokens"] == each["completion_tokens"] == 64
    # one frame per step (the final frame carries the last token)
    assert each["events"] == 64, each
    assert held["events"] < each["events"] / 2, held


def test_bench_both_paths_alternate_and_agree(build_dir, fixtures, tmp_path):
    """bench_worker with --url and --inproc runs the same jobs on both paths
    in alternating blocks: every job ends on each, with the same greedy
    tokens, and the report has a row per path and level (both sides
    --batch-invariant: the bursts at level 3 need not batch alike)."""
    report = tmp_path / "report.json"
    worker = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--batch-invariant")
    try:
        r = subprocess.run([str(build_dir / "tools" / "bench_worker" / "bench_worker"), "--url",
                            worker.url, "--inproc", "--batch-invariant", "--model",
                            str(fixtures / "tiny-glm4v"),
                            "--kv-memory", "64", "--dump", "--levels", "1,3", "--requests", "7",
                            "--block", "2", "--max-tokens", "6", "--json", str(report)],
                           capture_output=True, text=True, timeout=300)
    finally:
        assert worker.stop() == 0
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    by = {}
    for x in lines:
        by.setdefault(x["path"], []).append(x)
    assert sorted(by) == ["inproc", "ipc"]
    assert len(by["inproc"]) == len(by["ipc"]) == 14  # 7 jobs at each of 2 levels
    for a, b in zip(by["inproc"], by["ipc"]):
        assert a["i"] == b["i"] and a["finish"] == b["finish"] == "length"
        assert a["ids"] == b["ids"] and len(a["ids"]) == 6
    rows = json.loads(report.read_text())
    assert [(x["path"], x["concurrency"], x["ok"]) for x in rows] == [
        ("inproc", 1, 7), ("ipc", 1, 7), ("inproc", 3, 7), ("ipc", 3, 7)]
    assert all(x["tokens_per_s"] > 0 and x["client_job_p50_ms"] > 0 for x in rows)


def test_bench_open_loop_and_several_workers(build_dir, fixtures, tmp_path):
    """bench_worker --rate: jobs arrive on a fixed Poisson schedule on every
    path (the in-process engine and two connections to the worker, --url
    given twice), each ends with the same greedy tokens, and the run lasts
    at least as long as the schedule (the arrivals are waited for). Which
    arrivals share a step depends on timing, so both sides run
    --batch-invariant (on a CPU with BF16 matrix units, a prefill of more
    than 32 rows rounds x to BF16: docs/engine.md)."""
    report = tmp_path / "report.json"
    n, rate = 12, 40.0
    worker = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--batch-invariant")
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(build_dir / "tools" / "bench_worker" / "bench_worker"), "--url",
                            worker.url, "--url", worker.url, "--inproc", "--batch-invariant",
                            "--model", str(fixtures / "tiny-glm4v"), "--kv-memory", "64", "--dump",
                            "--rate", str(rate), "--requests", str(n), "--max-tokens", "5",
                            "--json", str(report)], capture_output=True, text=True, timeout=300)
        took = time.monotonic() - t0
        assert "--batch-invariant: CPU prefill GEMMs in F32" in worker.log_text()
    finally:
        assert worker.stop() == 0
    assert r.returncode == 0, r.stderr
    by = {}
    for x in (json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")):
        by.setdefault(x["path"], []).append(x)
    assert sorted(by) == ["inproc", "ipc1", "ipc2"]
    for a, b, c in zip(by["inproc"], by["ipc1"], by["ipc2"]):
        assert a["finish"] == b["finish"] == c["finish"] == "length"
        assert a["ids"] == b["ids"] == c["ids"] and len(a["ids"]) == 5
    rows = json.loads(report.read_text())
    assert [(x["path"], x["rate"], x["ok"]) for x in rows] == [
        ("inproc", rate, n), ("ipc1", rate, n), ("ipc2", rate, n)]
    assert all(x["in_flight"] > 0 for x in rows)
    # the fixed schedule of 12 arrivals at 40/s spans 0.26 s, waited out on
    # each of the three paths
    assert took > 0.7, took


def test_encoder_cache_size_is_a_flag(build_dir, fixtures, tmp_path):
    """--encoder-cache MIB sizes the cache of image embeddings (logged), and
    an image job is served with it; 0 is refused with the flag's name."""
    w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--encoder-cache", 3)
    try:
        res, _ = bench(build_dir, w.url, "--image", fixtures / "ref" / "images" /
                       "small_100x140.jpg", "--max-tokens", 4, "--requests", 2)
        assert [r["finish"] for r in res] == ["length", "length"]
        assert "encoder cache 3 MiB" in w.log_text()
    finally:
        assert w.stop() == 0
    r = subprocess.run([str(build_dir / "worker" / "glmserve-worker"), "--model",
                        str(fixtures / "tiny-glm4v"), "--listen", "ipc://" + str(tmp_path / "x"),
                        "--encoder-cache", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--encoder-cache" in r.stderr


def test_image_threads_give_the_same_answer(build_dir, fixtures, tmp_path):
    """--image-threads N cuts a large image's resize and patchify between
    threads (logged): the greedy answer is the one of a single thread; 0 is
    refused with the flag's name."""
    img = fixtures / "ref" / "images" / "large_3000x1700.jpg"
    args = ["--image", img, "--max-tokens", 8, "--temperature", 0, "--unique", 0, "--requests", 1]
    out = {}
    for n in (1, 3):
        w = Worker(build_dir, fixtures / "tiny-glm4v", tmp_path, "--image-threads", n)
        try:
            res, _ = bench(build_dir, w.url, *args)
            assert f"images: {n} thread(s) each" in w.log_text()
        finally:
            assert w.stop() == 0, w.log_text()
        assert res[0]["finish"] == "length", res
        out[n] = res[0]
    assert out[1]["ids"] == out[3]["ids"] and len(out[1]["ids"]) == 8
    r = subprocess.run([str(build_dir / "worker" / "glmserve-worker"), "--model",
                        str(fixtures / "tiny-glm4v"), "--listen", "ipc://" + str(tmp_path / "x"),
                        "--image-threads", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--image-threads" in r.stderr
