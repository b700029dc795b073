#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora of the fuzz targets into
tests/fuzz/corpus/<target>/seed-*, from the repository's fixtures and a few
hand-made inputs (requests, frames, small files). The output is committed;
run this again after a format or fixture change. Files not named seed-*
(the regression inputs, crash-* and hang-*) are left alone.

    python3 tests/fuzz/make_seeds.py        (Pillow makes a few extra images
                                             when it is installed)

The ipc_msg seeds come from gen_ipc_corpus (a C program that encodes valid
frames with the codec itself): tests/fuzz/run.sh regenerates them."""
import base64
import io
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
FIX = HERE.parents[1] / "tests" / "fixtures"
OUT = HERE / "corpus"


def write(target, seeds):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for i, data in enumerate(seeds):
        if isinstance(data, str):
            data = data.encode()
        (d / f"seed-{i:03d}").write_bytes(data)
    print(f"{target}: {len(seeds)} seeds, {sum(len(s) for s in seeds)} bytes")


# ---- HTTP: a control byte (write size, 0 = all at once), then the bytes ----
def http_seeds():
    reqs = [
        (0, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (0, "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json"
            "\r\nContent-Length: 13\r\n\r\n{\"a\": [1, 2]}"),
        (7, "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"),
        (0, "GET /d HTTP/1.1\r\n\r\nGET /x?y=1 HTTP/1.1\r\n\r\nGET /e HTTP/1.1\r\n\r\n"),
        (0, "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"),
        (16, "GET http://h.example/p?q=1#f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
             "GET /x HTTP/1.0\r\n\r\n"),
        (0, "GET /u HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nextra"),
        (3, "GET /x HTTP/1.1\r\nA: 1\r\na: 2\r\nHost:   x  \r\n\r\n"),
        (0, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (0, "GET / HTTP/2.0\r\n\r\n"),
        (0, "POST /x HTTP/1.1\r\nContent-Length: 99999\r\n\r\nab"),
        (0, "GET / HTTP/1.1\r\n" + "X-A: " + "b" * 2100 + "\r\n\r\n"),
        (1, "DELETE /d HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        (0, "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
        (0, "POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        (0, "GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n"),
    ]
    return [bytes([c]) + r.encode() for c, r in reqs]


# ---- WebSocket: a control byte, then frames after the fixed handshake ------
def frame(op, payload=b"", fin=True, mask=b"\x11\x22\x33\x44", rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def ws_seeds():
    close = lambda code, why=b"": frame(8, struct.pack(">H", code) + why)
    seeds = [
        (0, frame(1, "hello")),
        (0, frame(1, "close") + close(1000)),
        (0, frame(2, b"c\x00\x01")),
        (2, frame(9, "ping") + frame(10, "pong") + frame(1, "after")),
        (0, frame(1, "frag", fin=False) + frame(9, "p") + frame(0, "mented")),
        (0, close(1001, b"going")),
        (0, frame(1, "unmasked", mask=None)),
        (0, frame(1, b"\xc3\x28 bad utf-8")),
        (5, frame(1, "x" * 200) + frame(2, bytes(range(256)) * 2)),
        (0, bytes([0x81, 0xFF]) + struct.pack(">Q", 1 << 40) + b"\0\0\0\0"),
        (0, frame(1, "x" * 5000)),
        (0, frame(3, "reserved opcode")),
        (0, frame(1, "rsv", rsv=4)),
        (0, frame(8, b"\x03\xe8" + b"\xff")),
        (0, frame(1, '{"type":"ask","id":"1","messages":[{"role":"user","content":"hi"}]}')),
    ]
    return [bytes([c]) + f for c, f in seeds]


# ---- chat-completions request bodies -----------------------------------------
def chat_job_seeds():
    png = (FIX / "ref" / "images" / "tiny_20x90.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    user = {"role": "user", "content": "Hello"}
    reqs = [
        {"messages": [user]},
        {"model": "tiny-glm4v", "messages": [{"role": "system", "content": "Be brief."}, user],
         "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["\n", "x"]},
        {"messages": [user], "stream": True, "stream_options": {"include_usage": True}},
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}]}]},
        {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
        {"messages": [user], "model": "other-model"},
        {"messages": [user], "n": 2, "logprobs": True},
        {"messages": [user], "response_format": {"type": "json_object"}},
        {"messages": [user], "chat_template_kwargs": {"enable_thinking": False},
         "max_completion_tokens": 5, "tools": [{"type": "function", "function": {
             "name": "f", "parameters": {"type": "object"}}}]},
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
            {"role": "tool", "content": "42"}, user], "stop_token_ids": [4136]},
        {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}]}]},
        {"messages": []},
        {"messages": [{"role": "us\u00e9r", "content": "x"}]},
        # two liftable payloads (json_lift.c)
        {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "image_url", "image_url": {"url": url}}]}]},
    ]
    return [json.dumps(r, ensure_ascii=False) for r in reqs] + [
        "aGVsbG8gd29ybGQ=", "a-_b",
        json.dumps(reqs[3]).replace("/", "\\/"),  # escaped slashes: lifted, then unescaped
        json.dumps(reqs[3])[:-2] + ', "\\u0001": 1}]}']  # a U+0001: nothing lifted


# ---- images --------------------------------------------------------------------
def image_seeds():
    names = ["tiny_20x90.png", "palette_160x120.png", "gray_123x77.png", "model_56x56.png",
             "exif3_90x60.jpg", "exif6_120x80.jpg", "exif8_96x64.jpg", "small_100x140.jpg"]
    seeds = [(FIX / "ref" / "images" / n).read_bytes() for n in names]
    try:
        from PIL import Image
    except ImportError:
        return seeds

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    rgb = Image.new("RGB", (24, 16), (200, 30, 60))
    for x in range(24):
        rgb.putpixel((x, x % 16), (x * 10, 255 - x * 10, 128))
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds += [
        save(Image.new("I;16", (16, 12), 40000), "PNG"),
        save(rgb.convert("LA"), "PNG"),
        save(rgb.convert("1"), "PNG"),
        save(rgb.convert("CMYK"), "JPEG", quality=80),
        save(rgb.convert("L"), "JPEG", quality=50, progressive=True),
        save(rgb, "PNG", exif=exif.tobytes()),
        save(rgb, "JPEG", exif=exif.tobytes(), subsampling=0),
    ]
    return seeds


# ---- tokenizer: a mode byte, then the payload ------------------------------------
def tiny_tokenizer_json():
    """A small byte-level BPE tokenizer.json of the supported shape."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    merges = [["h", "e"], ["l", "l"], ["he", "ll"], ["Ġ", "w"], ["o", "r"]]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": 300, "content": "<|user|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True},
            {"id": 301, "content": "hey", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": True, "special": False}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\p{N}{1,3}|\\s+|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }, ensure_ascii=False)


def tokenizer_seeds():
    cases = json.loads((FIX / "ref" / "tokenizer_cases.json").read_text())["cases"]
    seeds = []
    for c in cases[:24]:
        seeds.append(b"\x00" + c["text"].encode())
        if c["ids"]:
            seeds.append(b"\x02" + struct.pack(f"<{len(c['ids'])}i", *c["ids"]))
    seeds += [
        b"\x00[gMASK]<sop><|user|>\nhi <|begin_of_image|><|image|><|end_of_image|><|assistant|>",
        b"\x01<|user|> as text <|image|>",
        b"\x02" + struct.pack("<6i", 4138, 4170, -1, 99999, 3000, 4136),
        b"\x02" + "日本".encode()[:4] + struct.pack("<2i", 200, 201),
        b"\x03" + tiny_tokenizer_json().encode(),
    ]
    return seeds


# ---- chat template / worker job ----------------------------------------------------
def chat_template_seeds():
    cases = json.loads((FIX / "ref" / "chat_cases.json").read_text())["cases"]
    seeds = []
    for c in cases[:10]:
        o = {"messages": c["messages"]}
        if c.get("enable_thinking") is not None:
            o["enable_thinking"] = c["enable_thinking"]
        seeds.append(json.dumps(o, ensure_ascii=False))
    seeds.append(json.dumps(cases[0]["messages"]))
    seeds.append(json.dumps({
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "<think>hmm</think>Let me look.",
             "tool_calls": [{"function": {"name": "weather",
                                          "arguments": "{\"city\": \"Paris\", \"n\": [1]}"}}]},
            {"role": "tool", "content": [{"type": "text", "text": "sunny"}]},
            {"role": "assistant", "content": "Sunny.", "reasoning_content": "easy"},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "and?"}]}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
                                                     "parameters": {"type": "object"}}}],
        "max_tokens": 8, "temperature": 0.7, "top_k": 5, "min_p": 0.1, "seed": 3,
        "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "stop": ["\n\n"], "stop_token_ids": [4136], "ignore_eos": False,
        "enable_thinking": False, "cache_salt": "s"}, ensure_ascii=False))
    seeds.append(json.dumps({"messages": [{"role": "user", "content": "x"}],
                             "max_tokens": 100000}))
    seeds.append((FIX / "tiny-glm4v" / "chat_template.jinja").read_text())
    return seeds


# ---- safetensors: a mode byte (even: a .safetensors file, odd: an index) ----------
def st_file(tensors, metadata=None, pad=0):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    seeds = [
        b"\x00" + st_file({"w": ("F32", [2, 3], f32)}, {"format": "pt"}),
        b"\x00" + st_file({"a": ("BF16", [2], b"\x80\x3f\x00\x40"), "b": ("I64", [1], b"\7" + b"\0" * 7),
                           "s": ("F16", [], b"\x00\x3c"), "e": ("U8", [0], b"")}, pad=5),
        b"\x00" + st_file({"model.language_model.norm.weight": ("BF16", [4], b"\x80\x3f" * 4),
                           "lm_head.weight": ("F32", [1, 2], b"\0" * 8),
                           "x": ("F64", [1], b"\0" * 8), "y": ("I32", [2], b"\1\0\0\0\2\0\0\0"),
                           "z": ("BOOL", [2], b"\1\0"), "q": ("F8_E4M3", [1], b"\1")}),
        b"\x01" + json.dumps({"metadata": {"total_size": 40},
                              "weight_map": {"t.a": "a.safetensors", "t.i": "a.safetensors",
                                             "t.b": "b.safetensors"}}).encode(),
        b"\x01" + json.dumps({"weight_map": {"t.a": "a.safetensors"}}).encode(),
        b"\x01" + json.dumps({"weight_map": {"t.a": "../a.safetensors"}}).encode(),
    ]
    return seeds


def model_config_seeds():
    d = FIX / "tiny-glm4v"
    cfg = json.loads((d / "config.json").read_text())
    legacy = json.loads(json.dumps(cfg))
    t = legacy["text_config"]
    rp = t.pop("rope_parameters")
    t["rope_theta"] = rp["rope_theta"]
    t["partial_rotary_factor"] = rp["partial_rotary_factor"]
    t["rope_scaling"] = {"type": "default", "mrope_section": rp["mrope_section"]}
    t["head_dim"] = 128
    t["attention_bias"] = True
    return [(d / "config.json").read_bytes(), (d / "generation_config.json").read_bytes(),
            (d / "preprocessor_config.json").read_bytes(), json.dumps(legacy),
            json.dumps({"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
                        "min_pixels": 3136, "max_pixels": 12845056, "image_mean": 0.5,
                        "image_std": [0.5, 0.5, 0.5], "resample": 3, "do_resize": False}),
            json.dumps({"eos_token_id": 4136, "temperature": 0.6, "top_p": 0.95, "top_k": 2,
                        "do_sample": True, "max_new_tokens": 64, "repetition_penalty": 1.05})]


if __name__ == "__main__":
    write("http", http_seeds())
    write("ws", ws_seeds())
    write("chat_job", chat_job_seeds())
    write("image", image_seeds())
    write("tokenizer", tokenizer_seeds())
    write("chat_template", chat_template_seeds())
    write("safetensors", safetensors_seeds())
    write("model_config", model_config_seeds())
