"""The released scheme, kept as a reference for tests and benchmarks: at every step the whole
sequence (prompt + latent block) is recomputed, once per guidance branch, three passes always.
Our sampler (inference/images.py) must give the same images, faster."""

from __future__ import annotations

import torch

from unixcxr.flow.sampler import COND, NO_IMAGE, NO_TEXT, SamplerSettings, euler_sample
from unixcxr.model.sequence import LATENT, SampleLayout, collate
from unixcxr.model.unix import UniX, unpatchify


@torch.no_grad()
def full_sequence_velocity(model: UniX, report: list[int], x_t: torch.Tensor, t: float,
                           image: torch.Tensor | None) -> torch.Tensor:
    """One sample, one branch, the whole sequence: [vit block] [bos] report [eos] [soi][x_t][eoi]."""
    s = model.config.tokens
    _, hh, ww = x_t.shape
    layout = SampleLayout(s)
    if image is not None:
        layout.vit_block(model.config.vision.num_tokens)
    layout.text([s.bos, *report, s.eos]).latent_block(hh * ww)
    batch = collate([layout]).to(x_t.device)
    vit = model.encode_images(image[None]) if image is not None else None
    tt = torch.full((1,), t, device=x_t.device)
    h, _ = model.hidden_states(batch, vit, model.latent_tokens(x_t[None], tt))
    return unpatchify(model.velocity(h[batch.kind == LATENT])[None], hh, ww)[0].float()


@torch.no_grad()
def released_sample(model: UniX, reports: list[list[int]], settings: SamplerSettings, noise: torch.Tensor,
                    images: torch.Tensor | None = None) -> torch.Tensor:
    """Batch size 1 at a time, three branch passes per step inside the guidance interval."""
    out = []
    for i, report in enumerate(reports):
        image = images[i] if images is not None else None

        def velocity_fn(x, t, branches, report=report, image=image):
            lo, hi = settings.cfg_interval
            inside = lo < t <= hi
            preds = {COND: full_sequence_velocity(model, report, x[0], t, image)[None]}
            if inside:  # the release evaluates all three branches whatever the scales
                preds[NO_TEXT] = full_sequence_velocity(model, [], x[0], t, image)[None]
                preds[NO_IMAGE] = full_sequence_velocity(model, report, x[0], t, None)[None]
                if settings.cfg_text == 1.0:
                    preds.pop(NO_TEXT)
                if image is None or settings.cfg_img == 1.0:
                    preds.pop(NO_IMAGE)
            return preds

        out.append(euler_sample(velocity_fn, noise[i:i + 1], settings, has_image=image is not None))
    return torch.cat(out)
