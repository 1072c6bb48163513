"""Deterministic Euler sampler for the flow ODE, from t = 1 (noise) to t = 0, with text and image
classifier-free guidance. Network-free: it calls a velocity function that evaluates the requested
guidance branches (one batched forward in our pipeline)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from unixcxr.flow.matching import timestep_grid
from unixcxr.flow.presets import DEFAULTS, PRESET_CHANGES
from unixcxr.validation import GUIDANCE_RULES, check, check_interval

COND, NO_TEXT, NO_IMAGE = "cond", "no_text", "no_image"


RENORM_EPS = 1e-8  # added to the guided norm, as the release does


def _float32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


@dataclass(frozen=True)
class SamplerSettings:
    # the values, and what each means: flow/presets.py
    num_points: int = DEFAULTS["num_points"]
    cfg_text: float = DEFAULTS["cfg_text"]
    cfg_img: float = DEFAULTS["cfg_img"]
    cfg_interval: tuple[float, float] = DEFAULTS["cfg_interval"]
    shift: float = DEFAULTS["shift"]
    renorm: bool = DEFAULTS["renorm"]
    renorm_min: float = DEFAULTS["renorm_min"]
    # How branches combine (the model's conventions.guidance). "released", as the authors' code:
    # a scale counts only above 1, no guidance at all unless the text scale counts, and without an
    # input image the image-CFG branch is the text-conditioned prediction itself, so
    # v = u + (1 + s_img (s_text - 1)) (c - u): folded into `guide`, no third pass.
    # "unixcxr": any scale but 1 counts and image guidance needs an input image.
    guidance: str = "unixcxr"

    def __post_init__(self):
        """Refuse what would sample garbage (NaN or negative scales, an inverted interval, shift <= 0):
        the shared rules of unixcxr.validation, under the names callers use (num_points is "steps")."""
        if self.guidance not in GUIDANCE_RULES:
            raise ValueError(f"guidance {self.guidance!r} is not one of {GUIDANCE_RULES}")
        check("steps", self.num_points)
        for name in ("cfg_text", "cfg_img", "shift"):
            check(name, getattr(self, name))
        check_interval("cfg_interval", self.cfg_interval)
        if not 0.0 <= self.renorm_min <= 1.0:
            raise ValueError(f"renorm_min must be in [0, 1], got {self.renorm_min}")

    @property
    def released(self) -> bool:
        return self.guidance == "released"

    def counts(self, scale: float) -> bool:
        return scale > 1.0 if self.released else scale != 1.0

    def inside(self, t: float) -> bool:
        """t inside the guidance interval; the release compares in float32 (its grid's dtype)."""
        lo, hi = self.cfg_interval
        if self.released:
            lo, hi = _float32(lo), _float32(hi)
        return lo < t <= hi

    def branches(self, t: float, has_image: bool) -> tuple[str, ...]:
        """The predictions needed at time t: never a pass that would change nothing."""
        return self.guided_branches(has_image) if self.inside(t) else (COND,)

    def guided_branches(self, has_image: bool) -> tuple[str, ...]:
        """The predictions needed inside the guidance interval (every branch a run may ask for)."""
        text = self.counts(self.cfg_text)
        if self.released and not text:
            return (COND,)
        out = [COND] + ([NO_TEXT] if text else [])
        if has_image and self.counts(self.cfg_img):
            out.append(NO_IMAGE)
        return tuple(out)

    def effective_text_scale(self, has_image: bool) -> float:
        """The text scale a text-only run really applies: 1 + s_img (s_text - 1) under the released
        rule with both scales counting (the authors' demo: 1 + 1.5 x 2 = 4.0), else s_text."""
        if not has_image and self.released and self.counts(self.cfg_text) and self.counts(self.cfg_img):
            return 1.0 + self.cfg_img * (self.cfg_text - 1.0)
        return self.cfg_text


# Named presets: the authors' evaluation ("released") and demo settings, and ours (flow/presets.py)
PRESETS = {name: SamplerSettings(**changes) for name, changes in PRESET_CHANGES.items()}


def guide(preds: dict[str, torch.Tensor], settings: SamplerSettings) -> torch.Tensor:
    """v_text = u_text + s_text (v - u_text); with an image branch v = u_img + s_img (v_text - u_img).
    Under the released rule without an input image, u_img is the conditional prediction (the
    authors' image-CFG pass runs on the text context, so it computes exactly that), so the image
    scale multiplies the text guidance: the same arithmetic as theirs, one forward fewer."""
    v = preds[COND]
    if NO_TEXT in preds:
        v = preds[NO_TEXT] + settings.cfg_text * (v - preds[NO_TEXT])
    u_img = preds.get(NO_IMAGE)
    if u_img is None and settings.released and NO_TEXT in preds and settings.counts(settings.cfg_img):
        u_img = preds[COND]  # no input image: the image-CFG context is the text one
    if u_img is not None:
        v = u_img + settings.cfg_img * (v - u_img)
    if settings.renorm and len(preds) > 1:
        dims = tuple(range(1, v.dim()))
        norm = torch.linalg.vector_norm
        ratio = norm(preds[COND], dim=dims, keepdim=True) / (norm(v, dim=dims, keepdim=True) + RENORM_EPS)
        v = v * ratio.clamp(min=settings.renorm_min, max=1.0)
    return v


def batch_settings(settings: SamplerSettings, text_scales: Sequence[float] | None) -> SamplerSettings:
    """The settings whose branches serve every row of a batch drawn with one text scale per row:
    the text-free branch runs when any row's scale counts."""
    if not text_scales:
        return settings
    counting = [s for s in text_scales if settings.counts(s)]
    return replace(settings, cfg_text=counting[0] if counting else text_scales[0])


def guide_rows(preds: dict[str, torch.Tensor], settings: SamplerSettings, text_scales: Sequence[float],
               has_image: bool) -> torch.Tensor:
    """guide() for a batch whose rows have their own text scales: each group of rows with one scale
    gets exactly the arithmetic (and the branches) it would get alone; a row whose scale does not
    count gets its conditional prediction."""
    v = torch.empty_like(preds[COND])
    for scale in dict.fromkeys(text_scales):
        rows = torch.tensor([i for i, s in enumerate(text_scales) if s == scale], device=v.device)
        own = replace(settings, cfg_text=scale)
        wanted = own.guided_branches(has_image) if len(preds) > 1 else (COND,)
        v.index_copy_(0, rows, guide({b: preds[b].index_select(0, rows) for b in wanted}, own))
    return v


VelocityFn = Callable[[torch.Tensor, float, tuple[str, ...]], dict[str, torch.Tensor]]


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, settings: SamplerSettings,
                 has_image: bool = False, progress: Callable[[int, int], None] | None = None,
                 text_scales: Sequence[float] | None = None) -> torch.Tensor:
    """noise: [B, C, h, w] at t = 1 -> x0. velocity_fn(x_t, t, branches) returns one velocity per branch.
    text_scales: one text guidance scale per row (None: settings.cfg_text for every row)."""
    grid = timestep_grid(settings.num_points, settings.shift).tolist()
    batch = batch_settings(settings, text_scales)
    x = noise
    for i in range(len(grid) - 1):
        t, t_next = grid[i], grid[i + 1]
        preds = velocity_fn(x, t, batch.branches(t, has_image))
        v = guide(preds, settings) if text_scales is None else guide_rows(preds, settings, text_scales, has_image)
        x = x + (t_next - t) * v.to(x.dtype)
        if progress is not None:
            progress(i + 1, len(grid) - 1)
    return x
