"""/metrics with several gateways: a scrape reaches one of them (they share
the listening socket), and every one answers the sum over all gateways;
a gateway killed and restarted keeps its predecessor's counts."""
import json
import os
import signal
import time

from service import Service

CHAT = 'glmserve:requests_total{route="/v1/chat/completions",status="200"}'


def scrape(svc):
    st, _, body = svc.request("GET", "/metrics")
    assert st == 200
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def own_chats(run_dir, index):
    """Chat requests gateway `index` itself answered, from its snapshot file."""
    path = run_dir / f"metrics-gateway-{index}.json"
    if not path.exists():
        return 0
    snap = json.loads(path.read_text())
    for m in snap["metrics"]:
        if m["name"] == "glmserve:requests_total":
            return sum(int(s["v"]) for s in m["series"] if s["l"] == ["/v1/chat/completions", "200"])
    return 0


def test_metrics_are_summed_over_gateways(build_dir, fixtures, tmp_path):
    # (--encoder-cache-mb: a master key passed on to the workers)
    svc = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--encoder-cache-mb", 5, gateways=2)
    run_dir = tmp_path / "run"
    try:
        assert "encoder cache 5 MiB" in svc.log_text()
        n = 16
        for i in range(n):  # a new connection each: the kernel spreads them over both
            st, body = svc.chat([{"role": "user", "content": f"Say {i}"}], max_tokens=3,
                                temperature=0)
            assert st == 200, body
        end = time.time() + 20  # each gateway writes its snapshot once a second
        while time.time() < end and own_chats(run_dir, 0) + own_chats(run_dir, 1) < n:
            time.sleep(0.2)
        per = [own_chats(run_dir, 0), own_chats(run_dir, 1)]
        assert sum(per) == n and min(per) > 0, per  # both answered some
        for _ in range(8):  # whichever gateway answers, it reports all of them
            m = scrape(svc)
            assert m[CHAT] == n, m.get(CHAT)
            assert m["glmserve:generation_tokens_total"] == 3 * n
            assert m['glmserve:requests_finished_total{finish_reason="length"}'] == n
            assert m["glmserve:e2e_request_latency_seconds_count"] == n
            assert m["glmserve:workers_up"] == 1  # the same worker seen by both: not doubled
            assert m["glmserve:kv_pages_total"] > 0

        # kill -9 of gateway 1: its restarted process continues its counts
        old = svc.pids("gateway")[1]
        os.kill(old, signal.SIGKILL)
        end = time.time() + 30
        while time.time() < end and svc.pids("gateway").get(1, old) == old:
            time.sleep(0.1)
        assert svc.pids("gateway")[1] != old
        assert "counters continue from gateway 1's previous process" in svc.log_text()
        svc.wait_ready()
        time.sleep(1.5)
        for _ in range(8):
            assert scrape(svc)[CHAT] == n
    finally:
        assert svc.stop() == 0, svc.log_text()[-3000:]
    assert not run_dir.exists() or not list(run_dir.glob("metrics-gateway-*.json.tmp"))
