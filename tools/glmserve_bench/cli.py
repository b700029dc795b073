"""glmserve-bench: load an OpenAI-compatible chat server (or glmserve's
WebSocket) with image + question requests and report latency, throughput
and goodput. Run with --help for the options; the module docstrings of
workload.py, clients.py and stats.py say exactly what is sent and measured."""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import time
from typing import Any, Optional

import aiohttp
import numpy as np

from . import clients, report, stats, workload

DEFAULT_SIZES = "112x112,224x168,336x336,448x336"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="glmserve-bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="examples:\n"
               "  glmserve-bench --base-url http://127.0.0.1:8000 --concurrency 1,4,16 "
               "--num-requests 64 --json out.json --plot out.png\n"
               "  glmserve-bench --base-url http://127.0.0.1:8000 --mode ws --rate 2 --duration 60\n"
               "  glmserve-bench --compare glmserve.json ref.json --labels glmserve,reference "
               "--plot chart.png")
    p.add_argument("--base-url", default="http://127.0.0.1:8000",
                   help="server root; requests go to BASE/v1/chat/completions or BASE/v1/ws")
    p.add_argument("--mode", choices=("sse", "ws"), default="sse",
                   help="sse: OpenAI chat completions with stream=true (any server); "
                        "ws: glmserve's /v1/ws with the image as a binary frame")
    p.add_argument("--model", help="the model field (default: the first of GET /v1/models, "
                                    "omitted if that fails)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", default=None,
                      help="requests in flight, or a comma list for a sweep (default 1)")
    load.add_argument("--rate", default=None,
                      help="Poisson arrival rate in requests/s, or a comma list for a sweep")
    p.add_argument("--num-requests", type=int, default=64,
                   help="requests per level (default 64); with --concurrency N, 0 means 4*N")
    p.add_argument("--duration", type=float,
                   help="stop sending new requests after this many seconds per level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float)
    p.add_argument("--ignore-eos", action="store_true",
                   help="send ignore_eos: true (glmserve, vLLM), so every answer has max_tokens")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the workload (images, questions, arrivals) and of each "
                        "request's sampling seed (default 0)")
    p.add_argument("--image-sizes", default=DEFAULT_SIZES,
                   help=f"WxH list drawn from per request (default {DEFAULT_SIZES})")
    p.add_argument("--image-format", choices=("jpeg", "png"), default=None,
                   help="jpeg when Pillow is importable, else png")
    p.add_argument("--images", help="a folder of .png/.jpg files to use instead of drawn images")
    p.add_argument("--first-request", type=int, default=0,
                   help="index of the first request in the seed's workload (default 0); "
                        "separate runs that must not share images start at different ones")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip the warm-up: one request per image size (or per --images "
                        "file), one at a time before the first level, not measured")
    p.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    p.add_argument("--slo-ttft-ms", type=float, help="goodput objective: TTFT at most this")
    p.add_argument("--slo-itl-ms", type=float,
                   help="goodput objective: time per output token (TPOT) at most this")
    p.add_argument("--metrics-url",
                   help="Prometheus text to scrape before and after each level for the "
                        "gateway's dispatch and relay histograms (default BASE/metrics)")
    p.add_argument("--no-metrics", action="store_true", help="do not scrape /metrics")
    p.add_argument("--label", default=None, help="a name for this run in JSON and charts")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--plot", help="write a PNG chart of latency and throughput against load")
    p.add_argument("--compare", nargs=2, metavar="JSON[,JSON...]",
                   help="no run: print two earlier results side by side with the ratios "
                        "first/second (and --plot both); a comma list joins the levels of "
                        "several files into one side")
    p.add_argument("--labels", help="with --compare: two comma-separated names")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def levels_of(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.rate is not None:
        return [{"rate": float(x)} for x in args.rate.split(",")]
    return [{"concurrency": int(x)} for x in (args.concurrency or "1").split(",")]


async def fetch_text(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Optional[str]:
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as r:
            return await r.text() if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def discover_model(session: aiohttp.ClientSession, base: str,
                         headers: dict[str, str]) -> Optional[str]:
    text = await fetch_text(session, base + "/v1/models", headers)
    try:
        return json.loads(text)["data"][0]["id"] if text else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class Runner:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession, params: clients.Params):
        self.args = args
        self.session = session
        self.params = params
        self.base = args.base_url.rstrip("/")
        self.chat_url = self.base + "/v1/chat/completions"
        ws_base = "ws" + self.base[4:] if self.base.startswith("http") else self.base
        self.pool = clients.WsPool(ws_base + "/v1/ws", params) if args.mode == "ws" else None

    async def one(self, req: workload.Request) -> clients.Result:
        if self.pool is not None:
            return await clients.ws_request(self.pool, self.params, req)
        return await clients.sse_request(self.session, self.chat_url, self.params, req)

    async def level(self, load: dict[str, Any], reqs: list[workload.Request],
                    rng: np.random.Generator) -> list[clients.Result]:
        results: list[clients.Result] = []
        bar = None if self.args.quiet else report.Progress(len(reqs), report.load_name(load))
        t0 = time.perf_counter()
        stop_at = t0 + self.args.duration if self.args.duration else None

        async def run(req: workload.Request) -> None:
            r = await self.one(req)
            results.append(r)
            if bar:
                bar.update(r.ok)

        if "concurrency" in load:
            it = iter(reqs)

            async def slot() -> None:
                for req in it:
                    if stop_at and time.perf_counter() >= stop_at:
                        break
                    await run(req)

            await asyncio.gather(*(slot() for _ in range(load["concurrency"])))
        else:
            gaps = rng.exponential(1.0 / load["rate"], len(reqs))
            tasks = []
            at = t0
            for req, gap in zip(reqs, gaps):
                at += gap
                if stop_at and at >= stop_at:
                    break
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(run(req)))
            await asyncio.gather(*tasks)
        if bar and bar.done < bar.total:  # stopped by --duration
            bar.total = bar.done
            bar.draw()
        return sorted(results, key=lambda r: r.index)


def result_record(r: clients.Result) -> dict[str, Any]:
    rec: dict[str, Any] = {"index": r.index, "ok": r.ok, "image": r.image}
    if r.ok:
        rec.update({"ttft_ms": 1e3 * (r.first - r.start), "e2e_ms": 1e3 * (r.end - r.start),
                    "start_s": r.start, "usage_tokens": r.usage_tokens, "chunks": r.chunks,
                    "prompt_tokens": r.prompt_tokens, "finish_reason": r.finish_reason})
        if r.server_timings:
            rec["server_timings_ms"] = r.server_timings
    else:
        rec["error"] = r.error
    return rec


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = args.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as session:
        model = args.model or await discover_model(session, base, headers)
        params = clients.Params(args.max_tokens, args.temperature, args.top_p, args.ignore_eos,
                                model, args.api_key, args.timeout)
        runner = Runner(args, session, params)
        fmt = args.image_format or workload.default_format()
        folder = workload.load_dir(pathlib.Path(args.images)) if args.images else None
        sizes = workload.parse_sizes(args.image_sizes)
        metrics_url = None if args.no_metrics else (args.metrics_url or base + "/metrics")
        doc: dict[str, Any] = {
            "tool": "glmserve-bench", "format": 1, "label": args.label or args.mode,
            "base_url": base, "mode": args.mode, "model": model,
            "config": {k: v for k, v in vars(args).items() if k not in ("api_key", "compare")},
            "image_format": None if folder else fmt,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "levels": []}
        first = args.first_request
        if not args.no_warmup:
            for req in workload.warmup(args.seed, sizes, fmt, folder):
                r = await runner.one(req)
                if not r.ok:
                    raise SystemExit(f"glmserve-bench: warm-up request failed: {r.error}")
        for n_level, load in enumerate(levels_of(args)):
            n = args.num_requests or 4 * load.get("concurrency", 1)
            reqs = workload.build(n, first, args.seed, sizes, fmt, folder)
            first += n
            before = await fetch_text(session, metrics_url, headers) if metrics_url else None
            results = await runner.level(load, reqs, np.random.default_rng([args.seed, 1, n_level]))
            after = await fetch_text(session, metrics_url, headers) if metrics_url else None
            level = {"load": load,
                     "summary": stats.summarize(results, args.slo_ttft_ms, args.slo_itl_ms),
                     "gateway": stats.gateway_share(before, after) if before and after else None,
                     "requests": [result_record(r) for r in results]}
            doc["levels"].append(level)
            report.print_level(level)
        if runner.pool is not None:
            await runner.pool.close()
    return doc


def join(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first document with the levels of all of them."""
    return {**docs[0], "levels": [lv for d in docs for lv in d["levels"]]}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.compare:
        docs = [join([json.loads(pathlib.Path(f).read_text()) for f in side.split(",")])
                for side in args.compare]
        labels = args.labels.split(",") if args.labels else [d["label"] for d in docs]
        print(report.compare_table(docs, labels))
        for doc, label in zip(docs, labels):
            table = report.gateway_table(doc)
            if table:
                print(f"\nThe gateway's share ({label}):\n\n{table}")
        if args.plot:
            report.plot(docs, labels, args.plot)
        return 0
    doc = asyncio.run(bench(args))
    print()
    print(report.summary_table(doc))
    table = report.gateway_table(doc)
    if table:
        print(f"\nThe gateway's share:\n\n{table}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if args.plot:
        report.plot([doc], [doc["label"]], args.plot)
    failed = sum(lv["summary"]["failed"] for lv in doc["levels"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
