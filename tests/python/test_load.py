"""Load: 10,000 chat completions (max_tokens 1) from 200 concurrent
keep-alive connections, every one answered 200 with a complete chat
completion body; no connect, read, write or timeout error. wrk drives it;
its Lua script checks each body and stops each thread after its share, so
the count is exact (responses counted, not a duration). Prints the
requests/s reached.

GS_LOAD_REQUESTS lowers (or raises) the count; the default fits well
inside 90 s on 2 cores with the sanitizer build."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from service import Service

TOTAL = int(os.environ.get("GS_LOAD_REQUESTS", "10000"))
CONNECTIONS = 200
THREADS = 2

LUA = r"""
-- POST a tiny chat request; count each response as good (200 and a whole
-- chat.completion body) or bad; stop the thread after its share.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tiny-glm4v","messages":[{"role":"user","content":"Hi"}],'
        .. '"max_tokens":1,"temperature":0}'

local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end

function init(args)
    limit = tonumber(args[1])
    marker = args[2]
    good, bad, first_bad = 0, 0, ""
end

function response(status, headers, body)
    if good + bad >= limit then
        return -- arrived while the thread stops: not counted
    end
    if status == 200 and body:find('"object":"chat.completion"', 1, true)
            and body:find('"finish_reason":"length"', 1, true)
            and body:find('"completion_tokens":1,', 1, true) then
        good = good + 1
    else
        bad = bad + 1
        if first_bad == "" then
            first_bad = status .. " " .. string.sub(body or "", 1, 300)
        end
    end
    if good + bad >= limit then
        -- wrk sleeps out -d whatever the threads do: say so, and the test
        -- stops wrk with SIGINT (which still runs done())
        local f = io.open(marker .. id, "w")
        f:close()
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local g, b, fb = 0, 0, ""
    for _, t in ipairs(threads) do
        g = g + t:get("good")
        b = b + t:get("bad")
        if fb == "" then fb = t:get("first_bad") end
    end
    local e = summary.errors
    io.write(string.format(
        'RESULT {"good":%d,"bad":%d,"first_bad":"%s","connect":%d,"read":%d,"write":%d,'
        .. '"status":%d,"timeout":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d}\n',
        g, b, fb:gsub('[\\"%c]', "?"), e.connect, e.read, e.write, e.status, e.timeout,
        summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("load"),
                "--max-queue", "1024", "--max-seqs", "64")
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


def metric(text, route, status):
    m = re.search(r'glmserve:requests_total\{route="%s",status="%d"\} (\d+)' % (
        re.escape(route), status), text)
    return int(m.group(1)) if m else 0


def test_10k_chat_completions_200_connections(svc, tmp_path):
    wrk = shutil.which("wrk")
    if not wrk:
        pytest.fail("wrk is not installed (deploy/install-deps.sh installs it)")
    lua = tmp_path / "chat.lua"
    lua.write_text(LUA)
    _, _, before = svc.request("GET", "/metrics", timeout=10)
    per_thread = TOTAL // THREADS
    cmd = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", "-d120s", "--timeout", "60s",
           "-s", str(lua), f"http://{svc.host}:{svc.port}/v1/chat/completions", "--",
           str(per_thread)]
    done = tmp_path / "done"
    done.mkdir()
    cmd.append(str(done) + "/")
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while len(list(done.iterdir())) < THREADS and p.poll() is None:
            time.sleep(0.05)
        secs = time.time() - t0
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    assert m, out
    r = json.loads(m.group(1))
    rps = (r["good"] + r["bad"]) / secs
    print(f"\nload: {r['good']} chat completions OK, {r['bad']} bad, {CONNECTIONS} connections, "
          f"{secs:.1f} s, {rps:.0f} requests/s, p50 {r['p50_us'] / 1000:.1f} ms, "
          f"p99 {r['p99_us'] / 1000:.1f} ms")
    assert r["bad"] == 0, r
    assert r["good"] == per_thread * THREADS, r  # stopped by the count, not by -d
    for k in ("connect", "read", "write", "status", "timeout"):
        assert r[k] == 0, r
    # the gateway counted them too: 200s, and no server-side failure
    st, _, after = svc.request("GET", "/metrics", timeout=10)
    assert st == 200
    route = "/v1/chat/completions"
    assert metric(after, route, 200) - metric(before, route, 200) >= per_thread * THREADS
    for bad in (400, 429, 500, 502, 503, 504):
        assert metric(after, route, bad) == metric(before, route, bad), bad
    # still serving
    st, body = svc.chat([{"role": "user", "content": "Hi"}], max_tokens=1, timeout=30)
    assert st == 200, body
