#!/usr/bin/env python3
"""Generate glmserve's test fixtures: tests/fixtures/{tiny-glm4v,ref,VERSIONS.json}.

Developers run this (never CI); its output is committed. The format of every
file it writes is described in docs/fixtures.md.

Run with exactly these versions (tools/requirements-fixtures.txt pins them):
    torch 2.15.0 (PyPI wheel, 2.15.0+cu132, run on the CPU)
    transformers 5.24.0, tokenizers 0.23.3, pillow 13.0.0, safetensors 0.8.0,
    torchvision 0.29.2, numpy 2.4.6, jinja2 3.1.6 (Python 3.11)
Other versions are refused unless --allow-other-versions is given; the
references (resampling, BF16 rounding, chat rendering) depend on them.

The image processor backend is PINNED to PIL (Glm46VImageProcessorPil, via
AutoImageProcessor.from_pretrained(dir, backend="pil")): the default
torchvision backend resamples differently (+-1 uint8 after a resize). Images
are fed the way transformers' load_image() does for a file path:
PIL.ImageOps.exif_transpose() then .convert("RGB").

Nothing is downloaded: the tokenizer is trained on local text (the
licence texts in /usr/share/common-licenses, some Python standard library
sources and the CJK/emoji text below), the model is random, the images are
drawn here.

    python3 -m venv build/fixtures-venv
    build/fixtures-venv/bin/pip install -r tools/requirements-fixtures.txt
    build/fixtures-venv/bin/python tools/make_fixtures.py            # writes tests/fixtures
    build/fixtures-venv/bin/python tools/make_fixtures.py --out build/fx-check  # elsewhere (determinism check)
"""

import argparse
import hashlib
import io
import json
import math
import os
import platform
import shutil
import stat
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

# Never touch the network: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoProcessor,
    GenerationConfig,
    Glm4vConfig,
    Glm4vForConditionalGeneration,
    PreTrainedTokenizerFast,
)
from transformers.image_utils import load_image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures"

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "tokenizers": "0.23.3",
    "pillow": "13.0.0",
    "safetensors": "0.8.0",
    "torchvision": "0.29.2",
    "numpy": "2.4.6",
    "jinja2": "3.1.6",
}

# --------------------------------------------------------------------------
# Special tokens: the 36 GLM-4.5/4.6 specials (real ids 151329..151364), in
# real-id order. The tiny vocabulary puts them at 4136 + (real - 151329).
# --------------------------------------------------------------------------
SPECIALS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|begin_of_audio|>", "<|end_of_audio|>", "<|begin_of_transcription|>",
    "<|end_of_transcription|>", "<|code_prefix|>", "<|code_middle|>", "<|code_suffix|>",
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
    "</tool_response>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>",
    "/nothink", "<|begin_of_box|>", "<|end_of_box|>", "<|image|>", "<|video|>",
]
REAL_FIRST_SPECIAL = 151329
BPE_VOCAB = 4096
SPECIAL_BASE = 4136
VOCAB_SIZE = 4200
SPECIAL_ID = {s: SPECIAL_BASE + i for i, s in enumerate(SPECIALS)}
REAL_ID = {s: REAL_FIRST_SPECIAL + i for i, s in enumerate(SPECIALS)}
assert len(SPECIALS) == 36 and REAL_ID["<|image|>"] == 151363 and REAL_ID["<|video|>"] == 151364
assert REAL_ID["<|user|>"] == 151336 and REAL_ID["<|observation|>"] == 151338

# GLM-4 pre-tokenizer split regex (docs: glm4v-spec 6.4; cl100k style).
GLM4_PAT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# --------------------------------------------------------------------------
# Chat template: the GLM-4.6V family chat_template.jinja, as published in a
# public test of a chat-template library (leehack/llamadart,
# test/unit/core/template/chat_template_engine_test.dart, raw string
# _actualGlmOcrTemplate). 4,605 bytes, no trailing newline; sha256 checked.
# --------------------------------------------------------------------------
CHAT_TEMPLATE_SHA256 = "bf6cfe131f9af1cdbe0e1e4bda8cd56154e63d95d50df697155654bde7b387fd"
CHAT_TEMPLATE = r"""[gMASK]<sop>
{%- if tools -%}
<|system|>
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{% for tool in tools %}
{{ tool | tojson(ensure_ascii=False) }}
{% endfor %}
</tools>

For each function call, output the function name and arguments within the following XML format:
<tool_call>{function-name}
<arg_key>{arg-key-1}</arg_key>
<arg_value>{arg-value-1}</arg_value>
<arg_key>{arg-key-2}</arg_key>
<arg_value>{arg-value-2}</arg_value>
...
</tool_call>{%- endif -%}
{%- macro visible_text(content) -%}
    {%- if content is string -%}
        {{- content }}
    {%- elif content is iterable and content is not mapping -%}
        {%- for item in content -%}
            {%- if item is mapping and item.type == 'text' -%}
                {{- item.text }}
            {%- elif item is mapping and (item.type == 'image' or 'image' in item) -%}
                <|begin_of_image|><|image|><|end_of_image|>
            {%- elif item is mapping and (item.type == 'video' or 'video' in item) -%}
                <|begin_of_video|><|video|><|end_of_video|>
            {%- elif item is string -%}
                {{- item }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- content }}
    {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(last_user_index=-1) %}
{%- for m in messages %}
    {%- if m.role == 'user' %}
        {% set ns.last_user_index = loop.index0 -%}
    {%- endif %}
{%- endfor %}
{% for m in messages %}
{%- if m.role == 'user' -%}<|user|>
{% if m.content is string %}
{{ m.content }}
{%- else %}
{%- for item in m.content %}
{% if item.type == 'video' or 'video' in item %}
<|begin_of_video|><|video|><|end_of_video|>{% elif item.type == 'image' or 'image' in item %}
<|begin_of_image|><|image|><|end_of_image|>{% elif item.type == 'text' %}
{{ item.text }}
{%- endif %}
{%- endfor %}
{%- endif %}
{{- '/nothink' if (enable_thinking is defined and not enable_thinking and not visible_text(m.content).endswith("/nothink")) else '' -}}
{%- elif m.role == 'assistant' -%}
<|assistant|>
{%- set reasoning_content = '' %}
{%- set content = visible_text(m.content) %}
{%- if m.reasoning_content is string %}
    {%- set reasoning_content = m.reasoning_content %}
{%- else %}
    {%- if '</think>' in content %}
        {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
        {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
{%- endif %}
{%- if loop.index0 > ns.last_user_index and reasoning_content -%}
{{ '\n<think>' + reasoning_content.strip() +  '</think>'}}
{%- else -%}
{{ '\n<think></think>' }}
{%- endif -%}
{%- if content.strip() -%}
{{ '\n' + content.strip() }}
{%- endif -%}
{% if m.tool_calls %}
{% for tc in m.tool_calls %}
{%- if tc.function %}
    {%- set tc = tc.function %}
{%- endif %}
{{ '\n<tool_call>' + tc.name }}
{% set _args = tc.arguments %}
{% for k, v in _args.items() %}
<arg_key>{{ k }}</arg_key>
<arg_value>{{ v | tojson(ensure_ascii=False) if v is not string else v }}</arg_value>
{% endfor %}
</tool_call>{% endfor %}
{% endif %}
{%- elif m.role == 'tool' -%}
{%- if m.content is string -%}
{%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
    {{- '<|observation|>' }}
{%- endif %}
{{- '\n<tool_response>\n' }}
{{- m.content }}
{{- '\n</tool_response>' }}
{% elif m.content is iterable and m.content is not mapping %}
{%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
{{- '<|observation|>' }}
{%- endif %}
{{- '\n<tool_response>\n' }}
{%- for tr in m.content -%}
  {%- if tr is mapping and tr.type is defined -%}
    {%- set t = tr.type | lower -%}
    {%- if t == 'text' and tr.text is defined -%}
{{ tr.text }}
    {%- elif t in ['image', 'image_url'] -%}
<|begin_of_image|><|image|><|end_of_image|>
    {%- elif t in ['video', 'video_url'] -%}
<|begin_of_video|><|video|><|end_of_video|>
    {%- else -%}
{{ tr | tojson(ensure_ascii=False) }}
    {%- endif -%}
  {%- else -%}
{{ tr.output if tr.output is defined else tr }}
  {%- endif -%}
{%- endfor -%}
{{- '\n</tool_response>' }}
{%- else -%}
<|observation|>{% for tr in m.content %}

<tool_response>
{{ tr.output if tr.output is defined else tr }}
</tool_response>{% endfor -%}
{% endif -%}
{%- elif m.role == 'system' -%}
<|system|>
{{ visible_text(m.content) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>
{{'<think></think>\n' if (enable_thinking is defined and not enable_thinking) else ''}}
{%- endif -%}"""

# --------------------------------------------------------------------------
# Inline multilingual text for the tokenizer corpus (written for this file).
# --------------------------------------------------------------------------
CJK_TEXT = """\
今天天气很好，我们一起去公园散步吧。
晚上睡不着应该怎么办？可以试试听一些轻音乐。
我爱北京天安门，天安门上太阳升。
这个模型可以同时理解图片和文字。
请把这张图片里的文字识别出来。
图片中有一只猫坐在窗台上，窗外下着雨。
这是一个用于测试分词器的中文句子。
人工智能正在改变我们的生活和工作方式。
服务器收到请求以后，先解码图片，再进行推理。
推理服务需要低延迟和高吞吐量。
请用中文回答下面的问题。
我们的目标是在图形处理器上快速运行视觉语言模型。
这道数学题的答案是四十二。
他说：“明天见！”然后就走了。
《红楼梦》是中国古典小说的巅峰之作。
春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。
床前明月光，疑是地上霜。举头望明月，低头思故乡。
学而时习之，不亦说乎？有朋自远方来，不亦乐乎？
千里之行，始于足下。
一二三四五六七八九十，百千万亿。
第一章 总则 第二章 模型结构 第三章 图像预处理 第四章 文本生成
北京、上海、广州、深圳、杭州、成都、武汉、西安
中华人民共和国成立于一九四九年十月一日。
计算机科学与技术专业的学生需要学习数据结构和算法。
注意：输入图片的最大像素数量是有限制的。
错误：无法打开文件，请检查路径是否正确。
成功！模型已经加载完成，可以开始对话了。
用户：你好！助手：你好，有什么可以帮你的吗？
这张照片拍摄于二〇二四年的夏天。
繁體中文：這是一個測試句子，用來檢查分詞器。
臺灣、香港和澳門也使用繁體字。
電腦、軟體、網路、資料庫、演算法
日本語の文章です。今日はいい天気ですね。
私は東京に住んでいます。毎朝電車で会社に行きます。
この画像には何が写っていますか？
ひらがな、カタカナ、漢字を混ぜて書きます。
コンピューター、ソフトウェア、インターネット、データベース
ありがとうございます。どういたしまして。
すみません、駅はどこですか？
吾輩は猫である。名前はまだ無い。
東京都、大阪府、京都府、北海道、沖縄県
한국어 문장도 조금 넣습니다. 안녕하세요, 반갑습니다.
서울은 대한민국의 수도입니다.
表情符号测试：😀😃😄😁😆😅😂🤣☺️😊😇
动物：🐶🐱🐭🐹🐰🦊🐻🐼🐨🐯🦁🐮🐷🐸🐵
家庭：👨‍👩‍👧‍👦 👩‍👩‍👦 👨‍👨‍👧 👩‍❤️‍👨
旗帜：🇨🇳 🇯🇵 🇰🇷 🇺🇸 🇬🇧 🇫🇷 🇩🇪 🏳️‍🌈 🏴‍☠️
手势：👍 👍🏻 👍🏽 👍🏿 👋 🙏 ✌️ 🤝
天气：☀️ 🌤️ ⛅ 🌧️ ⛈️ 🌈 ❄️ 🌪️
食物：🍎 🍊 🍋 🍉 🍇 🍓 🍜 🍣 🍙 🍵 ☕
符号：✓ ✗ ★ ☆ ♥ ♦ ♣ ♠ → ← ↑ ↓ ± × ÷ ≠ ≤ ≥ ∞
Mixed: 这是 mixed 中英文 text，包含 English words 和 数字 123。
模型名称是 GLM-4.6V-Flash，参数量约为 10B。
请访问 https://example.com/文档 获取更多信息。
函数 def foo(x): return x * 2 用来把数字翻倍。
变量名 user_name 和 userName 都是合法的。
价格：¥128.50，折扣后 ￥99.00，约合 $13.99。
时间：2024年5月20日 14:30:00，温度 23.5°C。
电话号码：+86 138-0000-0000，邮箱：test@example.com
Ｆｕｌｌｗｉｄｔｈ　ｌｅｔｔｅｒｓ　ａｎｄ　ｄｉｇｉｔｓ　１２３４５
全角标点：，。！？；：“”‘’（）【】《》、……——
日本語と English が混ざった文章です。Version 2.0 をリリースしました。
GPUで推論を実行します。バッチサイズは8です。
「こんにちは」と彼女は言った。
Привет, мир! Это тест токенизатора.
Ελληνικά: Καλημέρα κόσμε.
العربية: مرحبا بالعالم
עברית: שלום עולם
हिन्दी: नमस्ते दुनिया
ภาษาไทย: สวัสดีชาวโลก
Tiếng Việt: Xin chào thế giới
Ünïcödé àccénts: café, naïve, résumé, Zürich, São Paulo, Kraków
"""

ZH_PHRASES = [
    "图像", "文本", "模型", "推理", "服务器", "客户端", "请求", "响应", "延迟", "吞吐量",
    "显存", "内存", "缓存", "批处理", "分词器", "注意力", "位置编码", "视觉编码器", "语言模型", "生成",
    "今天", "明天", "我们", "你们", "他们", "可以", "需要", "应该", "问题", "答案",
]
JA_PHRASES = [
    "画像", "文章", "モデル", "推論", "サーバー", "リクエスト", "レスポンス", "メモリ", "キャッシュ", "生成",
    "です", "ます", "でした", "しました", "について", "ために",
]
EN_PHRASES = [
    "image", "text", "model", "inference", "server", "client", "request", "response", "latency",
    "throughput", "memory", "cache", "batch", "tokenizer", "attention", "position", "vision",
    "language", "generation", "the", "and", "of", "with", "for",
]
EMOJI = ["😀", "🚀", "🔥", "✨", "🎉", "🤖", "📷", "🖼️", "💡", "✅", "❌", "⚠️", "👨‍💻", "🇨🇳", "🇯🇵"]
STDLIB_FILES = [
    "abc.py", "argparse.py", "ast.py", "base64.py", "bisect.py", "calendar.py", "cmd.py",
    "codecs.py", "colorsys.py", "contextlib.py", "copy.py", "csv.py", "dataclasses.py",
    "datetime.py", "difflib.py", "enum.py", "fnmatch.py", "fractions.py", "functools.py",
    "genericpath.py", "getopt.py", "gettext.py", "glob.py", "gzip.py", "hashlib.py", "heapq.py",
    "hmac.py", "inspect.py", "io.py", "ipaddress.py", "json/__init__.py", "json/decoder.py",
    "json/encoder.py", "json/scanner.py", "keyword.py", "linecache.py", "locale.py", "numbers.py",
    "operator.py", "optparse.py", "os.py", "pathlib.py", "pprint.py", "queue.py", "random.py",
    "re/__init__.py", "reprlib.py", "secrets.py", "shlex.py", "shutil.py", "socket.py",
    "statistics.py", "string.py", "struct.py", "subprocess.py", "tempfile.py", "textwrap.py",
    "threading.py", "tokenize.py", "types.py", "typing.py", "uuid.py", "weakref.py", "zipfile.py",
]


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def dumps(o, ind=0):
    """Deterministic, readable JSON: dicts one key per line, lists without
    dicts on a single line. UTF-8, no ASCII escaping."""
    sp = " " * ind
    if isinstance(o, dict):
        if not o:
            return "{}"
        items = [f'{sp} {json.dumps(k, ensure_ascii=False)}: {dumps(v, ind + 1)}' for k, v in o.items()]
        return "{\n" + ",\n".join(items) + "\n" + sp + "}"
    if isinstance(o, (list, tuple)):
        def has_dict(x):
            return isinstance(x, dict) or (isinstance(x, (list, tuple)) and any(has_dict(y) for y in x))
        if not any(has_dict(x) for x in o):
            return json.dumps(o, ensure_ascii=False)
        items = [f"{sp} {dumps(v, ind + 1)}" for v in o]
        return "[\n" + ",\n".join(items) + "\n" + sp + "]"
    return json.dumps(o, ensure_ascii=False)


def write_json(path, obj):
    path.write_text(dumps(obj) + "\n", encoding="utf-8")


def save_tensors(path, tensors):
    """safetensors with no metadata; arrays made contiguous numpy."""
    out = {}
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            if v.dtype == torch.bfloat16:
                v = v.float()
            v = v.numpy()
        out[k] = np.ascontiguousarray(v)
    np_save_file(out, str(path))


def versions():
    v = {"python": platform.python_version()}
    for name in ["torch", "transformers", "tokenizers", "pillow", "safetensors", "torchvision", "numpy", "jinja2"]:
        v[name] = metadata.version(name)
    v["torch_build"] = torch.__version__
    return v


# --------------------------------------------------------------------------
# 1. Tokenizer
# --------------------------------------------------------------------------
def corpus_lines():
    lines = []
    sources = []
    lic = Path("/usr/share/common-licenses")
    if not lic.is_dir():
        sys.exit("error: /usr/share/common-licenses is missing (Debian base-files); the corpus needs it")
    for p in sorted(lic.iterdir()):
        if p.is_symlink() or not p.is_file():
            continue
        lines += p.read_text(encoding="utf-8", errors="replace").splitlines()
        sources.append("common-licenses/" + p.name)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for rel in STDLIB_FILES:
        p = stdlib / rel
        if not p.is_file():
            sys.exit(f"error: stdlib file {rel} not found")
        lines += p.read_text(encoding="utf-8").splitlines()
        sources.append("python-stdlib/" + rel)
    # Inline multilingual text: the sentences, then deterministic mixtures so
    # that CJK pairs occur often enough (min_frequency 2) to be merged.
    cjk = CJK_TEXT.splitlines()
    lines += cjk * 10
    n = 0
    for i, zh in enumerate(ZH_PHRASES):
        for j in range(4):
            en = EN_PHRASES[(i * 7 + j * 5) % len(EN_PHRASES)]
            ja = JA_PHRASES[(i * 3 + j) % len(JA_PHRASES)]
            em = EMOJI[(i + j * 4) % len(EMOJI)]
            num = (i * 37 + j * 1009) % 100000
            lines.append(f"{zh}{ZH_PHRASES[(i + j + 1) % len(ZH_PHRASES)]}（{en}）是{ja}的{num}个例子{em}")
            lines.append(f"The {en} {zh} test #{num}: {ja}{JA_PHRASES[(i + 5 * j) % len(JA_PHRASES)]} {em}")
            n += 2
    lines += lines[-n:] * 2
    sources.append(f"inline CJK/emoji text: {len(cjk)} lines x10 + {n} generated lines x3")
    return lines, sources


def train_bpe(lines):
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GLM4_PAT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def add_specials_gap(tok):
    """The "gap" method: put each special into model.vocab at its remapped id
    and list it in added_tokens (special, not normalized)."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    assert len(vocab) == BPE_VOCAB, f"BPE vocab has {len(vocab)} entries, want {BPE_VOCAB} (corpus too small?)"
    assert sorted(vocab.values()) == list(range(BPE_VOCAB))
    added = []
    for s in SPECIALS:
        assert s not in vocab, f"special {s!r} already a BPE token"
        vocab[s] = SPECIAL_ID[s]
        added.append({"id": SPECIAL_ID[s], "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    j["added_tokens"] = added
    j["normalizer"] = None
    j["post_processor"] = None
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def build_tokenizer(model_dir):
    lines, sources = corpus_lines()
    corpus_sha = sha256_bytes("\n".join(lines).encode("utf-8"))
    t0 = time.time()
    tok_a = train_bpe(lines)
    tok_b = train_bpe(lines)
    if tok_a.to_str() != tok_b.to_str():
        sys.exit("error: BPE training is not deterministic")
    log(f"tokenizer: trained twice on {len(lines)} lines ({time.time() - t0:.1f} s), identical")
    tok = add_specials_gap(tok_a)
    # Self-checks of the added tokens.
    for s in SPECIALS:
        assert tok.token_to_id(s) == SPECIAL_ID[s], s
        assert tok.encode(s, add_special_tokens=False).ids == [SPECIAL_ID[s]], s
    for at in json.loads(tok.to_str())["added_tokens"]:
        assert at["special"] is True and at["normalized"] is False
    probe = "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Hi<|assistant|>\n"
    ids = tok.encode(probe, add_special_tokens=False).ids
    assert ids[:3] == [SPECIAL_ID["[gMASK]"], SPECIAL_ID["<sop>"], SPECIAL_ID["<|user|>"]], ids
    assert tok.decode(ids, skip_special_tokens=False) == probe
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(model_dir))
    return hf, {"sha256": corpus_sha, "lines": len(lines), "sources": sources}


# --------------------------------------------------------------------------
# 2. Model folder
# --------------------------------------------------------------------------
EOS_IDS = [SPECIAL_ID["<|endoftext|>"], SPECIAL_ID["<|user|>"], SPECIAL_ID["<|observation|>"]]
PAD_ID = SPECIAL_ID["<|endoftext|>"]
LM_HEAD_SCALE = 20.0

PREPROCESSOR_CONFIG = {
    "size": {"shortest_edge": 12544, "longest_edge": 9633792},
    "do_rescale": True,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Glm46VImageProcessor",
    "processor_class": "Glm46VProcessor",
}


def make_config():
    return Glm4vConfig(
        text_config=dict(
            vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, hidden_act="silu",
            max_position_embeddings=131072, rms_norm_eps=1e-5, use_cache=True,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0,
                             "partial_rotary_factor": 0.5, "mrope_section": [8, 12, 12]},
            pad_token_id=PAD_ID, eos_token_id=list(EOS_IDS),
        ),
        vision_config=dict(
            depth=2, hidden_size=256, num_heads=2, out_hidden_size=256, intermediate_size=512,
            hidden_act="silu", patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
            image_size=336, in_channels=3, rms_norm_eps=1e-5,
        ),
        image_token_id=SPECIAL_ID["<|image|>"],
        video_token_id=SPECIAL_ID["<|video|>"],
        image_start_token_id=SPECIAL_ID["<|begin_of_image|>"],
        image_end_token_id=SPECIAL_ID["<|end_of_image|>"],
        video_start_token_id=SPECIAL_ID["<|begin_of_video|>"],
        video_end_token_id=SPECIAL_ID["<|end_of_video|>"],
        tie_word_embeddings=False,
    )


def build_model(model_dir):
    cfg = make_config()
    torch.manual_seed(0)
    model = Glm4vForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        # Every bias and every norm weight gets +0.1*randn (drawn in
        # named_parameters order from the same seeded stream).
        norm_params = set()
        for mname, mod in model.named_modules():
            if "Norm" in type(mod).__name__:
                for pname, _ in mod.named_parameters(recurse=False):
                    norm_params.add(f"{mname}.{pname}")
        g = torch.Generator().manual_seed(0)
        n_pert = 0
        for name, p in model.named_parameters():
            if name.endswith(".bias") or name in norm_params:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
                n_pert += 1
        # Make greedy output decodable: unused ids can never win, the rest of
        # the rows are scaled up so logits have a useful spread.
        w = model.lm_head.weight
        w[BPE_VOCAB:SPECIAL_BASE] = 0
        w[SPECIAL_BASE + len(SPECIALS):] = 0
        w[:BPE_VOCAB] *= LM_HEAD_SCALE
        w[SPECIAL_BASE:SPECIAL_BASE + len(SPECIALS)] *= LM_HEAD_SCALE
    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=list(EOS_IDS), pad_token_id=PAD_ID)
    model = model.to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(model_dir), max_shard_size="6MB")
    shards = sorted(model_dir.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (model_dir / "model.safetensors.index.json").is_file(), shards
    log(f"model: {n_params} parameters, {n_pert} biases/norm weights perturbed, {len(shards)} shards")
    return n_params


def write_model_folder(model_dir):
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    hf_tok, corpus = build_tokenizer(model_dir)
    assert sha256_bytes(CHAT_TEMPLATE.encode("utf-8")) == CHAT_TEMPLATE_SHA256
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (model_dir / "preprocessor_config.json").write_text(
        json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n", encoding="utf-8")
    n_params = build_model(model_dir)
    # Keep exactly the documented files.
    expected = {"config.json", "generation_config.json", "model.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                "preprocessor_config.json"}
    for p in sorted(model_dir.iterdir()):
        if p.name not in expected and not (p.name.startswith("model-") and p.name.endswith(".safetensors")):
            log(f"model folder: removing extra file {p.name}")
            p.unlink()
    return corpus, n_params


def load_processor(model_dir):
    ip = AutoImageProcessor.from_pretrained(str(model_dir), backend="pil")
    assert type(ip).__name__ == "Glm46VImageProcessorPil", type(ip)
    proc = AutoProcessor.from_pretrained(str(model_dir), image_processor=ip)
    assert type(proc).__name__ == "Glm46VProcessor", type(proc)
    assert proc.chat_template == CHAT_TEMPLATE
    tok = proc.tokenizer
    for s in SPECIALS:
        assert tok.convert_tokens_to_ids(s) == SPECIAL_ID[s], s
    assert proc.image_token_id == SPECIAL_ID["<|image|>"]
    return proc, ip, tok


# --------------------------------------------------------------------------
# 3. Images (drawn deterministically)
# --------------------------------------------------------------------------
_FONT = None


def font():
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default_imagefont()  # built-in bitmap font: no FreeType dependence
    return _FONT


def scene(w, h, seed, noise=0.0, label=None, flat=False):
    """Smooth synthetic RGB content: gradients, shapes, a little text."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    c0, c1, c2 = rs.uniform(30, 225, size=(3, 3))
    if flat:
        # Piecewise-constant background in 32x32 cells (compresses well even after JPEG + resize).
        u = np.floor(x / 32) * 32 / max(w - 1, 1)
        v = np.floor(y / 32) * 32 / max(h - 1, 1)
    img = (c0[None, None, :] * (1 - u[..., None]) * (1 - v[..., None])
           + c1[None, None, :] * u[..., None] * (1 - v[..., None])
           + c2[None, None, :] * v[..., None])
    if noise > 0:
        img = img + rs.normal(0.0, noise, size=img.shape)
    pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(pil)
    for _ in range(4):
        cx, cy = rs.uniform(0, w), rs.uniform(0, h)
        r = rs.uniform(0.08, 0.3) * min(w, h) + 2
        col = tuple(int(c) for c in rs.randint(0, 256, size=3))
        if rs.rand() < 0.5:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        else:
            d.rectangle([cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r], fill=col)
    d.line([(0, 0), (w - 1, h - 1)], fill=(255, 255, 255), width=max(1, min(w, h) // 40))
    if label:
        d.text((3, 2), label, fill=(0, 0, 0), font=font())
    return pil


def orientation_marker(pil):
    """Asymmetric marks (red top-left block, blue bottom bar) to see rotations."""
    d = ImageDraw.Draw(pil)
    w, h = pil.size
    d.rectangle([0, 0, w // 3, h // 4], fill=(220, 20, 20))
    d.rectangle([0, h - h // 8, w - 1, h - 1], fill=(20, 20, 220))
    d.text((w // 3 + 2, 2), "TOP", fill=(0, 0, 0), font=font())
    return pil


def exif_bytes(orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def make_images(img_dir):
    img_dir.mkdir(parents=True, exist_ok=True)
    specs = []

    def jpg(name, pil, quality, subsampling, **kw):
        pil.save(img_dir / name, "JPEG", quality=quality, subsampling=subsampling, optimize=False, **kw)
        specs.append(name)

    def png(name, pil):
        pil.save(img_dir / name, "PNG", compress_level=9)
        specs.append(name)

    jpg("small_100x140.jpg", scene(100, 140, 1, noise=4.0, label="small"), 90, 0)          # 4:4:4
    jpg("medium_640x480.jpg", scene(640, 480, 2, label="medium 640x480"), 85, 2)           # 4:2:0
    jpg("large_3000x1700.jpg", scene(3000, 1700, 3, label="large 3000x1700", flat=True), 85, 2)
    png("wide_2000x60.png", scene(2000, 60, 4, label="wide 2000x60"))
    jpg("tall_50x1400.jpg", scene(50, 1400, 5, label="tall"), 90, 2)
    png("tiny_20x90.png", scene(20, 90, 6, noise=6.0))
    jpg("gray_300x200.jpg", scene(300, 200, 7, label="gray jpeg").convert("L"), 90, 0)
    png("gray_123x77.png", scene(123, 77, 8, noise=3.0, label="gray").convert("L"))
    # RGBA with real transparency: alpha ramps left->right, a fully transparent
    # disc whose hidden RGB is saturated green (so drop-alpha != composite-on-white).
    rgba = scene(200, 150, 9, label="rgba").convert("RGBA")
    a = np.tile(np.linspace(255, 40, 200).astype(np.uint8)[None, :], (150, 1))
    yy, xx = np.mgrid[0:150, 0:200]
    hole = (xx - 140) ** 2 + (yy - 75) ** 2 < 35 ** 2
    arr = np.asarray(rgba).copy()
    arr[..., 3] = a
    arr[hole, 3] = 0
    arr[hole, :3] = (0, 255, 0)
    png("rgba_200x150.png", Image.fromarray(arr, "RGBA"))
    # Palette image built directly from an index array (16 colours).
    rs = np.random.RandomState(10)
    pal = rs.randint(0, 256, size=(16, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:120, 0:160]
    idx = ((xx // 20) + 2 * (yy // 30) + ((xx - 80) ** 2 + (yy - 60) ** 2 < 900)) % 16
    p = Image.fromarray(idx.astype(np.uint8), "P")
    p.putpalette(pal.flatten().tolist() + [0] * (768 - 48))
    png("palette_160x120.png", p)
    # EXIF orientation: stored pixels + tag; decoders must apply the transform.
    jpg("exif6_120x80.jpg", orientation_marker(scene(120, 80, 11)), 90, 1, exif=exif_bytes(6))   # 4:2:2
    jpg("exif8_96x64.jpg", orientation_marker(scene(96, 64, 12)), 90, 2, exif=exif_bytes(8))
    jpg("exif3_90x60.jpg", orientation_marker(scene(90, 60, 13)), 90, 2, exif=exif_bytes(3))
    jpg("square_336x336.jpg", scene(336, 336, 14, label="336x336 progressive"), 90, 2, progressive=True)
    # Small lossless images for the model cases.
    png("model_56x56.png", scene(56, 56, 15, label="A"))
    png("model_84x56.png", scene(84, 56, 16, label="B"))
    return specs


# --------------------------------------------------------------------------
# 4. Preprocessing references
# --------------------------------------------------------------------------
PV_HEAD_ROWS = 16
MEAN = np.array(PREPROCESSOR_CONFIG["image_mean"], dtype=np.float64)
STD = np.array(PREPROCESSOR_CONFIG["image_std"], dtype=np.float64)


def unpatchify_t0(pv, gh, gw):
    """pixel_values [gh*gw, 1176] -> float32 CHW [3, gh*14, gw*14] (t=0 copy);
    checks that t=1 duplicates t=0."""
    p = pv.reshape(gh // 2, gw // 2, 2, 2, 3, 2, 14, 14)  # bh bw mh mw c t y x
    assert np.array_equal(p[:, :, :, :, :, 0], p[:, :, :, :, :, 1])
    p = p[:, :, :, :, :, 0]  # bh bw mh mw c y x
    p = p.transpose(4, 0, 2, 5, 1, 3, 6)  # c bh mh y bw mw x
    return np.ascontiguousarray(p.reshape(3, gh * 14, gw * 14))


def preprocess_cases(ref_dir, img_names, ip):
    pre_dir = ref_dir / "preprocess"
    pre_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    for name in img_names:
        path = ref_dir / "images" / name
        stem = path.stem
        raw = Image.open(path)
        raw_mode, raw_format, raw_wh = raw.mode, raw.format, list(raw.size)
        orient = raw.getexif().get(0x0112)
        img = load_image(str(path))  # exif_transpose + convert("RGB"), as for a file path
        # The same thing spelled out, to pin down what load_image does.
        manual = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        assert np.array_equal(np.asarray(img), np.asarray(manual))
        decoded = np.asarray(img)
        out = ip(images=[img], return_tensors="np")
        pv = out["pixel_values"]
        grid = [int(x) for x in out["image_grid_thw"][0]]
        t, gh, gw = grid
        assert t == 1 and pv.shape == (gh * gw, 1176) and pv.dtype == np.float32
        chw = unpatchify_t0(pv, gh, gw)
        rec = np.rint((chw.astype(np.float64) * STD[:, None, None] + MEAN[:, None, None]) * 255.0)
        assert rec.min() >= 0 and rec.max() <= 255
        rec = rec.astype(np.uint8)
        # Exactness: the processor's own rescale+normalize of the recovered
        # uint8 image must give back pixel_values bit for bit.
        again = ip.normalize(ip.rescale(rec, 1 / 255), PREPROCESSOR_CONFIG["image_mean"],
                             PREPROCESSOR_CONFIG["image_std"])
        assert np.array_equal(again.astype(np.float32), chw), f"{stem}: inversion not exact"
        # And the resize is Pillow's Image.resize(BICUBIC) of the decoded RGB image.
        rh, rw = gh * 14, gw * 14
        pil_resized = np.asarray(img.resize((rw, rh), Image.BICUBIC)).transpose(2, 0, 1)
        assert np.array_equal(pil_resized, rec), f"{stem}: not equal to PIL BICUBIC resize"
        hwc = np.ascontiguousarray(rec.transpose(1, 2, 0))
        Image.fromarray(hwc, "RGB").save(pre_dir / f"{stem}.png", "PNG", compress_level=9)
        save_tensors(pre_dir / f"{stem}.safetensors", {
            "pixel_values_head": pv[:PV_HEAD_ROWS],
            "grid_thw": np.array(grid, dtype=np.int64),
        })
        cases.append({
            "name": stem,
            "file": f"images/{name}",
            "format": raw_format,
            "mode": raw_mode,
            "stored_wh": raw_wh,
            "exif_orientation": orient,
            "decoded_wh": [img.size[0], img.size[1]],
            "decoded_sha256": sha256_bytes(decoded.tobytes()),
            "resized_wh": [rw, rh],
            "grid_thw": grid,
            "n_patches": gh * gw,
            "n_image_tokens": gh * gw // 4,
            "resized_png": f"preprocess/{stem}.png",
            "resized_sha256": sha256_bytes(hwc.tobytes()),
            "pixel_values": f"preprocess/{stem}.safetensors",
        })
        log(f"preprocess: {name:22s} {raw_mode:4s} stored {raw_wh} orient {orient} -> decoded "
            f"{list(img.size)} -> resized {[rw, rh]} grid {grid}")
    write_json(ref_dir / "preprocess.json", {
        "backend": "pil",
        "image_processor": "Glm46VImageProcessorPil",
        "loader": "transformers.image_utils.load_image: PIL.ImageOps.exif_transpose, then convert('RGB')",
        "pixel_values_head_rows": PV_HEAD_ROWS,
        "cases": cases,
    })
    return {c["name"]: c for c in cases}


# --------------------------------------------------------------------------
# 5. Tokenizer cases
# --------------------------------------------------------------------------
TOKENIZER_TEXTS = [
    "",
    "Hello, world!",
    "hello world",
    " hello",
    "晚上睡不着应该怎么办",
    "我爱北京天安门。",
    "繁體中文：這是一個測試。",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 문장입니다",
    "😀",
    "👨‍👩‍👧‍👦 family",
    "🏳️‍🌈 and 🇨🇳🇺🇸🇯🇵",
    "👍🏽 skin tone",
    "混合 mixed テキスト text 123 ✓",
    "1",
    "12",
    "123",
    "1234",
    "1234567",
    "3.14159 and 2,718,281",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "tab\there\t\tand\t",
    "a\n\n\nb",
    "line1\r\nline2\r\n",
    "end \n next",
    "   \n   ",
    " ",
    "\n",
    "\t",
    "He's here, they'LL go, we'Re done, I'm, you'd, it'T, we've",
    "don't won't can't",
    "def foo(x):\n    return x**2  # square\n",
    "for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }",
    "{\"key\": \"value\", \"n\": [1, 2, 3]}",
    "C:\\path\\to\\file.txt",
    "https://example.com/path?q=1&r=2#frag",
    "email@example.com",
    "!!!???...---***",
    "I said \"hello\" and 'bye'",
    "hello<|user|>world",
    "[gMASK]<sop>",
    "<|endoftext|>",
    "<|user|><|assistant|>",
    "<|user|>\n<|begin_of_image|><|image|><|end_of_image|>What?<|assistant|>\n",
    "<think>reasoning</think>answer",
    "question/nothink",
    "<|user",
    "e\u0301 combining (e\u0301 vs \u00e9)",
    "\ufffd replacement char",
    "Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 100,
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　１２３",
    "\u00a0nbsp\u00a0",
    "zero\u200bwidth\u200bspace",
    "Привет, мир! Ελληνικά",
    "مرحبا بالعالم שלום",
    "नमस्ते สวัสดี",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𪚥",
    "①②③ Ⅻ ٣٤٥ ﬁ",
    "价格：¥128.50，约合 $13.99。",
]


def tokenizer_cases(ref_dir, tok):
    raw = tok.backend_tokenizer
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == raw.encode(text, add_special_tokens=False).ids
        dec = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if dec != text:
            log(f"tokenizer: decode differs for {text!r}: {dec!r}")
        cases.append({"text": text, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids), "decoded": dec})
    assert len(cases) >= 40
    write_json(ref_dir / "tokenizer_cases.json", {
        "add_special_tokens": False,
        "skip_special_tokens": False,
        "cases": cases,
    })
    log(f"tokenizer cases: {len(cases)}")


# --------------------------------------------------------------------------
# 6. Chat cases
# --------------------------------------------------------------------------
IMG = {"type": "image"}


def txt(s):
    return {"type": "text", "text": s}


SPEC_CASES = [
    ("A", [{"role": "user", "content": [IMG, txt("What is in this image?")]}], None, True,
     "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is in this image?<|assistant|>\n"),
    ("B", [{"role": "user", "content": [IMG, txt("What is in this image?")]}], False, True,
     "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is in this image?/nothink"
     "<|assistant|>\n<think></think>\n"),
    ("C", [{"role": "system", "content": "You are helpful."},
           {"role": "user", "content": [IMG, txt("Q1")]},
           {"role": "assistant", "content": "A1"},
           {"role": "user", "content": "Q2"}], None, True,
     "[gMASK]<sop><|system|>\nYou are helpful.<|user|>\n<|begin_of_image|><|image|><|end_of_image|>Q1"
     "<|assistant|>\n<think></think>\nA1<|user|>\nQ2<|assistant|>\n"),
    ("D", [{"role": "system", "content": "You are helpful."},
           {"role": "user", "content": [IMG, txt("Q1")]},
           {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
           {"role": "user", "content": "Q2"}], None, True,
     "[gMASK]<sop><|system|>\nYou are helpful.<|user|>\n<|begin_of_image|><|image|><|end_of_image|>Q1"
     "<|assistant|>\n<think></think>\nA1<|user|>\nQ2<|assistant|>\n"),
    ("E", [{"role": "system", "content": "You are helpful."},
           {"role": "user", "content": [IMG, txt("Q1")]},
           {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
           {"role": "user", "content": "Q2"}], False, True,
     "[gMASK]<sop><|system|>\nYou are helpful.<|user|>\n<|begin_of_image|><|image|><|end_of_image|>Q1/nothink"
     "<|assistant|>\n<think></think>\nA1<|user|>\nQ2/nothink<|assistant|>\n<think></think>\n"),
    ("F", [{"role": "user", "content": "Q1"},
           {"role": "assistant", "content": "A1", "reasoning_content": "R1"}], None, False,
     "[gMASK]<sop><|user|>\nQ1<|assistant|>\n<think>R1</think>\nA1"),
    ("G", [{"role": "user", "content": "Hello, who are you?"}], None, True,
     "[gMASK]<sop><|user|>\nHello, who are you?<|assistant|>\n"),
    ("H", [{"role": "user", "content": [txt("Hello, who are you?")]}], None, True,
     "[gMASK]<sop><|user|>\nHello, who are you?<|assistant|>\n"),
    ("I", [{"role": "user", "content": [IMG, IMG, txt("Compare the two images.")]}], None, True,
     "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|><|begin_of_image|><|image|>"
     "<|end_of_image|>Compare the two images.<|assistant|>\n"),
    ("J", [{"role": "user", "content": [txt("Look: "), IMG, txt(" What is it?")]}], None, True,
     "[gMASK]<sop><|user|>\nLook: <|begin_of_image|><|image|><|end_of_image|> What is it?<|assistant|>\n"),
]

SPEC_TITLES = {
    "A": "one image + question, thinking on (default)",
    "B": "one image + question, enable_thinking=False",
    "C": "system + user(image) + assistant + user, history assistant without reasoning_content",
    "D": "same as C, history assistant with reasoning_content",
    "E": "same as D with enable_thinking=False",
    "F": "final assistant turn with reasoning_content (no generation prompt)",
    "G": "text-only question (string content)",
    "H": "text-only question (list content)",
    "I": "two images in one message",
    "J": "text before image",
}

IMAGE_CHAT_CASES = [
    ("img0", [{"role": "user", "content": "Describe the weather in Paris in one sentence."}], []),
    ("img1", [{"role": "user", "content": [IMG, txt("这张图片里有什么？ What is in it?")]}],
     ["images/small_100x140.jpg"]),
    ("img2", [{"role": "system", "content": "You are a careful assistant."},
              {"role": "user", "content": [txt("First: "), IMG, txt(" second: "), IMG,
                                           txt(" Which one is brighter?")]}],
     ["images/small_100x140.jpg", "images/gray_123x77.png"]),
]


def render(proc, messages, enable_thinking, add_generation_prompt):
    kw = {}
    if enable_thinking is not None:
        kw["enable_thinking"] = enable_thinking
    return proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kw)


def run_processor(proc, ref_dir, text, images):
    pils = [load_image(str(ref_dir / p)) for p in images]
    out = proc(text=[text], images=pils if pils else None, return_tensors="pt")
    grid = out["image_grid_thw"].tolist() if "image_grid_thw" in out else []
    return out, grid


def chat_cases(ref_dir, proc, tok):
    cases = []
    for key, msgs, think, agp, expected in SPEC_CASES:
        r = render(proc, msgs, think, agp)
        if r != expected:
            sys.exit(f"error: spec case {key} renders\n{r!r}\nexpected\n{expected!r}")
        ids = tok.encode(r, add_special_tokens=False)
        assert ids[:2] == [SPECIAL_ID["[gMASK]"], SPECIAL_ID["<sop>"]]
        assert ids.count(SPECIAL_ID["[gMASK]"]) == 1
        cases.append({"name": f"{key}. {SPEC_TITLES[key]}", "messages": msgs, "enable_thinking": think,
                      "add_generation_prompt": agp, "rendered": r, "images": [], "image_grid_thw": [],
                      "input_ids": ids})
    log("chat: spec cases A..J render exactly")
    for base, msgs, images in IMAGE_CHAT_CASES:
        for think in (None, False):
            r = render(proc, msgs, think, True)
            out, grid = run_processor(proc, ref_dir, r, images)
            ids = out["input_ids"][0].tolist()
            n_img = ids.count(SPECIAL_ID["<|image|>"])
            assert n_img == sum(t * h * w // 4 for t, h, w in grid)
            if not images:
                assert ids == tok.encode(r, add_special_tokens=False)
            name = f"{base}_{'think_default' if think is None else 'nothink'}"
            cases.append({"name": name, "messages": msgs, "enable_thinking": think,
                          "add_generation_prompt": True, "rendered": r, "images": images,
                          "image_grid_thw": grid, "input_ids": ids})
            log(f"chat: {name}: {len(ids)} ids, grids {grid}")
    write_json(ref_dir / "chat_cases.json", {"cases": cases})


# --------------------------------------------------------------------------
# 7. Model cases
# --------------------------------------------------------------------------
MODEL_CASES = [
    ("text_only", [{"role": "user", "content": "Hello, who are you?"}], []),
    ("one_image", [{"role": "user", "content": [IMG, txt("What is in this image?")]}],
     ["images/model_56x56.png"]),
    ("two_images", [{"role": "user", "content": [IMG, IMG, txt("Compare the two images.")]}],
     ["images/model_56x56.png", "images/model_84x56.png"]),
]
GEN_KW = dict(do_sample=False, max_new_tokens=16, min_new_tokens=16, repetition_penalty=1.0)


class Hooks:
    """Capture vision intermediates of the first forward call only."""

    def __init__(self, model):
        vis = model.model.visual
        self.out = {}
        self.handles = []
        points = [
            ("vision_patch_conv", vis.patch_embed),
            ("vision_post_conv_norm", vis.post_conv_layernorm),
            ("vision_patch_embed", vis.embeddings),
            ("vision_block0_out", vis.blocks[0]),
            ("vision_blocks_out", vis.blocks[-1]),
            ("vision_post_layernorm", vis.post_layernorm),
            ("vision_downsample", vis.downsample),
            ("vision_embeds", vis.merger),
        ]
        for name, mod in points:
            self.handles.append(mod.register_forward_hook(self._make(name)))
        self.handles.append(model.model.language_model.layers[-1].register_forward_hook(
            self._make("last_layer_out")))

    def _make(self, name):
        def hook(mod, args, output):
            if name in self.out:
                return
            t = output[0] if isinstance(output, tuple) else output
            t = t.detach().float()
            if name == "vision_downsample":
                t = t.reshape(t.shape[0], -1)
            if name == "last_layer_out":
                t = t[0]
            self.out[name] = t.clone()
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def model_cases(ref_dir, model_dir, proc, tok):
    mdir = ref_dir / "model"
    mdir.mkdir(parents=True, exist_ok=True)
    m32 = Glm4vForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager").eval()
    m16 = Glm4vForConditionalGeneration.from_pretrained(
        str(model_dir), dtype=torch.bfloat16, attn_implementation="eager").eval()
    assert m16.dtype == torch.bfloat16
    cases = []
    eos = set(EOS_IDS)
    for name, msgs, images in MODEL_CASES:
        r = render(proc, msgs, None, True)
        inputs, grid = run_processor(proc, ref_dir, r, images)
        ids = inputs["input_ids"][0].tolist()
        L = len(ids)
        tensors = {}
        with torch.no_grad():
            pos, delta = m32.model.get_rope_index(
                inputs["input_ids"], inputs["mm_token_type_ids"],
                image_grid_thw=inputs.get("image_grid_thw"), attention_mask=inputs["attention_mask"])
            hooks = Hooks(m32)
            out = m32(**inputs, output_hidden_states=True)
            hooks.remove()
            hs = torch.stack(out.hidden_states)[:, 0].float()
            logits = out.logits[0].float()
            # hidden_states[-1] is the final-norm output (transformers ties it to last_hidden_state).
            assert torch.equal(hs[-1], m32.model.language_model.norm(hooks.out["last_layer_out"][None])[0])
            if images:
                tensors["pixel_values"] = inputs["pixel_values"].float()
                for k in ["vision_patch_conv", "vision_post_conv_norm", "vision_patch_embed",
                          "vision_block0_out", "vision_blocks_out", "vision_post_layernorm",
                          "vision_downsample", "vision_embeds"]:
                    tensors[k] = hooks.out[k]
                n_tok = sum(t * h * w // 4 for t, h, w in grid)
                assert tensors["vision_embeds"].shape == (n_tok, 256)
                # The spliced embeddings are exactly the merger output.
                mask = inputs["input_ids"][0] == SPECIAL_ID["<|image|>"]
                assert torch.equal(hs[0][mask], tensors["vision_embeds"])
            tensors["hidden_states"] = hs
            tensors["last_layer_out"] = hooks.out["last_layer_out"]
            tensors["logits"] = logits
            tensors["logits_last"] = logits[-1]
            g32 = m32.generate(**inputs, **GEN_KW, return_dict_in_generate=True, output_logits=True)
            greedy = g32.sequences[0, L:].tolist()
            step_logits = torch.stack([x[0].float() for x in g32.logits])
            log(f"  prefill-vs-generate step0 max diff {(step_logits[0] - logits[-1]).abs().max().item():.3g}")
            top2 = torch.topk(step_logits, 2, dim=-1).values
            margins = (top2[:, 0] - top2[:, 1]).tolist()
            raw_argmax = step_logits.argmax(-1).tolist()
            eos_suppressed = any(a != g and a in eos for a, g in zip(raw_argmax, greedy))
            assert all(a == g or a in eos for a, g in zip(raw_argmax, greedy))
            # BF16 run (the checkpoint dtype).
            out16 = m16(**inputs)
            tensors["logits_last_bf16"] = out16.logits[0, -1].float()
            g16 = m16.generate(**inputs, **GEN_KW)
            greedy16 = g16[0, L:].tolist()
        assert len(greedy) == 16 and len(greedy16) == 16
        text = tok.decode(greedy, skip_special_tokens=False)
        visible = sum(1 for g in greedy if g < BPE_VOCAB and tok.decode([g]).strip())
        save_tensors(mdir / f"{name}.safetensors", tensors)
        cases.append({
            "name": name,
            "messages": msgs,
            "enable_thinking": None,
            "rendered": r,
            "images": images,
            "input_ids": ids,
            "image_grid_thw": grid,
            "position_ids": pos[:, 0].tolist(),
            "rope_delta": int(delta.reshape(-1)[0]),
            "greedy_ids": greedy,
            "greedy_text": text,
            "greedy_margins": [round(m, 4) for m in margins],
            "greedy_eos_suppressed_by_min_new_tokens": eos_suppressed,
            "greedy_ids_bf16": greedy16,
            "tensors": f"model/{name}.safetensors",
        })
        log(f"model: {name}: L={L} grids {grid} rope_delta {int(delta.reshape(-1)[0])} greedy {greedy} "
            f"({visible}/16 visible) bf16 {'same' if greedy16 == greedy else greedy16} "
            f"min margin {min(margins):.3f} text {text!r}")
    write_json(ref_dir / "model_cases.json", {
        "dtype": "float32 (BF16 checkpoint loaded with dtype=torch.float32); *_bf16 from dtype=torch.bfloat16",
        "attn_implementation": "eager",
        "generate": GEN_KW,
        "cases": cases,
    })


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default tests/fixtures)")
    ap.add_argument("--allow-other-versions", action="store_true")
    args = ap.parse_args()

    ver = versions()
    log("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()))
    bad = {k: (ver[k], v) for k, v in PINNED.items() if ver[k] != v}
    if bad:
        msg = "; ".join(f"{k} is {a}, pinned {b}" for k, (a, b) in bad.items())
        if not args.allow_other_versions:
            sys.exit(f"error: {msg} (see tools/requirements-fixtures.txt, or pass --allow-other-versions)")
        log(f"WARNING: {msg}")

    torch.set_num_threads(1)  # reductions in a fixed order: reproducible on any machine size
    torch.use_deterministic_algorithms(True)

    out = args.out.resolve()
    model_dir = out / "tiny-glm4v"
    ref_dir = out / "ref"
    for d in (model_dir, ref_dir):
        if d.exists():
            shutil.rmtree(d)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    corpus, n_params = write_model_folder(model_dir)
    proc, ip, tok = load_processor(model_dir)
    ref_dir.mkdir(parents=True)
    img_names = make_images(ref_dir / "images")
    preprocess_cases(ref_dir, img_names, ip)
    tokenizer_cases(ref_dir, tok)
    chat_cases(ref_dir, proc, tok)
    model_cases(ref_dir, model_dir, proc, tok)

    write_json(out / "VERSIONS.json", {
        "generator": "tools/make_fixtures.py",
        "versions": ver,
        "image_processor_backend": "pil",
        "image_processor_class": "Glm46VImageProcessorPil",
        "torch_num_threads": 1,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "chat_template_sha256": CHAT_TEMPLATE_SHA256,
        "tokenizer_corpus": corpus,
        "model_parameters": n_params,
        "special_token_ids": SPECIAL_ID,
    })

    # Plain 0644 files (save_pretrained writes shards 0600), 0755 folders.
    total = 0
    for root, dirs, files in os.walk(out):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            p = os.path.join(root, f)
            os.chmod(p, 0o644)
            total += os.path.getsize(p)
    log(f"done in {time.time() - t0:.1f} s; {out}: {total} bytes")
    if total >= 20_000_000:
        sys.exit(f"error: fixtures are {total} bytes, budget is 20 MB")


if __name__ == "__main__":
    main()
