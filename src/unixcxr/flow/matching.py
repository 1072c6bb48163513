"""Flow matching on latents (rectified flow): x_t = (1 - t) x0 + t noise, t = 1 is pure noise,
the network predicts the velocity noise - x0. Network-free: these functions are the whole math."""

from __future__ import annotations

import torch


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): s > 1 spends more time near pure noise."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(n: int, shift: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Logit-normal training times: sigmoid of a standard normal, then shifted. [n] in (0, 1)."""
    z = torch.randn(n, generator=generator, device=device)
    return shift_timesteps(torch.sigmoid(z), shift)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # x0, noise: [N, C, h, w]; t: [N]
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def timestep_grid(num_points: int, shift: float, device=None) -> torch.Tensor:
    """The sampler's grid from t = 1 to t = 0: num_points points, num_points - 1 Euler steps."""
    if num_points < 2:
        raise ValueError(f"the sampling grid needs at least 2 points, got {num_points}")
    return shift_timesteps(torch.linspace(1.0, 0.0, num_points, device=device), shift)
