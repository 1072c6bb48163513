"""Load against the real server: `unixcxr serve` in its own process on loopback (tiny random model,
default limits), 200 requests sent at once (reports and generations, 10% malicious: decompression
bombs, huge and non-finite numbers, garbage bodies, a text file as an image) while /api/health is
polled. Every innocent request is answered 200 with the pipeline's own result, or 503 with
Retry-After; no request at all is answered 500; every malicious one is a 4xx (or, like anyone
else's, 503 when the queue is full).

Two bounds the issue sets: /api/health p99 under 1 s during the run (the event loop never waits on
decoding: a healthy run measures tens of milliseconds, so the bound is generous for a busy 2-core
host; a server decoding on the loop took 21 s in the issue's reproducer), and the server's peak
RSS at most 500 MiB above its RSS after warm-up. The figures are printed (pytest -s shows them) and
recorded in docs/serving.md."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from test_cli_bad_inputs import png_header
from test_serve import free_port, png_bytes, xray
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder

pytestmark = pytest.mark.slow
REQUESTS, MALICIOUS_EVERY = 200, 10  # 10% malicious
TOKENS, STEPS, REPORT = 8, 2, "FINDINGS: Small left pleural effusion."
STARTUP_S, HEALTH_EVERY_S = 240, 0.05
HEALTH_P99_S, RSS_GROWTH_MIB = 1.0, 500  # the acceptance bounds
MAX_RETRIES = 20
LARGE, LARGE_SIDE, LARGE_AT = 5, 4000, 5  # innocent 16 MP films (a 43 cm detector at 107 um): slow to decode
MIB = 1024 * 1024


def rss(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process in bytes (VmHWM: its peak so far), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return write_demo_model_folder(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def served(model_folder, tmp_path_factory):
    port, log = free_port(), tmp_path_factory.mktemp("log") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "unixcxr", "serve", "--model", str(model_folder),
                                    "--port", str(port)], stdout=out, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, f"server exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"server did not answer in {STARTUP_S} s: {log.read_text()}"
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url, process, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def malicious(i: int) -> dict:
    """The request kwargs of the i-th malicious request (a rotation of ten kinds)."""
    b64 = base64.b64encode(png_bytes(xray(0))).decode()
    kinds = [
        dict(url="/api/report", files={"image": ("bomb.png", png_header(13_000, 13_000))}),
        dict(url="/api/report", files={"image": ("huge.png", png_header(20_000, 20_000))}),
        dict(url="/api/generate", content=b'{"report": "FINDINGS: x", "seed": 1e400}'),
        dict(url="/api/generate", json={"report": REPORT, "steps": 2, "seed": 2**70}),
        dict(url="/api/report", content=b'{"image": "' + b64.encode() + b'", "max_new_tokens": 1e400}'),
        dict(url="/api/generate", content=os.urandom(2000)),
        dict(url="/api/report", content=b"garbage", headers={"content-type": "multipart/form-data"}),
        dict(url="/api/report", files={"image": ("passwd", b"root:x:0:0:root:/root:/bin/bash\n" * 20)}),
        dict(url="/api/generate", json={"report": REPORT, "cfg_text": float("1e30"), "steps": 2}),
        dict(url="/api/report", files={"image": ("cut.png", png_bytes(xray(1))[:80])}),
    ]
    request = kinds[i % len(kinds)]
    if "content" in request and "headers" not in request:
        request["headers"] = {"content-type": "application/json"}
    return request


async def send_all(url: str, requests: list[dict]) -> list[tuple[int, httpx.Response]]:
    """(first status, final answer) of each request, all sent at once; a 503 is retried after its
    Retry-After, as a well-behaved client does (up to MAX_RETRIES times)."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def one(request: dict) -> tuple[int, httpx.Response]:
            request = dict(request)
            path = request.pop("url")
            answer = first = await client.post(path, **request)
            for _ in range(MAX_RETRIES):
                if answer.status_code != 503 or "retry-after" not in answer.headers:
                    break
                await asyncio.sleep(float(answer.headers["retry-after"]))
                answer = await client.post(path, **request)
            return first.status_code, answer

        return await asyncio.gather(*(one(r) for r in requests))


def test_200_mixed_requests_with_10_percent_malicious(served, model_folder):
    url, process, _ = served
    pipe = UniXPipeline.from_pretrained(model_folder)
    images = [xray(20 + i) for i in range(3)]
    expected_reports = [pipe.report(img, max_new_tokens=TOKENS)[0] for img in images]
    expected_images = {s: np.asarray(pipe.generate(REPORT, steps=STEPS, seed=s)[0]) for s in range(3)}
    large = png_bytes(np.tile(np.arange(LARGE_SIDE, dtype=np.uint8), (LARGE_SIDE, 1)))  # decoding takes a while
    expected_large = pipe.report(Image.open(io.BytesIO(large)).convert("L"), max_new_tokens=TOKENS)[0]
    requests, innocent = [], []
    for i in range(REQUESTS):
        if i % MALICIOUS_EVERY == MALICIOUS_EVERY - 1:
            requests.append(malicious(i // MALICIOUS_EVERY))
            innocent.append(None)
        elif i % (REQUESTS // LARGE) == LARGE_AT:
            requests.append(dict(url="/api/report", files={"image": ("film.png", large)},
                                 data={"max_new_tokens": str(TOKENS)}))
            innocent.append(("large", 0))
        elif i % 3 == 2:
            requests.append(dict(url="/api/generate", json={"report": REPORT, "steps": STEPS, "seed": i % 3}))
            innocent.append(("image", i % 3))
        else:
            requests.append(dict(url="/api/report", files={"image": ("x.png", png_bytes(images[i % 3]))},
                                 data={"max_new_tokens": str(TOKENS)}))
            innocent.append(("report", i % 3))
    asyncio.run(send_all(url, requests[:2]))  # warm-up: both paths allocated once
    baseline = rss(process.pid)

    health, done = [], threading.Event()

    def poll():
        with httpx.Client(base_url=url, timeout=30) as client:
            while not done.is_set():
                start = time.perf_counter()
                assert client.get("/api/health").status_code == 200
                health.append(time.perf_counter() - start)
                done.wait(HEALTH_EVERY_S)

    poller = threading.Thread(target=poll)
    poller.start()
    start = time.perf_counter()
    try:
        answers = asyncio.run(send_all(url, requests))
    finally:
        done.set()
        poller.join()
    wall = time.perf_counter() - start
    growth = (rss(process.pid, "VmHWM") - baseline) / MIB

    firsts = [first for first, _ in answers]
    answers = [answer for _, answer in answers]
    statuses = [a.status_code for a in answers]
    wrong = []
    for answer, kind in zip(answers, innocent):
        if kind is None:
            continue
        if answer.status_code != 200:
            wrong.append(f"{kind}: {answer.status_code} {answer.text[:200]}")
        elif kind[0] == "report":
            wrong += [] if answer.json()["report"] == expected_reports[kind[1]] else [f"{kind}: other report"]
        elif kind[0] == "large":
            wrong += [] if answer.json()["report"] == expected_large else [f"{kind}: other report"]
        else:
            png = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.json()["image"]))))
            wrong += [] if np.array_equal(png, expected_images[kind[1]]) else [f"{kind}: other image"]
    bad = [(s, a.text[:120]) for s, a, k in zip(statuses, answers, innocent) if k is None and not 400 <= s < 500]
    p50, p99 = np.percentile(health, 50), np.percentile(health, 99)
    busy = sum(1 for s in firsts if s == 503)
    refused = sum(1 for s, k in zip(statuses, innocent) if k is None and 400 <= s < 500)
    print(f"\nload: {REQUESTS} requests ({REQUESTS // MALICIOUS_EVERY} malicious) at once in {wall:.1f} s; "
          f"{busy} first answered 503 (retried after Retry-After); innocent {statuses.count(200)} x 200, "
          f"({LARGE} of them {LARGE_SIDE} x {LARGE_SIDE} films), malicious {refused} x 4xx; answered 500: "
          f"{(firsts + statuses).count(500)}; /api/health over {len(health)} polls: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {max(health) * 1000:.0f} ms; peak RSS growth {growth:.0f} MiB over "
          f"{baseline / MIB:.0f} MiB")
    assert (firsts + statuses).count(500) == 0
    assert not wrong, wrong[:5]
    assert not bad, bad[:5]
    assert p99 < HEALTH_P99_S
    assert growth < RSS_GROWTH_MIB
