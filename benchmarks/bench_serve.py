"""Serving throughput: the HTTP API under concurrent load, with request batching off (max_batch 1)
and on (max_batch 8), for reports and for images. Real uvicorn on loopback, real HTTP clients,
a random-weight model of a CPU preset (the work per request is what matters, not its quality).

    python -m benchmarks.bench_serve [--preset small] [--requests 48] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.common import machine, print_table
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.app import BackgroundServer, build_app
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.serve.service import ServeLimits

NEW_TOKENS, STEPS = 32, 10


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (256, 224), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _load(url: str, kind: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """-> (requests per second, sorted latencies in seconds)."""
    uploads = [_png(i) for i in range(8)]

    def one(i: int, client: httpx.Client) -> float:
        start = time.perf_counter()
        if kind == "report":
            answer = client.post("/api/report", json={"image": base64.b64encode(uploads[i % 8]).decode(),
                                                      "max_new_tokens": NEW_TOKENS})
        else:
            answer = client.post("/api/generate", json={"report": "FINDINGS: Small left pleural effusion.",
                                                        "steps": STEPS, "seed": i})
        answer.raise_for_status()
        return time.perf_counter() - start

    with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        latencies = list(pool.map(lambda i: one(i, client), range(requests)))
        elapsed = time.perf_counter() - start
    return requests / elapsed, sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pipe = UniXPipeline.from_pretrained(write_demo_model_folder(Path(tmp) / "model", args.preset))
    rows = []
    rates = {}
    for kind in ("report", "generate"):
        for max_batch in (1, 8):
            limits = dataclasses.replace(ServeLimits(), max_batch=max_batch)
            with BackgroundServer(build_app(pipe, limits)) as server:
                _load(server.url, kind, 2, 1)  # warm-up
                rate, lat = _load(server.url, kind, args.requests, args.concurrency)
            rates[kind, max_batch] = rate
            p50, p95 = lat[len(lat) // 2], lat[int(len(lat) * 0.95) - 1]
            rows.append((f"{kind:8s} max_batch {max_batch}", f"{rate:6.2f} req/s   p50 {p50 * 1000:7.0f} ms   "
                                                             f"p95 {p95 * 1000:7.0f} ms"))
    for kind in ("report", "generate"):
        rows.append((f"{kind:8s} batching speed-up", f"{rates[kind, 8] / rates[kind, 1]:.2f}x"))
    print_table(f"bench_serve: preset {args.preset}, {args.requests} requests at concurrency {args.concurrency}, "
                f"{NEW_TOKENS} new tokens / {STEPS} sampling steps ({machine()})", rows)


if __name__ == "__main__":
    main()
