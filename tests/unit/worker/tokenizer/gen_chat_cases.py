#!/usr/bin/env python3
"""Reference renderings of the GLM-4.6V chat template beyond ref/chat_cases.json:
tools, tool calls, tool responses, inline <think> splitting, Unicode strip,
/nothink edge cases. Renders each case with transformers' own
apply_chat_template over tests/fixtures/tiny-glm4v and writes
chat_template_cases.json beside this script (committed; the C test reads it).

Run with the fixtures venv (docs/fixtures.md):
    build/fixtures-venv/bin/python tests/unit/worker/tokenizer/gen_chat_cases.py
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", ".."))
MODEL = os.path.join(ROOT, "tests", "fixtures", "tiny-glm4v")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city — «quoted» \"x\"\n\ttab",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "城市"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "scale": {"type": "number", "default": 0.5, "tiny": 1e-07, "big": 1e+16,
                      "exact": 123456789.0, "neg": -0.0, "third": 0.3333333333333333},
            "flags": {"type": "array", "items": [True, False, None]}},
            "required": ["city"]}}},
    {"type": "function", "function": {"name": "noop", "parameters": {}}},
]

CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {
    "city": "Paris", "days": 3, "scale": 2.5, "opts": {"unit": "°C", "list": [1, "two", None]},
    "ok": True, "none": None, "empty": ""}}}

CASES = [
    ("tools + call + two responses + answer", dict(
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "content": "{\"temp\": 21}"},
                  {"role": "tool", "content": "second"},
                  {"role": "assistant", "content": "It is 21 °C."},
                  {"role": "user", "content": "Thanks"}],
        tools=TOOLS, add_generation_prompt=True)),
    ("tools, thinking off", dict(
        messages=[{"role": "user", "content": "hi"}], tools=TOOLS[1:],
        add_generation_prompt=True, enable_thinking=False)),
    ("call without function wrapper, two calls, content kept", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "Let me check.",
                   "tool_calls": [{"name": "noop", "arguments": {}},
                                  {"function": {"name": "get_weather",
                                                "arguments": {"city": "Oslo"}}}]}],
        add_generation_prompt=False)),
    ("tool response list content", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "tool", "content": [
                      {"type": "text", "text": "T1 "}, {"type": "IMAGE"}, {"type": "image_url"},
                      {"type": "Video"}, {"type": "json", "value": {"a": [1, 2]}},
                      "plain", {"output": "O"}, {"type": "text", "text": " end"}]},
                  {"role": "tool", "content": "after list"}],
        add_generation_prompt=True)),
    ("tool message first", dict(
        messages=[{"role": "tool", "content": "r0"}, {"role": "user", "content": "q"}],
        add_generation_prompt=True)),
    ("tool content missing", dict(
        messages=[{"role": "user", "content": "q"}, {"role": "tool", "content": None}],
        add_generation_prompt=False)),
    ("inline think after last user", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "<think>\n\nR1 part\n\n</think>\n\n  A1  "}],
        add_generation_prompt=False)),
    ("inline think before last user dropped", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "pre<think>R</think>mid</think>\nA"},
                  {"role": "user", "content": "q2"}],
        add_generation_prompt=True)),
    ("reasoning_content wins over inline think", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "<think>X</think>A", "reasoning_content": " R "}],
        add_generation_prompt=False)),
    ("empty reasoning_content string", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "A", "reasoning_content": ""}],
        add_generation_prompt=False)),
    ("thinking alias", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "A", "thinking": "T"}],
        add_generation_prompt=False)),
    ("unicode strip", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": "\u3000\u00a0 A1\u2003\x85\n\x1c",
                   "reasoning_content": "\u2028 R \u205f\t"}],
        add_generation_prompt=False)),
    ("whitespace-only content", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": " \n\t"}],
        add_generation_prompt=True)),
    ("nothink already present", dict(
        messages=[{"role": "user", "content": "a question/nothink"},
                  {"role": "user", "content": [{"type": "text", "text": "x/nothink"},
                                               {"type": "image"}]}],
        add_generation_prompt=True, enable_thinking=False)),
    ("thinking explicitly on", dict(
        messages=[{"role": "user", "content": "q"}],
        add_generation_prompt=True, enable_thinking=True)),
    ("system list content with image, video in user", dict(
        messages=[{"role": "system", "content": [{"type": "text", "text": "S "}, {"type": "image"},
                                                 "str"]},
                  {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "V?"},
                                               {"type": "image", "image": "x.png"}]}],
        add_generation_prompt=True)),
    ("user content missing", dict(
        messages=[{"role": "user", "content": None}], add_generation_prompt=True,
        enable_thinking=False)),
    ("assistant list content", dict(
        messages=[{"role": "user", "content": "q"},
                  {"role": "assistant", "content": [{"type": "text", "text": " A"},
                                                    {"type": "text", "text": "B "}]}],
        add_generation_prompt=False)),
    ("special characters pass through", dict(
        messages=[{"role": "user", "content": "{{ x }} {% y %} <|user|> \\n \u0000 end"}],
        add_generation_prompt=True)),
]


def main():
    import transformers
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(MODEL)
    out = []
    for name, kw in CASES:
        kw = dict(kw)
        rendered = tok.apply_chat_template(kw["messages"], tools=kw.get("tools"), tokenize=False,
                                           add_generation_prompt=kw["add_generation_prompt"],
                                           **({"enable_thinking": kw["enable_thinking"]}
                                              if "enable_thinking" in kw else {}))
        out.append({"name": name, "messages": kw["messages"], "tools": kw.get("tools"),
                    "enable_thinking": kw.get("enable_thinking"),
                    "add_generation_prompt": kw["add_generation_prompt"],
                    "rendered": rendered,
                    "n_images": rendered.count("<|image|>"),
                    "n_videos": rendered.count("<|video|>")})
    doc = {"generator": "tests/unit/worker/tokenizer/gen_chat_cases.py",
           "transformers": transformers.__version__, "cases": out}
    path = os.path.join(HERE, "chat_template_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(out), path), file=sys.stderr)


if __name__ == "__main__":
    main()
