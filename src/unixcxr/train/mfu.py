"""Model FLOPs utilisation: the FLOPs a step needs (the network's own estimate, or a count taken by
torch's FlopCounterMode) over step time and over the machine's peak. The peak is measured at
start-up by a square matmul micro-benchmark in the training dtype (fp32 on CPU, bf16 on GPU) unless
the recipe gives it, so MFU means the same thing on a laptop and on an H100."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

CPU_MATMUL_SIDE, GPU_MATMUL_SIDE = 1024, 8192
WARMUP_REPEATS, TIMED_REPEATS = 2, 8
FORWARD_BACKWARD = 3.0  # a training step costs about three forwards (the backward about twice one)
MIN_SECONDS = 1.0  # keep timing until this much has passed: on a shared CPU the best of many is the peak


def training_dtype(device: torch.device) -> torch.dtype:
    """bf16 autocast on GPU, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@torch.no_grad()
def measure_peak_flops(device: torch.device, dtype: torch.dtype | None = None, side: int | None = None,
                       min_seconds: float = MIN_SECONDS, repeats: int = TIMED_REPEATS) -> float:
    """FLOP/s of the best of several large matmuls: an achievable peak, not the datasheet's."""
    dtype = dtype or training_dtype(device)
    n = side or (GPU_MATMUL_SIDE if device.type == "cuda" else CPU_MATMUL_SIDE)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, i, began = float("inf"), 0, time.perf_counter()
    while i < WARMUP_REPEATS + repeats or time.perf_counter() - began < min_seconds:
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i >= WARMUP_REPEATS:
            best = min(best, time.perf_counter() - start)
        i += 1
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_training_flops(fn) -> float:
    """FLOPs of fn() (forward and backward) as counted by torch's FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def mfu(flops: float, seconds: float, peak_flops: float, world_size: int = 1) -> float:
    """Fraction of the machines' peak that `flops` done in `seconds` (by all ranks) represents."""
    return flops / max(seconds, 1e-12) / (peak_flops * world_size)


def with_image_flops(micros, per_image: float):
    """Fill in each micro-batch's FLOPs for stages that train on images (`micro.data.images`)."""
    for micro in micros:
        micro.flops = per_image * micro.data.images.shape[0]
        yield micro
