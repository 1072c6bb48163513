"""Exponential moving average of the trainable weights. The EMA weights are what a run exports and
what inference loads (paper: decay 0.9999); frozen weights need no average, they never move."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

EMA_WARMUP_OFFSET = 10.0  # decay <= (1 + step) / (10 + step): the average forgets the random start


class EMA:
    def __init__(self, named_params: dict[str, nn.Parameter], decay: float, warmup: bool = False):
        self.params = named_params
        self.decay, self.warmup = decay, warmup
        self.shadow = {n: p.detach().clone().float() for n, p in named_params.items()}

    def decay_at(self, step: int) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + step) / (EMA_WARMUP_OFFSET + step))
        return self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * param, after optimizer step `step` (0-based)."""
        d = self.decay_at(step)
        shadows = list(self.shadow.values())
        params = [p.detach().float() for p in self.params.values()]
        if d == 0.0:
            torch._foreach_copy_(shadows, params)
        else:
            torch._foreach_lerp_(shadows, params, 1.0 - d)

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self):
        """Temporarily put the EMA weights into the network (validation, export)."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        for n, p in self.params.items():
            p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            for n, p in self.params.items():
                p.copy_(backup[n])
