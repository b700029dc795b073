"""The tiny-model service with its worker as an aarch64 binary under
qemu-aarch64 (user mode), as on an ARM GPU server's CPU: the native
gateways dial the aarch64 glmserve-worker over tcp:// and its greedy
answers equal transformers' (text, and an image through the aarch64 image
preprocessing).

The aarch64 build is GS_ARM64_BUILD_DIR, by default build/test-arm64 (what
tests/run_all.sh's cross stage builds). Skipped, with the reason, where
there is no such build or no qemu-aarch64-static.

Why "-L /": the cross toolchain's sysroot (/usr/aarch64-linux-gnu) has its
own ld-linux-aarch64.so.1, but the libraries the binary needs (libuv, nng,
OpenBLAS...) come from the arm64 multiarch packages, and ld.so's search
path /lib/aarch64-linux-gnu is not under the sysroot, so qemu falls back to
the host path and loads libc.so.6 of libc6:arm64: two different glibc
builds. Their private ld.so data (_rtld_global) differ, and the first
pthread_create (or fork) spins for ever walking the stack cache list. With
-L / ld.so and libc.so.6 both come from libc6:arm64 and threads work."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from service import Service, free_port
from test_service import messages_of

ROOT = pathlib.Path(__file__).resolve().parents[2]


def qemu_prefix():
    """The -L prefix whose ld.so matches the libc.so.6 it will load."""
    if os.path.exists("/lib/ld-linux-aarch64.so.1") and \
            os.path.exists("/lib/aarch64-linux-gnu/libc.so.6"):
        return "/"
    return "/usr/aarch64-linux-gnu"


@pytest.fixture(scope="module")
def arm64_worker():
    build = pathlib.Path(os.environ.get("GS_ARM64_BUILD_DIR", ROOT / "build" / "test-arm64"))
    exe = build / "worker" / "glmserve-worker"
    if not shutil.which("qemu-aarch64-static"):
        pytest.skip("qemu-aarch64-static not installed (package qemu-user-static)")
    if not exe.exists():
        pytest.skip(f"no aarch64 build at {build} (tests/run_all.sh's cross stage makes it; "
                    "or set GS_ARM64_BUILD_DIR)")
    with open(exe, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183, \
        f"{exe} is not an aarch64 ELF"
    return exe


@pytest.fixture(scope="module")
def cases(fixtures):
    return {c["name"]: c for c in
            json.loads((fixtures / "ref" / "model_cases.json").read_text())["cases"]}


def test_service_with_an_aarch64_worker_under_qemu(arm64_worker, build_dir, fixtures, cases,
                                                   tmp_path):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "GS_CPU_THREADS": "1"}
    prefix = qemu_prefix()
    log = open(tmp_path / "worker.log", "wb")
    w = subprocess.Popen(["qemu-aarch64-static", "-L", prefix, str(arm64_worker), "--model",
                          str(fixtures / "tiny-glm4v"), "--listen", url, "--name", "aarch64",
                          "--kv-memory", "64", "--max-model-len", "8192"],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    s = None
    try:
        s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path / "gw", "--remote-worker", url,
                    workers=0, ready=False)
        try:
            s.wait_ready(1, timeout=120)
        except AssertionError:
            raise AssertionError(f"the aarch64 worker did not come up (qemu -L {prefix}):\n"
                                 + (tmp_path / "worker.log").read_text(errors="replace")[-3000:])
        assert "worker aarch64@" in s.log_text()
        for name in ("text_only", "one_image"):
            case = cases[name]
            t0 = time.time()
            st, body = s.chat(messages_of(case, fixtures), max_tokens=len(case["greedy_ids"]),
                              temperature=0, timeout=300)
            assert st == 200, body
            assert body["choices"][0]["message"]["content"] == case["greedy_text"], (name, body)
            print(f"{name}: {len(case['greedy_ids'])} tokens from the aarch64 worker in "
                  f"{time.time() - t0:.1f} s (qemu -L {prefix})")
    finally:
        if s:
            rc = s.stop()
        w.send_signal(signal.SIGTERM)
        try:
            wrc = w.wait(60)
        except subprocess.TimeoutExpired:
            w.kill()
            raise
    assert rc == 0, s.log_text()[-3000:]
    assert wrc == 0, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
