"""A reference chat server for comparison only: FastAPI + transformers on a
GLM-4.xV model folder, the usual Python serving stack. Never part of
glmserve, never installed by it.

What it does, as such servers usually do:
- POST /v1/chat/completions (OpenAI): messages with text and image_url
  parts (images as base64 data URLs only), stream true (SSE, with
  stream_options.include_usage) or false; max_tokens /
  max_completion_tokens, temperature, top_p, top_k, seed, ignore_eos
  (as min_new_tokens = max_new_tokens), chat_template_kwargs.
- GET /v1/models, GET /health.
- Batching: NONE. One generate at a time behind one lock
  (asyncio.Lock), each streaming through transformers'
  AsyncTextIteratorStreamer while model.generate runs in a thread. GLM's
  own web demo does the same (a TextIteratorStreamer and a thread per
  request). Requests wait for the lock in arrival order; image decoding and
  preprocessing (the processor) run before the lock in a worker thread, so
  the next request is ready when the lock frees.
- Text is streamed one SSE chunk per generated token (TokenStreamer below:
  AsyncTextIteratorStreamer releasing each token's text at once, except an
  incomplete UTF-8 sequence). The stock streamer holds text back until a
  word ends (--word-streaming), which with the random weights of a test
  model delays the first text by several tokens, a cost of the demo's
  streamer rather than of the serving stack. usage counts the generated ids.

Run: python server.py --model MODEL_DIR --port 8001 [--threads N] [--dtype float32]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import threading
import time
import uuid
from typing import Any, Optional

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from transformers import (AsyncTextIteratorStreamer, AutoImageProcessor, AutoProcessor,
                          Glm4vForConditionalGeneration)


class TokenStreamer(AsyncTextIteratorStreamer):
    """Releases the new text after every token (TextStreamer.put waits for
    the end of a word when the pending text holds punctuation)."""

    def put(self, value):
        if len(value.shape) > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\ufffd"):  # the rest of a UTF-8 sequence is still to come
            return
        self.on_finalized_text(text[self.print_len:])
        self.print_len = len(text)
        if text.endswith("\n"):
            self.token_cache, self.print_len = [], 0


class Model:
    def __init__(self, folder: str, dtype: str, threads: int, word_streaming: bool):
        torch.set_num_threads(threads)
        self.streamer = AsyncTextIteratorStreamer if word_streaming else TokenStreamer
        self.name = os.path.basename(os.path.normpath(folder))
        # The PIL image backend, as tools/make_fixtures.py uses (the
        # torchvision one resamples slightly differently).
        ip = AutoImageProcessor.from_pretrained(folder, backend="pil")
        self.processor = AutoProcessor.from_pretrained(folder, image_processor=ip)
        self.model = Glm4vForConditionalGeneration.from_pretrained(
            folder, dtype=getattr(torch, dtype)).eval()
        self.lock = asyncio.Lock()

    def prepare(self, body: dict[str, Any]) -> dict[str, Any]:
        """Messages -> model inputs (tokens, pixel values, grids): the chat
        template with an image placeholder per image part, then the
        processor over the text and the decoded images."""
        images: list[Image.Image] = []
        messages = []
        for m in body["messages"]:
            content = m.get("content")
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image_url":
                        url = part["image_url"]["url"]
                        if not url.startswith("data:"):
                            raise ValueError("only data: image URLs are supported")
                        raw = base64.b64decode(url.split(",", 1)[1])
                        images.append(Image.open(io.BytesIO(raw)).convert("RGB"))
                        parts.append({"type": "image"})
                    elif part.get("type") == "text":
                        parts.append({"type": "text", "text": part["text"]})
                content = parts
            messages.append({"role": m["role"], "content": content})
        kwargs = dict(body.get("chat_template_kwargs") or {})
        if "enable_thinking" in body:
            kwargs["enable_thinking"] = body["enable_thinking"]
        text = self.processor.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True, **kwargs)
        return dict(self.processor(text=[text], images=images or None, return_tensors="pt"))

    def generate_kwargs(self, body: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        max_new = int(body.get("max_completion_tokens") or body.get("max_tokens") or 1024)
        temperature = float(body.get("temperature", 1.0))
        kw: dict[str, Any] = {**inputs, "max_new_tokens": max_new}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature,
                      top_p=float(body.get("top_p", 1.0)), top_k=int(body.get("top_k", 0)) or None)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if body.get("ignore_eos"):
            kw["min_new_tokens"] = max_new
        return kw


def chunk(rid: str, created: int, model: str, delta: dict[str, Any],
          finish: Optional[str] = None) -> str:
    return "data: " + json.dumps({
        "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}) + "\n\n"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status)


def build_app(m: Model) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m.name, "object": "model",
                                            "owned_by": "reference"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
            inputs = await asyncio.to_thread(m.prepare, body)
            kw = m.generate_kwargs(body, inputs)
        except (ValueError, KeyError, TypeError) as e:
            return error(400, str(e))
        rid = "chatcmpl-" + uuid.uuid4().hex[:16]
        created = int(time.time())
        prompt_tokens = int(inputs["input_ids"].shape[1])
        seed = body.get("seed")

        async def run(on_text) -> tuple[int, str]:
            """One generate behind the lock; on_text(piece) per streamed
            piece. Returns (completion tokens, finish reason)."""
            async with m.lock:
                streamer = m.streamer(m.processor.tokenizer, skip_prompt=True,
                                                     skip_special_tokens=True)
                out: dict[str, Any] = {}

                def work():
                    try:
                        if seed is not None:
                            torch.manual_seed(int(seed))
                        with torch.inference_mode():
                            out["ids"] = m.model.generate(**kw, streamer=streamer)
                    except Exception as e:  # handed to the request, which answers with it
                        out["error"] = e
                        streamer.end()

                t = threading.Thread(target=work, daemon=True)
                t.start()
                async for piece in streamer:
                    if piece:
                        await on_text(piece)
                await asyncio.to_thread(t.join)
            if "error" in out:
                raise out["error"]
            n = int(out["ids"].shape[1]) - prompt_tokens
            return n, "length" if n >= kw["max_new_tokens"] else "stop"

        usage = lambda n: {"prompt_tokens": prompt_tokens, "completion_tokens": n,  # noqa: E731
                           "total_tokens": prompt_tokens + n}
        if not body.get("stream"):
            pieces: list[str] = []

            async def collect(piece: str) -> None:
                pieces.append(piece)

            n, finish = await run(collect)
            return {"id": rid, "object": "chat.completion", "created": created, "model": m.name,
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "".join(pieces)},
                                 "logprobs": None, "finish_reason": finish}],
                    "usage": usage(n)}

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events():
            queue: asyncio.Queue = asyncio.Queue()

            async def put(piece: str) -> None:
                await queue.put(chunk(rid, created, m.name, {"content": piece}))

            async def produce() -> None:
                try:
                    n, finish = await run(put)
                    await queue.put(chunk(rid, created, m.name, {}, finish))
                    if include_usage:
                        await queue.put("data: " + json.dumps({
                            "id": rid, "object": "chat.completion.chunk", "created": created,
                            "model": m.name, "choices": [], "usage": usage(n)}) + "\n\n")
                except Exception as e:
                    await queue.put("data: " + json.dumps({"error": {"message": str(e)}}) + "\n\n")
                await queue.put(None)

            yield chunk(rid, created, m.name, {"role": "assistant", "content": ""})
            task = asyncio.create_task(produce())
            try:
                while (item := await queue.get()) is not None:
                    yield item
                yield "data: [DONE]\n\n"
            finally:
                await task

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model folder (config.json, safetensors, ...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="weights' type in memory (float32: the fast one on most CPUs)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    p.add_argument("--word-streaming", action="store_true",
                   help="the stock streamer: text released at the end of each word")
    a = p.parse_args()
    app = build_app(Model(a.model, a.dtype, a.threads, a.word_streaming))
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
