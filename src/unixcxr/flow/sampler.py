"""Deterministic Euler sampler for the flow ODE, from t = 1 (noise) to t = 0, with text and image
classifier-free guidance. Network-free: it calls a velocity function that evaluates the requested
guidance branches (one batched forward in our pipeline)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unixcxr.flow.matching import timestep_grid

COND, NO_TEXT, NO_IMAGE = "cond", "no_text", "no_image"


@dataclass(frozen=True)
class SamplerSettings:
    num_points: int = 50  # grid points; num_points - 1 Euler steps (the release's "50 steps")
    cfg_text: float = 2.0
    cfg_img: float = 1.0
    cfg_interval: tuple[float, float] = (0.4, 1.0)  # guidance applied while lo < t <= hi
    shift: float = 1.0
    renorm: bool = False  # cap the guided velocity's norm at the conditional one's, per sample

    def branches(self, t: float, has_image: bool) -> tuple[str, ...]:
        """The predictions needed at time t: never a pass whose scale is 1 (it would change nothing)."""
        lo, hi = self.cfg_interval
        return self.guided_branches(has_image) if lo < t <= hi else (COND,)

    def guided_branches(self, has_image: bool) -> tuple[str, ...]:
        """The predictions needed inside the guidance interval (every branch a run may ask for)."""
        out = [COND]
        if self.cfg_text != 1.0:
            out.append(NO_TEXT)
        if has_image and self.cfg_img != 1.0:
            out.append(NO_IMAGE)
        return tuple(out)


# Released evaluation settings and the authors' demo settings (UNIX.md section 4).
PRESETS = {
    "released": SamplerSettings(),
    "demo": SamplerSettings(cfg_text=3.0, cfg_img=1.5, shift=3.0),
}


def guide(preds: dict[str, torch.Tensor], settings: SamplerSettings) -> torch.Tensor:
    """v_text = u_text + s_text (v - u_text); with an image condition v = u_img + s_img (v_text - u_img)."""
    v = preds[COND]
    if NO_TEXT in preds:
        v = preds[NO_TEXT] + settings.cfg_text * (v - preds[NO_TEXT])
    if NO_IMAGE in preds:
        v = preds[NO_IMAGE] + settings.cfg_img * (v - preds[NO_IMAGE])
    if settings.renorm and len(preds) > 1:
        dims = tuple(range(1, v.dim()))
        norm = torch.linalg.vector_norm
        ratio = norm(preds[COND], dim=dims, keepdim=True) / norm(v, dim=dims, keepdim=True).clamp_min(1e-12)
        v = v * ratio.clamp(max=1.0)
    return v


VelocityFn = Callable[[torch.Tensor, float, tuple[str, ...]], dict[str, torch.Tensor]]


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, settings: SamplerSettings,
                 has_image: bool = False, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """noise: [B, C, h, w] at t = 1 -> x0. velocity_fn(x_t, t, branches) returns one velocity per branch."""
    grid = timestep_grid(settings.num_points, settings.shift).tolist()
    x = noise
    for i in range(len(grid) - 1):
        t, t_next = grid[i], grid[i + 1]
        preds = velocity_fn(x, t, settings.branches(t, has_image))
        x = x + (t_next - t) * guide(preds, settings).to(x.dtype)
        if progress is not None:
            progress(i + 1, len(grid) - 1)
    return x
