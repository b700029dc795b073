"""A worker that finds its gateways by name, as behind a Kubernetes headless
Service, for real: three gateways (glmserve masters with worker_listen, no
workers of their own), each in a network namespace of its own, and one
worker in a fourth, joined to each by a veth pair that the test makes
inside its namespaces (nothing touches the host's network). The worker
has one --connect tcp://NAME:7500, and NAME resolves through the worker
namespace's own /etc/hosts (`ip netns exec` bind-mounts
/etc/netns/NS/hosts over /etc/hosts, and an nsswitch.conf beside it says
"hosts: files"), which the test rewrites as DNS would change:

1. NAME has gateways 1 and 2: the one worker serves requests through both;
   gateway 3, not in DNS, has no worker.
2. NAME loses gateway 1 and gains gateway 3 while streams run through
   gateway 1: the worker joins gateway 3, tells gateway 1 to send it no
   more jobs, lets the streams there finish (none ends in an error), then
   leaves gateway 1.
3. Gateway 1 comes back into NAME: the worker joins it again.

Skipped, with the reason, only where namespaces cannot be made (not root,
no iproute2, or forbidden). A second test, without namespaces: a malformed
--connect URL is a usage error, a name with no address yet is retried."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from service import Service
from test_multinode import in_ns, remove_namespaces, sh, stream_in
from test_service import netns_available

NAME = "glmserve-gateway-workers.glmserve.svc.cluster.local"
PORT = 7500


class Net:
    """nw: the worker's namespace; ng[i]: gateway i's, at 10.232.(i+1).1."""

    def __init__(self, tag):
        self.nw = f"gs-hw-{tag}"
        self.ng = [f"gs-hg{i + 1}-{tag}" for i in range(3)]
        self.etc = Path("/etc/netns") / self.nw
        self.made = []
        try:
            self._make(tag)
        except BaseException:
            self.remove()  # whatever was made before the failure
            raise

    def _make(self, tag):
        for ns in (self.nw, *self.ng):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for i, ns in enumerate(self.ng):
            # made in the worker's namespace, its peer moved straight into
            # the gateway's: the host's namespace never sees either end
            here, there = f"h{i + 1}{tag}", f"g{i + 1}{tag}"
            sh("ip", "-n", self.nw, "link", "add", here, "type", "veth", "peer", "name", there,
               "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", there)
            sh("ip", "-n", self.nw, "addr", "add", f"10.232.{i + 1}.2/24", "dev", here)
            sh("ip", "-n", ns, "link", "set", there, "up")
            sh("ip", "-n", self.nw, "link", "set", here, "up")
        self.etc.mkdir(parents=True, exist_ok=True)
        # files only: the name must come from the test's hosts file, never
        # from whatever DNS the host has
        (self.etc / "nsswitch.conf").write_text("hosts: files\n")
        self.set_dns([0, 1])

    @staticmethod
    def addr(i):
        return f"10.232.{i + 1}.1"

    def set_dns(self, gateways):
        """NAME -> the addresses of these gateways. Written in place (same
        inode): the worker's mount namespace has this very file bind-mounted
        over /etc/hosts, and a new file renamed over it would stay unseen."""
        text = "127.0.0.1 localhost\n" + "".join(f"{self.addr(i)} {NAME}\n" for i in gateways)
        path = self.etc / "hosts"
        with open(path, "r+" if path.exists() else "w") as f:
            f.seek(0)
            f.truncate()
            f.write(text)

    def remove(self):
        remove_namespaces(self.made)
        shutil.rmtree(self.etc, ignore_errors=True)
        try:
            self.etc.parent.rmdir()  # /etc/netns, when nothing else is in it
        except OSError:
            pass


def ready(net, gws, i):
    """(status, body) of gateway i's /ready."""
    st, _, body = in_ns(net.ng[i], gws[i].request, "GET", "/ready", timeout=5)
    return st, json.loads(body)


def wait_for(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_one_worker_follows_the_gateways_a_name_resolves_to(build_dir, fixtures, tmp_path):
    why = netns_available()
    if why:
        pytest.skip(f"network namespaces unavailable here: {why}")
    model = fixtures / "tiny-glm4v"
    net = Net(uuid.uuid4().hex[:6])
    gws, w, rcs = [None] * 3, None, []
    wlog_path = tmp_path / "worker.log"
    try:
        for i in range(3):
            gws[i] = Service(build_dir, model, tmp_path / f"gw{i + 1}", "--worker-listen",
                             f"tcp://{net.addr(i)}:{PORT}", workers=0, gateways=1,
                             netns=net.ng[i], ready=False)
        w = subprocess.Popen(
            ["ip", "netns", "exec", net.nw, str(build_dir / "worker" / "glmserve-worker"),
             "--model", str(model), "--connect", f"tcp://{NAME}:{PORT}", "--resolve-interval",
             "1", "--name", "hw", "--kv-memory", "64", "--max-model-len", "8192"],
            stdout=open(wlog_path, "wb"), stderr=subprocess.STDOUT)
        wlog = lambda: wlog_path.read_text(errors="replace")  # noqa: E731

        # 1. the name has gateways 1 and 2: the one worker serves both
        for i in (0, 1):
            in_ns(net.ng[i], gws[i].wait_ready, 1)
        msgs = [{"role": "user", "content": "Hello"}]
        for i in (0, 1):
            for _ in range(2):
                st, body = in_ns(net.ng[i], gws[i].chat, msgs, max_tokens=4, temperature=0)
                assert st == 200 and body["choices"][0]["finish_reason"] == "length", body
            assert "worker hw@" in gws[i].log_text(), gws[i].log_text()[-2000:]
        assert ready(net, gws, 2) == (503, {"ready": False, "workers_up": 0, "workers": 0})
        assert "worker hw@" not in gws[2].log_text()

        # 2. gateway 1 leaves the name with streams running, gateway 3 joins
        n = 4
        res, ev = [None] * n, [threading.Event() for _ in range(n)]
        ts = [stream_in(net.ng[0], gws[0], msgs, res, i, ev, max_tokens=1000, ignore_eos=True,
                        temperature=0) for i in range(n)]
        for e in ev:
            assert e.wait(60), "a stream did not start"
        t_dns = time.time()
        net.set_dns([1, 2])
        wait_for(lambda: "left DNS" in wlog(), 15, "the worker to see gateway 1 leave")
        running = sum(t.is_alive() for t in ts)
        in_ns(net.ng[2], gws[2].wait_ready, 1, 30)
        for t in ts:
            t.join(120)
            assert not t.is_alive(), "a stream hangs after its gateway left DNS"
        for r in res:  # the jobs in flight finished, none lost or cut
            assert r is not None and r[0] == 200 and r[3] is None, r
            assert r[1][-1]["choices"][0]["finish_reason"] == "length", r[1][-1]
        print(f"{running} of {n} streams were running when the worker saw gateway 1 leave; "
              f"they ended {time.time() - t_dns:.1f} s after the change")
        assert running >= 1, "the streams ended before the worker noticed: nothing was proved"
        assert "worker hw@" in gws[1].log_text() and "is draining" in gws[0].log_text()
        wait_for(lambda: ready(net, gws, 0) == (503, {"ready": False, "workers_up": 0,
                                                      "workers": 0}),
                 15, "the worker to leave gateway 1")
        assert "no job left here: closing" in wlog(), wlog()[-3000:]
        for i in (1, 2):  # the others serve
            st, body = in_ns(net.ng[i], gws[i].chat, msgs, max_tokens=4, temperature=0)
            assert st == 200 and body["choices"][0]["finish_reason"] == "length", body
        # still out of DNS: not redialed
        time.sleep(2.5)
        assert ready(net, gws, 0)[0] == 503

        # 3. gateway 1 comes back into the name: joined again
        net.set_dns([0, 1, 2])
        in_ns(net.ng[0], gws[0].wait_ready, 1, 30)
        st, body = in_ns(net.ng[0], gws[0].chat, msgs, max_tokens=4, temperature=0)
        assert st == 200 and body["choices"][0]["finish_reason"] == "length", body
        assert w.poll() is None, wlog()[-3000:]
    finally:
        if w and w.poll() is None:
            w.send_signal(signal.SIGTERM)
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        for s in gws:
            if s:
                try:
                    rcs.append(s.stop())
                except subprocess.TimeoutExpired:
                    rcs.append("timeout")
        net.remove()
    assert w.returncode == 0, wlog_path.read_text(errors="replace")[-3000:]
    assert rcs == [0, 0, 0], rcs


def test_malformed_connect_is_a_usage_error_and_an_unknown_name_is_retried(build_dir, fixtures,
                                                                            tmp_path):
    """A URL that can never work fails at start (exit 2, the flag and the
    fault named); a name with no address yet (a pod started before its DNS
    record) is no error: the worker starts, says so once and keeps trying."""
    exe = str(build_dir / "worker" / "glmserve-worker")
    model = str(fixtures / "tiny-glm4v")
    for url, why in [("tcp://gateways", "no :PORT"), ("tcp://gateways:0", "port"),
                     ("tcp://gateways:70000", "port"), ("tcp://:7500", "no host"),
                     ("tcp://gate ways:7500", "character"), ("tcp://[::1:7500", "["),
                     ("http://gateways:7500", "not an ipc:// or tcp://")]:
        r = subprocess.run([exe, "--model", model, "--connect", url], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and "--connect" in r.stderr and why in r.stderr, (url, r.stderr)
    r = subprocess.run([exe, "--model", model, "--connect", "tcp://gw:7500", "--resolve-interval",
                        "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--resolve-interval" in r.stderr, r.stderr

    log_path = tmp_path / "worker.log"
    w = subprocess.Popen([exe, "--model", model, "--connect", "tcp://no-such-gateway.invalid:7500",
                          "--resolve-interval", "1", "--kv-memory", "64", "--max-model-len",
                          "8192"], stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "cannot resolve 'no-such-gateway.invalid'" in log_path.read_text(), 30,
                 "the worker to report the name")
        time.sleep(2.5)  # several more attempts: still up, and one line per outage
        assert w.poll() is None, log_path.read_text()[-3000:]
        assert log_path.read_text().count("cannot resolve") == 1, log_path.read_text()[-3000:]
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0, log_path.read_text()[-3000:]
