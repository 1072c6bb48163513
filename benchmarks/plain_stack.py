"""The reference a training step's MFU is judged against: a plain PyTorch transformer stack of the
same width and depth (pre-norm blocks: LayerNorm, one fused qkv Linear, causal SDPA, a 4x GELU MLP),
batch x tokens of fp32, fused AdamW, timed like our steps. What a MoT step loses against it is what
routing, norms, rotary and the data path cost; what both lose against the matmul peak is the host's."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from unixcxr.train.mfu import count_training_flops


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attn.transpose(1, 2).reshape(B, L, H))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


def bench_plain_stack(width: int, heads: int, layers: int, batch: int, tokens: int, steps: int, peak_sample) -> dict:
    """Best step's FLOP/s (FlopCounterMode's count) over the best matmul peak sampled between steps."""
    torch.manual_seed(0)
    stack = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
    optimizer = torch.optim.AdamW(stack.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, tokens, width)

    def forward_backward():
        stack(x).square().mean().backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()

    flops = count_training_flops(forward_backward)
    step()  # warm-up
    peaks, best = [peak_sample()], float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
        peaks.append(peak_sample())
    return {"step_s": best, "mfu": flops / best / max(peaks), "peak_flops": max(peaks),
            "shape": f"{layers} layers, width {width}, {batch} x {tokens} tokens"}
