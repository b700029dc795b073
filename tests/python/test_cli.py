"""glmserve-run end to end on the tiny fixture model: the streamed text
equals transformers' greedy continuation, and bad input is a clear error
with a non-zero exit."""
import json
import shutil
import subprocess

import pytest

from conftest import prompt_of


def run(binary, *args, timeout=120):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cases(fixtures):
    return {c["name"]: c for c in
            json.loads((fixtures / "ref" / "model_cases.json").read_text())["cases"]}


@pytest.mark.parametrize("graphs", ["auto", "on"])
@pytest.mark.parametrize("name", ["text_only", "one_image", "two_images"])
def test_greedy_text_matches_transformers(run_bin, fixtures, cases, name, graphs):
    """auto is op by op on the CPU; on replays recorded decode and vision
    graphs (the CPU backend's recorder), padded to their buckets."""
    case = cases[name]
    args = ["--model", fixtures / "tiny-glm4v", "--prompt", prompt_of(case),
            "--max-tokens", len(case["greedy_ids"]), "--temperature", 0, "--graphs", graphs]
    for img in case["images"]:
        args += ["--image", fixtures / "ref" / img]
    r = run(run_bin, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == case["greedy_text"]
    assert "TTFT" in r.stderr and "decode" in r.stderr


def test_seeded_sampling_is_reproducible(run_bin, fixtures):
    args = ["--model", fixtures / "tiny-glm4v", "--prompt", "Tell me a story",
            "--max-tokens", 24, "--temperature", 1.0, "--seed", 7]
    a, b = run(run_bin, *args), run(run_bin, *args)
    assert a.returncode == 0 and b.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    # the draw is keyed by (seed, tokens so far): graphs do not change it
    c = run(run_bin, *args, "--graphs", "on")
    assert c.returncode == 0, c.stderr
    assert c.stdout == a.stdout


def test_missing_model_folder(run_bin, tmp_path):
    r = run(run_bin, "--model", tmp_path / "nope", "--prompt", "hi")
    assert r.returncode != 0
    assert "nope" in r.stderr


def test_wrong_architecture(run_bin, fixtures, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(fixtures / "tiny-glm4v", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    r = run(run_bin, "--model", d, "--prompt", "hi")
    assert r.returncode != 0
    assert "architecture" in r.stderr.lower()


@pytest.mark.parametrize("kind", ["not_image", "truncated_jpeg", "empty", "missing"])
def test_bad_image(run_bin, fixtures, tmp_path, kind):
    p = tmp_path / "img"
    if kind == "not_image":
        p.write_bytes(b"this is not an image at all" * 10)
    elif kind == "truncated_jpeg":
        data = (fixtures / "ref" / "images" / "medium_640x480.jpg").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        p.write_bytes(b"")
    r = run(run_bin, "--model", fixtures / "tiny-glm4v", "--image", p, "--prompt", "hi")
    assert r.returncode != 0
    assert "img" in r.stderr


def test_usage_errors(run_bin, fixtures):
    assert run(run_bin).returncode != 0
    r = run(run_bin, "--model", fixtures / "tiny-glm4v", "--prompt", "x", "--max-tokens", "-3")
    assert r.returncode != 0 and "max-tokens" in r.stderr
    r = run(run_bin, "--model", fixtures / "tiny-glm4v", "--prompt", "x", "--bogus")
    assert r.returncode != 0 and "bogus" in r.stderr
    r = run(run_bin, "--model", fixtures / "tiny-glm4v", "--prompt", "x", "--graphs", "maybe")
    assert r.returncode == 2 and "--graphs" in r.stderr


def test_invalid_utf8_prompt(run_bin, fixtures):
    r = subprocess.run([str(run_bin), "--model", str(fixtures / "tiny-glm4v"),
                        "--prompt", b"ok\xff\xfe"], capture_output=True, timeout=60)
    assert r.returncode != 0
    assert b"invalid UTF-8 at byte 2" in r.stderr


def test_prompt_with_image_placeholder_text_is_refused_clearly(run_bin, fixtures):
    # Typing the image placeholder without an image must not shift images
    # or crash: it is a clear error.
    r = run(run_bin, "--model", fixtures / "tiny-glm4v", "--prompt", "look <|image|>")
    assert r.returncode != 0
    assert "image" in r.stderr
