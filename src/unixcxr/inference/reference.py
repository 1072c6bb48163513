"""The released scheme's arithmetic, computed the slow, obvious way as a reference for tests and
benchmarks: one sample at a time, every guidance branch a forward of its own (the image-CFG pass
included, on the text context when there is no input image, as the authors' code runs it), and at
every step the whole sequence (prompt + latent block) recomputed. (Their code caches the prompt, so
this is slower than theirs: docs/released-code.md times theirs.) Our sampler (inference/images.py)
must give the same images, faster."""

from __future__ import annotations

import torch

from unixcxr.flow.sampler import COND, NO_IMAGE, NO_TEXT, SamplerSettings, euler_sample
from unixcxr.inference.images import prefix_layout
from unixcxr.model.sequence import LATENT, collate
from unixcxr.model.unix import UniX, unpatchify


@torch.no_grad()
def full_sequence_velocity(model: UniX, report: list[int] | None, x_t: torch.Tensor, t: float,
                           image: torch.Tensor | None) -> torch.Tensor:
    """One sample, one branch, the whole sequence: [vit block] prompt [soi][x_t][eoi], the prompt
    laid out by the model's conventions (report None: the unconditional one)."""
    _, hh, ww = x_t.shape
    layout = prefix_layout(model, report, image is not None).latent_block(hh * ww)
    batch = collate([layout]).to(x_t.device)
    vit = model.encode_images(image[None]) if image is not None else None
    tt = torch.full((1,), t, device=x_t.device)
    h, _ = model.hidden_states(batch, vit, model.latent_tokens(x_t[None], tt))
    return unpatchify(model.velocity(h[batch.kind == LATENT])[None], hh, ww)[0].float()


@torch.no_grad()
def released_sample(model: UniX, reports: list[list[int]], settings: SamplerSettings, noise: torch.Tensor,
                    images: torch.Tensor | None = None) -> torch.Tensor:
    """Batch size 1 at a time, one forward per branch whose scale counts, inside the guidance interval."""
    out = []
    for i, report in enumerate(reports):
        image = images[i] if images is not None else None

        def velocity_fn(x, t, branches, report=report, image=image):
            preds = {COND: full_sequence_velocity(model, report, x[0], t, image)[None]}
            if not settings.inside(t) or (settings.released and not settings.counts(settings.cfg_text)):
                return preds
            if settings.counts(settings.cfg_text):
                preds[NO_TEXT] = full_sequence_velocity(model, None, x[0], t, image)[None]
            if settings.counts(settings.cfg_img) and (image is not None or settings.released):
                # the image-CFG pass: the text context without the image; with no input image (the
                # released rule) that is the conditional context itself, computed again as they do
                preds[NO_IMAGE] = full_sequence_velocity(model, report, x[0], t, None)[None]
            return preds

        out.append(euler_sample(velocity_fn, noise[i:i + 1], settings, has_image=image is not None))
    return torch.cat(out)
