"""Shared helpers for benchmarks: timing, a random-weight model, machine description."""

from __future__ import annotations

import platform
import time

import torch

from unixcxr.model.config import preset
from unixcxr.model.unix import UniX


def timed(fn, repeat: int = 2, warmup: int = 0) -> float:
    """Fastest wall time of fn() in seconds: on a shared machine noise only ever adds time, so the
    minimum over repeats is the most faithful estimate of the work itself."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def random_model(name: str, seed: int = 0, device: str = "cpu", dtype=torch.float32) -> UniX:
    """A model of the preset with non-trivial random weights (llm2vae too), in eval mode."""
    torch.manual_seed(seed)
    model = UniX(preset(name))
    with torch.no_grad():
        model.llm2vae.weight.normal_(0, 0.02)
    return model.to(device=device, dtype=dtype).eval()


def machine() -> str:
    return f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
