"""tools/bench_gateway: a cheap smoke test that the client works against the
real service, over SSE and over the WebSocket: every request ends ok
(4 / 0) and the tool exits 0."""
import subprocess

import pytest

from conftest import built
from service import Service


@pytest.fixture(scope="module")
def svc(build_dir, fixtures, tmp_path_factory):
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path_factory.mktemp("bench_gateway"))
    yield s
    assert s.stop() == 0, s.log_text()[-3000:]


@pytest.mark.parametrize("mode", ["sse", "ws"])
def test_bench_gateway_runs(svc, build_dir, mode):
    exe = built(build_dir, "tools", "bench_gateway", "bench_gateway")
    p = subprocess.run([str(exe), "--url", f"http://127.0.0.1:{svc.port}", "--mode", mode,
                        "--levels", "2", "--requests", "4", "--max-tokens", "4",
                        "--tag", f"[{mode}] "], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    name = "WS" if mode == "ws" else "SSE"
    rows = [line for line in p.stdout.splitlines() if line.startswith(f"| gateway ({name}) |")]
    assert len(rows) == 1, p.stdout
    assert "| 2 | 4 / 0 |" in rows[0], p.stdout + p.stderr
