"""The README's first command, deploy/quickstart.sh, run as a user would
(with the packages and the build already in place: NO_INSTALL, NO_BUILD on
the suite's build folder): it says plainly that the bundled tiny model
answers with random text, prints the UI's URL, serves the page and the
API there on loopback, and stops cleanly on Ctrl-C. Off loopback it never
serves without a key: it makes one, prints it, and the service asks for it."""
import http.client
import json
import os
import re
import signal
import subprocess
import time

import pytest

from service import free_port


def start(root, build_dir, tmp_path, **env):
    e = dict(os.environ, NO_INSTALL="1", NO_BUILD="1", BUILD_DIR=str(build_dir),
             TMPDIR=str(tmp_path), **env)
    log = open(tmp_path / "quickstart.log", "wb")
    p = subprocess.Popen(["bash", str(root / "deploy" / "quickstart.sh"), "--kv-memory", "64",
                          "--run-dir", str(tmp_path / "run")],
                         stdout=log, stderr=subprocess.STDOUT, env=e, start_new_session=True)
    return p, tmp_path / "quickstart.log"


def get(host, port, path, timeout=5):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait_ready(p, log, host, port, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        assert p.poll() is None, log.read_text()
        try:
            if get(host, port, "/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("quickstart did not become ready:\n" + log.read_text()[-3000:])


def stop(p):
    os.killpg(p.pid, signal.SIGINT)
    return p.wait(60)


def test_quickstart_serves_the_ui_on_loopback(root, build_dir, tmp_path):
    port = free_port()
    p, log = start(root, build_dir, tmp_path, PORT=str(port))
    try:
        wait_ready(p, log, "127.0.0.1", port)
        out = log.read_text()
        assert "TINY TEST MODEL" in out and "random text" in out, out
        assert f"http://127.0.0.1:{port}/" in out, out
        status, page = get("127.0.0.1", port, "/")
        assert status == 200 and "<html" in page.lower(), page[:200]
        info = json.loads(get("127.0.0.1", port, "/v1/info")[1])
        assert info["auth"] is False and info["ready"] is True
        # Bound to loopback only: the listening socket is 127.0.0.1.
        ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        if ss.returncode == 0:
            assert ss.stdout.strip() and "127.0.0.1:" in ss.stdout, ss.stdout
    finally:
        rc = stop(p)
    assert rc == 0, log.read_text()[-3000:]


def test_quickstart_off_loopback_makes_a_key(root, build_dir, tmp_path):
    port = free_port()
    p, log = start(root, build_dir, tmp_path, PORT=str(port), HOST="0.0.0.0")
    try:
        wait_ready(p, log, "127.0.0.1", port)
        out = log.read_text()
        m = re.search(r"API key .*:\s+(gs-[0-9a-f]{48})", out, re.S)
        assert m, out
        key = m.group(1)
        info = json.loads(get("127.0.0.1", port, "/v1/info")[1])
        assert info["auth"] is True
        assert get("127.0.0.1", port, "/v1/models")[0] == 401
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert c.getresponse().status == 200
        c.close()
        # The key is stored hashed, never in the clear.
        keys = (build_dir / "quickstart-keys").read_text()
        assert key not in keys and keys.startswith("sha256:")
    finally:
        rc = stop(p)
        (build_dir / "quickstart-keys").unlink(missing_ok=True)
    assert rc == 0, log.read_text()[-3000:]


def test_quickstart_refuses_a_folder_without_a_model(root, build_dir, tmp_path):
    p, log = start(root, build_dir, tmp_path, MODEL=str(tmp_path))
    assert p.wait(30) == 2
    assert "not a model folder" in log.read_text()
