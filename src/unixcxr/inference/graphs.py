"""CUDA-graph capture shared by the report decoder and the image sampler: a step whose inputs live in
fixed buffers is warmed up, captured once and replayed (one launch instead of thousands)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def can_capture(device: torch.device) -> bool:
    """Whether steps on `device` are worth capturing at all (CUDA only; a capture may still fail)."""
    return device.type == "cuda"


def capture(fn: Callable[[], torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Two warm-up calls of fn on a side stream (allocator, kernel choice), then one captured call:
    returns the graph and the output buffer each replay overwrites. The warm-ups run fn for real, so
    fn must write only what its next real call rewrites (scratch)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def graphed_or_eager(build: Callable[[], T], eager: T, what: str) -> T:
    """build() (a graphed step), or the eager step when capture is unsupported here: same numbers,
    only slower, with a warning that says so."""
    try:
        return build()
    except RuntimeError as err:
        warnings.warn(f"CUDA graph capture failed ({err}); {what} without graphs", stacklevel=3)
        return eager
