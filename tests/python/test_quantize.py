"""glmserve-quantize and glmserve-run --weights end to end on the tiny
fixture model: a quantized folder loads with no BF16 pass, answers the
same as quantizing at load, refuses a --weights it cannot give, and int8
keeps transformers' greedy text."""
import json
import shutil
import struct
import subprocess

import pytest

from conftest import built, prompt_of


def run(binary, *args, timeout=120):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quantize_bin(build_dir):
    return built(build_dir, "worker", "glmserve-quantize")


@pytest.fixture(scope="module")
def cases(fixtures):
    return {c["name"]: c for c in
            json.loads((fixtures / "ref" / "model_cases.json").read_text())["cases"]}


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


@pytest.fixture(scope="module")
def int4_dir(quantize_bin, fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "tiny-int4"
    r = run(quantize_bin, "--model", fixtures / "tiny-glm4v", "--weights", "int4", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_quantized_folder_layout(int4_dir, fixtures):
    cfg = json.loads((int4_dir / "config.json").read_text())
    q = cfg["quantization_config"]
    assert q["quant_method"] == "glmserve" and q["weights"] == "int4"
    assert q["group_size"] == 128
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                 "chat_template.jinja", "generation_config.json"):
        assert (int4_dir / name).read_bytes() == (fixtures / "tiny-glm4v" / name).read_bytes()
    h = header(int4_dir / "model.safetensors")
    gu = "model.language_model.layers.0.mlp.gate_up_proj.weight"
    inter = cfg["text_config"]["intermediate_size"]
    hidden = cfg["text_config"]["hidden_size"]
    assert h[gu]["dtype"] == "U8" and h[gu]["shape"] == [2 * inter, hidden // 2]
    assert h[gu + "_scale"]["dtype"] == "F32"
    assert h[gu + "_scale"]["shape"] == [2 * inter, (hidden + 127) // 128]
    assert h["lm_head.weight"]["dtype"] == "I8"  # int8 even in int4 mode
    assert h["model.language_model.embed_tokens.weight"]["dtype"] == "BF16"
    assert "model.language_model.layers.0.input_layernorm.weight" in h
    assert not (int4_dir / "model.safetensors.index.json").exists()


def test_run_int4_folder_equals_load_time_int4(run_bin, int4_dir, fixtures):
    args = ["--prompt", "Hello, who are you?", "--max-tokens", 12, "--temperature", 0]
    a = run(run_bin, "--model", int4_dir, "--weights", "int4", *args)
    assert a.returncode == 0, a.stderr
    assert "int4 weights" in a.stderr
    b = run(run_bin, "--model", fixtures / "tiny-glm4v", "--weights", "int4", *args)
    assert b.returncode == 0, b.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    c = run(run_bin, "--model", int4_dir, *args)  # no flag: the folder's own format
    assert c.returncode == 0 and c.stdout == a.stdout, c.stderr


def test_run_int4_with_image(run_bin, int4_dir, fixtures, cases):
    case = cases["one_image"]
    r = run(run_bin, "--model", int4_dir, "--weights", "auto", "--prompt", prompt_of(case),
            "--image", fixtures / "ref" / case["images"][0], "--max-tokens", 8,
            "--temperature", 0)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_int8_keeps_transformers_greedy_text(run_bin, fixtures, cases):
    """one_image and two_images decode the same 16 tokens with int8 weights;
    text_only flips at two near ties (top-1/top-2 margins 0.064 and 0.021
    logits), as transformers' own BF16 run does at one of them
    (docs/quantization.md)."""
    for name in ("one_image", "two_images"):
        case = cases[name]
        args = ["--model", fixtures / "tiny-glm4v", "--weights", "int8", "--prompt",
                prompt_of(case), "--max-tokens", len(case["greedy_ids"]), "--temperature", 0]
        for img in case["images"]:
            args += ["--image", fixtures / "ref" / img]
        r = run(run_bin, *args)
        assert r.returncode == 0, r.stderr
        assert r.stdout.rstrip("\n") == case["greedy_text"], name


def test_weights_mismatch_is_a_clear_error(run_bin, int4_dir):
    r = run(run_bin, "--model", int4_dir, "--weights", "bf16", "--prompt", "hi")
    assert r.returncode == 1
    assert "int4" in r.stderr and "bf16" in r.stderr and "Traceback" not in r.stderr
    r = run(run_bin, "--model", int4_dir, "--weights", "fp8", "--prompt", "hi")
    assert r.returncode == 2 and "--weights" in r.stderr


def test_broken_folder_names_the_tensor(run_bin, int4_dir, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(int4_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["quant_method"] = "gptq"
    (d / "config.json").write_text(json.dumps(cfg))
    r = run(run_bin, "--model", d, "--prompt", "hi")
    assert r.returncode == 1 and "gptq" in r.stderr, r.stderr


def test_quantize_usage_errors(quantize_bin, fixtures, int4_dir, tmp_path):
    r = run(quantize_bin, "--model", fixtures / "tiny-glm4v", "--weights", "int3",
            "--out", tmp_path / "x")
    assert r.returncode == 2 and "--weights" in r.stderr
    r = run(quantize_bin, "--model", int4_dir, "--weights", "int8", "--out", tmp_path / "y")
    assert r.returncode == 1 and "quantized already" in r.stderr
    r = run(quantize_bin, "--model", tmp_path / "nope", "--weights", "int8",
            "--out", tmp_path / "z")
    assert r.returncode == 1 and "nope" in r.stderr


def test_gpu_memory_flag(run_bin, fixtures):
    args = ["--model", fixtures / "tiny-glm4v", "--prompt", "hi", "--max-tokens", 2]
    r = run(run_bin, *args, "--gpu-memory", "2GiB", "--weights", "auto")
    assert r.returncode == 0, r.stderr
    r = run(run_bin, *args, "--gpu-memory", "lots")
    assert r.returncode == 2 and "--gpu-memory" in r.stderr


def test_dummy_weights_honour_weights(run_bin, fixtures):
    for fmt in ("int8", "int4"):
        r = run(run_bin, "--model", fixtures / "tiny-glm4v", "--dummy-weights", "--weights", fmt,
                "--prompt", "hi", "--max-tokens", 4, "--temperature", 0)
        assert r.returncode == 0, r.stderr
        assert f"({fmt} weights" in r.stderr


def test_service_passes_weights_and_gpu_memory(build_dir, fixtures, tmp_path):
    """The master hands --weights and --gpu-memory to its worker, which
    loads int4 weights and answers."""
    from service import Service
    s = Service(build_dir, fixtures / "tiny-glm4v", tmp_path, "--weights", "int4",
                "--gpu-memory", "2GiB")
    try:
        st, body = s.chat([{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0)
        assert st == 200, body
        assert body["usage"]["completion_tokens"] == 4
        assert "of int4 weights" in s.log_text()
    finally:
        assert s.stop() == 0, s.log_text()[-3000:]
