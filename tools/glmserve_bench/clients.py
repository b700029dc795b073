"""Streaming clients: one request in, one Result out.

SSE: POST /v1/chat/completions with "stream": true and
stream_options.include_usage, the image as a data URL (any
OpenAI-compatible server). WebSocket: an ask on glmserve's /v1/ws with the
image as a binary frame (docs/api.md). Times are time.perf_counter()
seconds; the clock starts just before the request's first byte is sent."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any, Optional

import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection, connect

from .workload import Request


@dataclasses.dataclass
class Params:
    """What every request carries besides its messages."""
    max_tokens: int
    temperature: float
    top_p: Optional[float]
    ignore_eos: bool
    model: Optional[str]
    api_key: Optional[str]
    timeout: float

    def body(self, req: Request) -> dict[str, Any]:
        b: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                             "seed": req.seed}
        if self.top_p is not None:
            b["top_p"] = self.top_p
        if self.ignore_eos:
            b["ignore_eos"] = True
        if self.model:
            b["model"] = self.model
        return b


@dataclasses.dataclass
class Result:
    index: int
    ok: bool = False
    error: str = ""
    start: float = 0.0  # send time
    first: float = 0.0  # first non-empty text
    end: float = 0.0  # last byte of the answer
    chunk_times: list[float] = dataclasses.field(default_factory=list)  # non-empty deltas
    usage_tokens: Optional[int] = None  # usage.completion_tokens
    prompt_tokens: Optional[int] = None
    finish_reason: str = ""
    image: str = ""  # "WxH"
    server_timings: Optional[dict[str, Any]] = None  # the WebSocket's done.timings (ms)

    @property
    def chunks(self) -> int:
        return len(self.chunk_times)

    @property
    def tokens(self) -> int:
        """Output tokens: the usage when the server sent one, else the chunks."""
        return self.usage_tokens if self.usage_tokens is not None else self.chunks


def _text_of(delta: dict[str, Any]) -> str:
    return (delta.get("content") or "") + (delta.get("reasoning_content") or "") + \
        (delta.get("reasoning") or "")


def _headers(p: Params) -> dict[str, str]:
    return {"Authorization": f"Bearer {p.api_key}"} if p.api_key else {}


async def sse_request(session: aiohttp.ClientSession, url: str, p: Params, req: Request) -> Result:
    r = Result(req.index, image=f"{req.image.width}x{req.image.height}")
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": req.image.data_url()}},
        {"type": "text", "text": req.question}]}],
        "stream": True, "stream_options": {"include_usage": True}, **p.body(req)}
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **_headers(p)}
    done = False
    try:
        r.start = time.perf_counter()
        async with session.post(url, data=payload, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=p.timeout)) as resp:
            if resp.status != 200:
                text = (await resp.text())[:300]
                r.error = f"HTTP {resp.status}: {text}"
                return r
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if "error" in obj:
                    err = obj["error"]
                    r.error = f"stream error: {err.get('message', err) if isinstance(err, dict) else err}"
                    continue
                now = time.perf_counter()
                for ch in obj.get("choices") or []:
                    if _text_of(ch.get("delta") or {}):
                        if not r.chunk_times:
                            r.first = now
                        r.chunk_times.append(now)
                    if ch.get("finish_reason"):
                        r.finish_reason = ch["finish_reason"]
                usage = obj.get("usage")
                if usage:
                    r.usage_tokens = usage.get("completion_tokens")
                    r.prompt_tokens = usage.get("prompt_tokens")
        r.end = time.perf_counter()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        r.error = f"{type(e).__name__}: {e}"[:300]
        return r
    if not r.error and not done:
        r.error = "stream ended without [DONE]"
    if not r.error and not r.chunk_times:
        r.error = "no output text"
    r.ok = not r.error
    return r


class WsPool:
    """Open sockets to /v1/ws, one ask in flight per socket at a time (so
    a socket stands for one user); a request takes an idle socket or
    opens a new one, and gives it back when its ask has ended."""

    def __init__(self, url: str, p: Params):
        self.url = url
        self.p = p
        self.idle: list[ClientConnection] = []
        self.all: list[ClientConnection] = []

    async def get(self) -> ClientConnection:
        while self.idle:
            ws = self.idle.pop()
            if ws.state == websockets.protocol.State.OPEN:
                return ws
        ws = await connect(self.url, additional_headers=_headers(self.p), max_size=None,
                           compression=None, open_timeout=self.p.timeout)
        self.all.append(ws)
        return ws

    def put(self, ws: ClientConnection) -> None:
        self.idle.append(ws)

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.all), return_exceptions=True)


async def ws_request(pool: WsPool, p: Params, req: Request) -> Result:
    r = Result(req.index, image=f"{req.image.width}x{req.image.height}")
    rid = f"r{req.index}"
    ask = {"type": "ask", "id": rid, "images": 1, "messages": [{"role": "user", "content": [
        {"type": "image_ref", "index": 0}, {"type": "text", "text": req.question}]}],
        **p.body(req)}
    ws = None
    try:
        ws = await pool.get()
        r.start = time.perf_counter()
        await ws.send(json.dumps(ask))
        await ws.send(req.image.data)
        async with asyncio.timeout(p.timeout):
            while True:
                msg = json.loads(await ws.recv())
                now = time.perf_counter()
                if msg.get("id") != rid:
                    continue
                kind = msg.get("type")
                if kind == "delta":
                    if _text_of(msg):
                        if not r.chunk_times:
                            r.first = now
                        r.chunk_times.append(now)
                elif kind == "done":
                    r.end = now
                    r.finish_reason = msg.get("finish_reason", "")
                    usage = msg.get("usage") or {}
                    r.usage_tokens = usage.get("completion_tokens")
                    r.prompt_tokens = usage.get("prompt_tokens")
                    r.server_timings = msg.get("timings")
                    break
                elif kind == "error":
                    r.error = f"HTTP {msg.get('status')}: {msg.get('code')}: {msg.get('message')}"
                    break
        pool.put(ws)
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException, ValueError) as e:
        r.error = f"{type(e).__name__}: {e}"[:300]
        if ws is not None:
            await ws.close()
        return r
    if not r.error and not r.chunk_times:
        r.error = "no output text"
    r.ok = not r.error
    return r
