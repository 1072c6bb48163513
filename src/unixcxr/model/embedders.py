"""Small modules that turn non-text inputs into decoder tokens: rotary positions, the timestep
embedder, the fixed 2D latent position table, the ViT connector."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """RoPE (rotate-half convention). Positions are explicit per token because an image block shares
    one position."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", torch.empty(head_dim // 2), persistent=False)
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=self.inv_freq.device) / self.head_dim
        self.inv_freq.copy_(1.0 / self.theta ** exponent)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [B, L] -> cos, sin: [B, L, 1, head_dim] (broadcast over heads)
        freqs = positions.float()[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin for x [..., head_dim] and RotaryEmbedding's cos, sin (their
    two halves equal), broadcast over x. Each half of the output is one product and one fused
    multiply-add written in place, and its backward is the inverse rotation of the gradient (faster
    than the rotate-half formula: docs/performance.md). Without autograd the rotation runs directly."""
    half = x.shape[-1] // 2
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _rotate(x, cos[..., :half], sin[..., :half], 1.0)
    return _Rotate.apply(x, cos[..., :half], sin[..., :half])


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    # [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin] (sign -1: the inverse rotation); cos, sin half width
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty(x.shape, dtype=torch.result_type(x, cos), device=x.device)
    out1, out2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=out2).addcmul_(x1, sin, value=sign)
    return out


class _Rotate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1.0), None, None


class TimestepEmbedder(nn.Module):
    """Flow time t in [0, 1] -> sinusoid -> MLP (as DiT); simply added to latent tokens (no adaLN)."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def sinusoid(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: [N] -> [N, hidden]
        return self.mlp(self.sinusoid(t).to(self.mlp[0].weight.dtype))


def sincos_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2D sin-cos table [grid_size**2, embed_dim], row-major (MAE convention)."""
    coords = np.arange(grid_size, dtype=np.float64)
    rows, cols = np.meshgrid(coords, coords, indexing="ij")

    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # first half of the channels encodes the column (x), second half the row (y), as in MAE/BAGEL
    return np.concatenate([one_axis(embed_dim // 2, cols), one_axis(embed_dim // 2, rows)], axis=1)


class LatentPositionTable(nn.Module):
    """Fixed sin-cos positions for a grid_max x grid_max latent grid. A smaller grid uses the top-left
    block (position id = row * grid_max + col), which is what lets stage 3 'extend' to 512 px."""

    def __init__(self, hidden_size: int, grid_max: int):
        super().__init__()
        self.grid_max = grid_max
        table = torch.tensor(sincos_2d(hidden_size, grid_max), dtype=torch.float32)  # honours a device context
        self.register_buffer("pos_embed", table, persistent=True)

    def ids(self, height: int, width: int, device=None) -> torch.Tensor:
        if height > self.grid_max or width > self.grid_max:
            raise ValueError(f"latent grid {height}x{width} exceeds the position table {self.grid_max}")
        rows = torch.arange(height, device=device)[:, None]
        cols = torch.arange(width, device=device)[None, :]
        return (rows * self.grid_max + cols).reshape(-1)

    def forward(self, height: int, width: int) -> torch.Tensor:
        # -> [height * width, hidden]
        return self.pos_embed[self.ids(height, width, self.pos_embed.device)]


class Connector(nn.Module):
    """ViT features -> decoder width: Linear, GELU, Linear (released keys layers.0 / layers.2).
    With num_tokens, first subtract a fitted per-position mean feature (`feature_mean`, see
    VisionConfig.center_features)."""

    ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # name -> nn.GELU(approximate=...)

    def __init__(self, in_dim: int, hidden_size: int, act: str = "gelu_tanh", num_tokens: int | None = None):
        super().__init__()
        if act not in self.ACTIVATIONS:
            raise ValueError(f"connector activation {act!r} is not one of {sorted(self.ACTIVATIONS)}")
        gelu = nn.GELU(approximate=self.ACTIVATIONS[act])
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden_size), gelu, nn.Linear(hidden_size, hidden_size))
        if num_tokens is not None:
            self.register_buffer("feature_mean", torch.zeros(num_tokens, in_dim))
        else:
            self.feature_mean = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, n, in_dim] -> [N, n, hidden]
        if self.feature_mean is not None:
            x = x - self.feature_mean.to(x.dtype)
        return self.layers(x)


class RepaProjector(nn.Module):
    """gen hidden state -> target encoder space, 3 linear layers with SiLU (REPA)."""

    def __init__(self, hidden_size: int, target_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.SiLU(),
            nn.Linear(hidden_size, hidden_size), nn.SiLU(),
            nn.Linear(hidden_size, target_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
