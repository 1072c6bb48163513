"""Continuous batching of reports against grouped batching, through the real server on loopback:
requests/s and p50 / p99 latency at 1 / 8 / 32 concurrent clients, each asking for its own report
length (8-64 new tokens, as real reports vary), both modes in one run, tiny and small presets
(random weights: the work per request is what matters).

Grouped: the model thread takes what is waiting and runs requests with equal settings as one batch
(the server before continuous batching; equal lengths are rare, so most run alone). Continuous:
requests join the running decode batch between tokens and leave when done.

    python -m benchmarks.bench_serve_continuous [--presets tiny small] [--clients 1 8 32]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.bench_serve import _png
from benchmarks.common import machine, print_table
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.app import BackgroundServer, build_app
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.serve.service import ServeLimits

LENGTHS = (8, 16, 24, 32, 40, 48, 56, 64)  # new tokens, request i asks for LENGTHS[i % 8]


def load(url: str, requests: int, clients: int) -> tuple[float, float, float]:
    """-> (requests/s, p50 s, p99 s) of `requests` report requests from `clients` concurrent clients."""
    uploads = [base64.b64encode(_png(i)).decode() for i in range(8)]

    def one(i: int, client: httpx.Client) -> float:
        start = time.perf_counter()
        answer = client.post("/api/report", json={"image": uploads[i % 8], "max_new_tokens": LENGTHS[i % 8]})
        answer.raise_for_status()
        return time.perf_counter() - start

    with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        latencies = sorted(pool.map(lambda i: one(i, client), range(requests)))
        elapsed = time.perf_counter() - start
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return requests / elapsed, latencies[len(latencies) // 2], p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch", type=int, default=8, help="rows decoding together (both modes)")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 1 and 8 clients")
    args = parser.parse_args()
    if args.quick:
        args.presets, args.clients = ["tiny"], [1, 8]

    rows = []
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            pipe = UniXPipeline.from_pretrained(write_demo_model_folder(Path(tmp) / "model", preset))
        limits = dataclasses.replace(ServeLimits(), max_batch=args.max_batch)
        for clients in args.clients:
            requests = max(16, 2 * clients)
            result = {}
            for name, continuous in (("grouped", False), ("continuous", True)):
                with BackgroundServer(build_app(pipe, limits, continuous=continuous)) as server:
                    load(server.url, 2, 1)  # warm-up
                    result[name] = load(server.url, requests, clients)
                rate, p50, p99 = result[name]
                rows.append((f"{preset:5s} {clients:2d} clients {name:10s}",
                             f"{rate:6.2f} req/s   p50 {p50 * 1000:7.0f} ms   p99 {p99 * 1000:7.0f} ms"))
            ratio = result["continuous"][0] / result["grouped"][0]
            tail = result["grouped"][2] / result["continuous"][2]
            rows.append((f"{preset:5s} {clients:2d} clients continuous / grouped",
                         f"{ratio:.2f}x req/s, p99 grouped / continuous {tail:.2f}x"))
    print_table(f"bench_serve_continuous: reports of 8-64 new tokens, max_batch {args.max_batch} ({machine()})", rows)


if __name__ == "__main__":
    main()
