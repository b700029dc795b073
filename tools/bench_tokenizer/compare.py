#!/usr/bin/env python3
"""gs_tokenizer against Hugging Face `tokenizers`, on the same files, in one run.

  compare.py make-text OUT [--mb 3]
      Writes a mixed UTF-8 text made from local files: /usr/share/common-licenses,
      Python stdlib sources, and generated CJK / Japanese / Korean / emoji / mixed lines.
  compare.py make-tokenizer --text FILE --out FILE [--vocab 65536]
      Trains a byte-level BPE with the structure of GLM's tokenizer.json (GLM-4 split
      regex + ByteLevel, GLM special tokens as added tokens) on FILE, for a benchmark at
      a realistic vocabulary size (the fixture tokenizer has 4,096 BPE tokens).
  compare.py bench --tokenizer FILE --text FILE [--iters N] [--chunk BYTES] [--build DIR]
      Encodes the text with HF tokenizers and with bench_tokenizer (from --build, default
      build/tok), one thread each: the whole file as one string, and as prompt-sized
      chunks; checks the ids are identical, prints both MB/s and the ratio.
  compare.py check --tokenizer FILE [--n 2000] [--seed 0] [--build DIR]
      Differential test: random strings (all scripts, whitespace runs, specials,
      digits, emoji, U+0085...) encoded and decoded by both; reports every difference.
  compare.py check-chat --model DIR [--n 2000] [--seed 0] [--build DIR]
      Differential test of the chat template: random conversations (tools, tool calls,
      tool responses, reasoning, media, thinking modes) rendered by transformers'
      apply_chat_template (needs transformers: run with the fixtures venv) and by
      gs-tokcli render.

`tokenizers` is not needed by CI: install it in a venv, e.g.
  python3 -m venv build/tok-venv && build/tok-venv/bin/pip install tokenizers
and run this script with build/tok-venv/bin/python.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

GLM_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GLM_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>",
                "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>", "<think>",
                "</think>", "<tool_call>", "</tool_call>", "/nothink", "<|image|>", "<|video|>"]

MIXED_LINES = [
    "今天天气很好，我们去公园散步吧。人工智能正在改变世界。",
    "機械学習とは、データから学習するアルゴリズムの研究です。カタカナとひらがな。",
    "한국어 문장은 이렇게 생겼습니다. 서울은 대한민국의 수도입니다.",
    "Emoji test: 😀😃😄 👨‍👩‍👧‍👦 🏳️‍🌈 🇨🇳🇺🇸 👍🏽 — done.",
    "Mixed 混合 text テキスト with numbers 12345 and symbols ¥€$ 3.14159.",
    "Привет, мир! Ελληνικά κείμενα. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया.",
    "def f(x):\n    return {\"key\": [1, 2, 3], 'v': x ** 2}  # comment\n",
    "   indented\twith\ttabs   and trailing spaces   \r\n",
]


def make_text(out, mb):
    parts = []
    lic = "/usr/share/common-licenses"
    if os.path.isdir(lic):
        for name in sorted(os.listdir(lic)):
            p = os.path.join(lic, name)
            if os.path.isfile(p) and not os.path.islink(p):
                parts.append(open(p, encoding="utf-8", errors="replace").read())
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in sorted(os.listdir(stdlib)):
        if name.endswith(".py"):
            parts.append(open(os.path.join(stdlib, name), encoding="utf-8",
                              errors="replace").read())
        if sum(len(p) for p in parts) > mb * 1e6 * 0.8:
            break
    rng = random.Random(0)
    mixed = [rng.choice(MIXED_LINES) for _ in range(int(mb * 1e6 * 0.2 / 60))]
    text = "\n".join(parts)
    # interleave the mixed lines so no part of the file is pure ASCII
    lines = text.split("\n")
    step = max(1, len(lines) // max(1, len(mixed)))
    outl = []
    for i, ln in enumerate(lines):
        outl.append(ln)
        if i % step == 0 and mixed:
            outl.append(mixed.pop())
    data = "\n".join(outl).encode("utf-8")[: int(mb * 1e6)]
    data = data.decode("utf-8", errors="ignore").encode("utf-8")
    with open(out, "wb") as f:
        f.write(data)
    print("wrote %s: %d bytes" % (out, len(data)), file=sys.stderr)


def make_tokenizer(text, out, vocab):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=GLM_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([text], trainer)
    tok.save(out)
    print("wrote %s: vocab %d" % (out, tok.get_vocab_size()), file=sys.stderr)


def build_dir(args):
    return args.build or os.path.join(ROOT, "build", "tok")


def chunks(data, size):
    """The text cut after a newline once `size` bytes are reached (as bench_tokenizer)."""
    out, s, n = [], 0, len(data)
    while s < n:
        e = min(s + size, n)
        if e < n:
            j = data.find(b"\n", e - 1)
            e = j + 1 if j >= 0 else n
        out.append(data[s:e].decode("utf-8"))
        s = e
    return out


def timed(fn, iters):
    times, res = [], None
    for _ in range(iters):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return res, times


def gs_bench(args, chunk):
    exe = os.path.join(build_dir(args), "tools", "bench_tokenizer", "bench_tokenizer")
    cmd = [exe, "--tokenizer", args.tokenizer, "--text", args.text, "--iters", str(args.iters)]
    if chunk:
        cmd += ["--chunk", str(chunk)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    row = out.splitlines()[-1].split("|")
    return out, float(row[6]), float(row[7]), int(row[3])


def bench(args):
    # One thread for HF too (encode_batch would use every core otherwise).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    import tokenizers
    from tokenizers import Tokenizer
    data = open(args.text, "rb").read()
    text = data.decode("utf-8")
    mb = len(data) / 1e6
    tok = Tokenizer.from_file(args.tokenizer)
    rows = []
    ids, t = timed(lambda: tok.encode(text, add_special_tokens=False).ids, args.iters)
    cli = os.path.join(build_dir(args), "tools", "bench_tokenizer", "gs-tokcli")
    got = subprocess.run([cli, "encode", args.tokenizer], input=json.dumps(text) + "\n",
                         capture_output=True, text=True, check=True).stdout
    same = json.loads(got) == ids
    table, gb, gm, gn = gs_bench(args, 0)
    print(table)
    rows.append(("whole text, one string", "Tokenizer.encode", mb / t[0], mb / t[-1 if
                 len(t) < 2 else len(t) // 2], gb, gm, len(ids), gn))
    parts = chunks(data, args.chunk)
    enc, t = timed(lambda: tok.encode_batch(parts, add_special_tokens=False), args.iters)
    n_hf = sum(len(e.ids) for e in enc)
    _, tf = timed(lambda: tok.encode_batch_fast(parts, add_special_tokens=False), args.iters)
    table, gb, gm, gn = gs_bench(args, args.chunk)
    print(table)
    label = "%d chunks of ~%d bytes" % (len(parts), args.chunk)
    rows.append((label, "encode_batch, 1 thread", mb / t[0], mb / t[len(t) // 2], gb, gm, n_hf,
                 gn))
    rows.append((label, "encode_batch_fast, 1 thread", mb / tf[0], mb / tf[len(tf) // 2], gb, gm,
                 n_hf, gn))
    print()
    print("HF tokenizers %s vs gs_tokenizer, %s (%d bytes), %s, encode MB/s (best of %d):"
          % (tokenizers.__version__, args.text, len(data), args.tokenizer, args.iters))
    print()
    print("| input | HF call | HF best | HF median | gs best | gs median | gs/HF | tokens HF | "
          "tokens gs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| %s | %s | %.2f | %.2f | %.2f | %.2f | %.1fx | %d | %d |"
              % (r[0], r[1], r[2], r[3], r[4], r[5], r[4] / r[2], r[6], r[7]))
    print()
    print("ids identical (whole text): %s; token counts equal (chunks): %s"
          % (same, rows[1][6] == rows[1][7]))
    return 0 if same and rows[1][6] == rows[1][7] else 1


def random_strings(n, seed, specials):
    rng = random.Random(seed)
    pools = [
        "abcXYZ", "'sStTdDmMlLvVrReE", " ", "  ", "\t", "\n", "\r\n", "\r", "\x0b\x0c",
        "\x85", "\xa0", "\u2028\u2029", "\u3000", "\u200b", "\u180e", "\x1c\x1d",
        "0123456789", "٣٤٥", "①Ⅻ", "ſK", "éÉ", "e\u0301", "中文字符测试", "日本語カタカナ",
        "한국어", "😀👍🏽🇨🇳", "\u200d", "\ufe0f", "𝔘𝔫𝔦", "𠀀𪚥", "!?.,;:", "()[]{}",
        "\"'`", "#$%&*+-/<=>@\\^_|~", "ﬁ", "Ｆｕｌｌ", "\u0000", "\x7f", "\ufffd",
        "<|", "|>", "<think>", "/nothink", "<", "user",
    ] + specials
    for _ in range(n):
        k = rng.randint(0, 24)
        yield "".join(rng.choice(rng.choice(pools)) if rng.random() < 0.5
                      else rng.choice(pools) for _ in range(k))


def check(args):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(args.tokenizer)
    specials = [t.content for t in tok.get_added_tokens_decoder().values()]
    cases = list(random_strings(args.n, args.seed, specials))
    cli = os.path.join(build_dir(args), "tools", "bench_tokenizer", "gs-tokcli")
    inp = "".join(json.dumps(s) + "\n" for s in cases)
    got = subprocess.run([cli, "encode", args.tokenizer], input=inp, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    bad = 0
    want_all = [tok.encode(s, add_special_tokens=False).ids for s in cases]
    dec_in = "".join(json.dumps(w) + "\n" for w in want_all)
    dec = subprocess.run([cli, "decode", args.tokenizer], input=dec_in, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    for s, w, g, dg in zip(cases, want_all, got, dec):
        gi = json.loads(g)
        hd = tok.decode(w, skip_special_tokens=False)
        if gi != w or json.loads(dg) != hd:
            bad += 1
            if bad <= 10:
                print("DIFF %r\n  hf %s\n  gs %s\n  hf decode %r\n  gs decode %r"
                      % (s, w, gi, hd, json.loads(dg)))
    print("%d/%d strings identical (encode and decode)" % (len(cases) - bad, len(cases)))
    return 1 if bad else 0


WS = ["", " ", "\n", "\n\n", "\t", "\u3000", "\x85", "\xa0 "]
WORDS = ["A1", "answer", "中文", "</think>", "<think>", "/nothink", "R", "x/nothink", "é", "{x}"]


def rand_text(rng):
    return "".join(rng.choice(WS) + rng.choice(WORDS) for _ in range(rng.randint(0, 3))) + \
        rng.choice(WS)


def rand_value(rng, depth=0):
    k = rng.randint(0, 7 if depth < 2 else 4)
    if k == 5:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 2))]
    if k == 6:
        return {"k%d" % i: rand_value(rng, depth + 1) for i in range(rng.randint(0, 2))}
    return [rand_text(rng), rng.randint(-5, 10 ** 6), rng.choice([0.5, 1e-07, 1e16, 2.0, -0.0]),
            True, None, None, None, "ü\"q\"\n"][k]


def rand_items(rng, role):
    items = []
    for _ in range(rng.randint(0, 4)):
        r = rng.random()
        if role == "tool":
            items.append(rng.choice([{"type": "text", "text": rand_text(rng)}, {"type": "Image"},
                                     {"type": "video_url"}, {"type": "data", "v": rand_value(rng)},
                                     rand_text(rng), {"output": rand_text(rng)}]))
        elif r < 0.5 or role == "assistant":
            items.append({"type": "text", "text": rand_text(rng)})
        elif r < 0.8:
            items.append({"type": "image"})
        else:
            items.append({"type": "video"})
    return items


def rand_conv(rng):
    msgs = []
    for _ in range(rng.randint(1, 6)):
        role = rng.choice(["system", "user", "user", "assistant", "assistant", "tool"])
        m = {"role": role}
        c = rng.random()
        m["content"] = rand_text(rng) if c < 0.5 else rand_items(rng, role) if c < 0.9 else None
        if role == "assistant":
            if rng.random() < 0.4:
                m[rng.choice(["reasoning_content", "thinking"])] = rand_text(rng)
            if rng.random() < 0.3:
                m["tool_calls"] = [
                    rng.choice([{"function": {"name": "f%d" % j, "arguments": {
                        "a%d" % i: rand_value(rng) for i in range(rng.randint(0, 3))}}},
                        {"name": "g", "arguments": {"q": rand_text(rng)}}])
                    for j in range(rng.randint(1, 2))]
        msgs.append(m)
    conv = {"messages": msgs, "add_generation_prompt": rng.random() < 0.7,
            "enable_thinking": rng.choice([None, True, False])}
    if rng.random() < 0.3:
        conv["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {
            "x": rand_value(rng)}}} for _ in range(rng.randint(1, 2))]
    return conv


def check_chat(args):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model)
    rng = random.Random(args.seed)
    convs = [rand_conv(rng) for _ in range(args.n)]
    cli = os.path.join(build_dir(args), "tools", "bench_tokenizer", "gs-tokcli")
    inp = "".join(json.dumps(c) + "\n" for c in convs)
    got = subprocess.run([cli, "render"], input=inp, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    bad = 0
    for c, g in zip(convs, got):
        kw = {} if c["enable_thinking"] is None else {"enable_thinking": c["enable_thinking"]}
        want = tok.apply_chat_template(c["messages"], tools=c.get("tools"), tokenize=False,
                                       add_generation_prompt=c["add_generation_prompt"], **kw)
        if json.loads(g) != want:
            bad += 1
            if bad <= 5:
                print("DIFF %s\n  hf %r\n  gs %r" % (json.dumps(c, ensure_ascii=False), want,
                                                     json.loads(g)))
    print("%d/%d conversations identical" % (len(convs) - bad, len(convs)))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-text")
    p.add_argument("out")
    p.add_argument("--mb", type=float, default=3.0)
    p = sub.add_parser("make-tokenizer")
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--vocab", type=int, default=65536)
    p = sub.add_parser("bench")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--build")
    p = sub.add_parser("check")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build")
    p = sub.add_parser("check-chat")
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build")
    a = ap.parse_args()
    if a.cmd == "make-text":
        return make_text(a.out, a.mb)
    if a.cmd == "make-tokenizer":
        return make_tokenizer(a.text, a.out, a.vocab)
    if a.cmd == "bench":
        return bench(a)
    if a.cmd == "check-chat":
        return check_chat(a)
    return check(a)


if __name__ == "__main__":
    sys.exit(main() or 0)
