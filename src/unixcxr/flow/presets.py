"""The sampler's settings as plain numbers, in one place and without torch, so that the command
line's help, the web app's sliders and the sampler itself (flow/sampler.py) read the same values.

DEFAULTS are SamplerSettings' own values ("unixcxr": what our models sample with; shift 1.0 is their
training distribution of t, no renorm). "released" and "demo" are the authors' settings: their
evaluation (eval/ -> inference/config.json: text 2.0, image 1.0, and interleave_inference's defaults
for the rest: shift 3.0, renorm on, min 0) and their demo (interleave_inference's defaults: text 3.0,
image 1.5). docs/released-code.md describes their code."""

from __future__ import annotations

DEFAULTS = {
    "num_points": 50,  # grid points; num_points - 1 Euler steps (the release's "50 steps")
    "cfg_text": 2.0,
    "cfg_img": 1.0,
    "cfg_interval": (0.4, 1.0),  # guidance applied while lo < t <= hi
    "shift": 1.0,
    "renorm": False,  # cap the guided velocity's norm at the conditional one's, per sample
    "renorm_min": 0.0,  # lower bound of that cap's factor
}
PRESET_CHANGES = {
    "released": {"cfg_text": 2.0, "cfg_img": 1.0, "shift": 3.0, "renorm": True},
    "demo": {"cfg_text": 3.0, "cfg_img": 1.5, "shift": 3.0, "renorm": True},
    "unixcxr": {},
}


def preset_values(name: str) -> dict:
    """Every sampler value of the named preset."""
    return {**DEFAULTS, **PRESET_CHANGES[name]}
