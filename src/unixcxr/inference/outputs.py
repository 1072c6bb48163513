"""What report() and generate() return: the reports or images, and the settings that made them.

Both are lists (out[0], len(out), `for image in out`, `out == [...]` work as the bare lists these
methods returned before) that also carry, as attributes, what a diffusers or transformers user
looks for: `.images` / `.reports`, and the sampler or decoding settings and seeds actually used,
after presets and defaults were applied. One difference from diffusers' ImagePipelineOutput:
out[0] is the first image (as it always was here), not the list of images; write out.images[0]
to read the same in both."""

from __future__ import annotations

import dataclasses

from PIL import Image

from unixcxr.flow.sampler import SamplerSettings
from unixcxr.inference.report import DecodingSettings


class ImagePipelineOutput(list):
    """generate()'s images, one per report, and how they were drawn."""

    def __init__(self, images: list[Image.Image], *, sampler: SamplerSettings, preset: str, size: int,
                 seeds: list[int] | None, text_scales: list[float] | None = None):
        super().__init__(images)
        self.text_scales = text_scales  # one text scale per image when they differ (None: sampler.cfg_text)
        self.sampler = sampler  # the SamplerSettings every image was drawn with
        self.preset = preset  # the named preset the unset values came from
        self.size = size  # pixels per side
        self.seeds = seeds  # image i's noise came from torch.Generator().manual_seed(seeds[i]); None: a generator's

    @property
    def images(self) -> list[Image.Image]:
        return list(self)

    @property
    def num_inference_steps(self) -> int:
        """Euler steps, as diffusers counts them: the sampler's grid points minus one."""
        return self.sampler.num_points - 1

    @property
    def guidance_scale(self) -> float | list[float]:
        return self.sampler.cfg_text if self.text_scales is None else list(self.text_scales)

    def settings_used(self) -> dict:
        """The settings as plain JSON-able values (for logs, sidecar files and the HTTP API)."""
        s = self.sampler
        return {"settings": self.preset, "num_inference_steps": self.num_inference_steps, "steps": s.num_points,
                "guidance_scale": self.guidance_scale, "cfg_img": s.cfg_img, "cfg_interval": list(s.cfg_interval),
                "shift": s.shift, "renorm": s.renorm, "guidance": s.guidance, "size": self.size,
                "seeds": self.seeds}

    def __repr__(self) -> str:
        return (f"ImagePipelineOutput({len(self)} image(s) of {self.size}px, num_inference_steps="
                f"{self.num_inference_steps}, guidance_scale={self.guidance_scale}, settings={self.preset!r}, "
                f"seeds={self.seeds})")


class ReportPipelineOutput(list):
    """report()'s texts, one per image, and how they were decoded."""

    def __init__(self, reports: list[str], *, decoding: DecodingSettings, prompt: str, preset: str | None,
                 seed: int | None):
        super().__init__(reports)
        self.decoding = decoding  # max_new_tokens, temperature, top_p
        self.prompt = prompt  # the instruction every image was asked with
        self.preset = preset  # preprocessing preset for a model with the authors' conventions
        self.seed = seed  # the sampling seed (None: greedy, or a caller's generator)

    @property
    def reports(self) -> list[str]:
        return list(self)

    @property
    def max_new_tokens(self) -> int:
        return self.decoding.max_new_tokens

    def settings_used(self) -> dict:
        return {**dataclasses.asdict(self.decoding), "prompt": self.prompt, "settings": self.preset,
                "seed": self.seed}

    def __repr__(self) -> str:
        return (f"ReportPipelineOutput({len(self)} report(s), max_new_tokens={self.max_new_tokens}, temperature="
                f"{self.decoding.temperature}, top_p={self.decoding.top_p}, seed={self.seed})")
