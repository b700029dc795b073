"""The committed fixtures are complete, small and self-consistent."""
import json


def test_fixture_size_under_20mb(fixtures):
    total = sum(p.stat().st_size for p in fixtures.rglob("*") if p.is_file())
    assert total < 20 * 1024 * 1024, f"fixtures are {total} bytes"


def test_model_folder_files(fixtures):
    d = fixtures / "tiny-glm4v"
    for name in ["config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja",
                 "preprocessor_config.json", "model.safetensors.index.json"]:
        assert (d / name).is_file(), name
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2
    for s in shards:
        assert (d / s).is_file()


def test_special_ids_agree(fixtures):
    d = fixtures / "tiny-glm4v"
    cfg = json.loads((d / "config.json").read_text())
    tok = json.loads((d / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert ids["<|image|>"] == cfg["image_token_id"]
    assert ids["<|begin_of_image|>"] == cfg["image_start_token_id"]
    assert ids["<|end_of_image|>"] == cfg["image_end_token_id"]
    eos = cfg["text_config"]["eos_token_id"]
    assert ids["<|endoftext|>"] in eos and ids["<|user|>"] in eos
    # The remapping keeps nothing at the real model's ids.
    assert max(ids.values()) < cfg["text_config"]["vocab_size"]


def test_versions_recorded(fixtures):
    v = json.loads((fixtures / "VERSIONS.json").read_text())
    text = json.dumps(v)
    for pkg in ["torch", "transformers", "tokenizers", "pillow"]:
        assert pkg in text.lower()
