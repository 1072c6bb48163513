"""Report -> image. The prompt prefixes of every guidance branch are run through the decoder ONCE
and their keys/values cached; each sampler step then runs only the latent block
([soi][latents][eoi]) of all requested branches in one batched forward."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unixcxr.flow.sampler import COND, NO_IMAGE, NO_TEXT, SamplerSettings, euler_sample
from unixcxr.model.mot import FULL_ATTENTION, KVCache
from unixcxr.model.sequence import LATENT, TEXT, SampleLayout, collate
from unixcxr.model.unix import UniX, unpatchify


@dataclass
class PromptCache:
    """Cached prompt prefixes, rows grouped by branch: [cond x B, no_text x B, (no_image x B)]."""

    kv: KVCache
    key_valid: torch.Tensor  # [R, Lp] bool, False on left padding
    next_position: torch.Tensor  # [R] RoPE position of the latent block
    branches: tuple[str, ...]
    batch: int

    def rows(self, branches: tuple[str, ...]):
        idx = [self.branches.index(b) for b in branches]
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return slice(idx[0] * self.batch, (idx[-1] + 1) * self.batch)
        return torch.cat([torch.arange(i * self.batch, (i + 1) * self.batch) for i in idx])


def _prefix(model: UniX, report: list[int], with_image: bool) -> SampleLayout:
    s = model.config.tokens
    layout = SampleLayout(s)
    if with_image:
        layout.vit_block(model.config.vision.num_tokens)
    return layout.text([s.bos, *report, s.eos])


@torch.no_grad()
def encode_prompts(model: UniX, reports: list[list[int]], num_latent_tokens: int,
                   images: torch.Tensor | None = None, branches: tuple[str, ...] = (COND, NO_TEXT)) -> PromptCache:
    """Run every branch's prefix once. images: optional condition images [B, 3, S, S] (ViT tokens
    before the text); NO_TEXT drops the report, NO_IMAGE drops the image."""
    with_image = images is not None
    layouts, vit = [], []
    for branch in branches:
        for i, report in enumerate(reports):
            keep_image = with_image and branch != NO_IMAGE
            layouts.append(_prefix(model, [] if branch == NO_TEXT else report, keep_image))
            if keep_image:
                vit.append(images[i])
    device = model.embed_tokens.weight.device
    batch = collate(layouts, left_pad=True).to(device)
    vit_tokens = model.encode_images(torch.stack(vit).to(device)) if vit else None
    R, Lp = batch.shape
    kv = model.new_cache(R, Lp + num_latent_tokens + 2)
    h = model.embed(batch, vit_tokens)
    model.run_layers(h, batch.kind == LATENT, batch.position, batch.attention_mask(), kv)
    kv.advance(Lp)
    next_position = torch.tensor([x.next_position for x in layouts], device=device)
    return PromptCache(kv, batch.segment >= 0, next_position, tuple(branches), len(reports))


@torch.no_grad()
def predict_velocity(model: UniX, cache: PromptCache, x_t: torch.Tensor, t: float,
                     branches: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """x_t: [B, C, h, w] -> one velocity [B, C, h, w] per branch, all branches in one forward."""
    B, _, hh, ww = x_t.shape
    k = len(branches)
    rows = cache.rows(branches)
    s = model.config.tokens
    device = x_t.device
    tt = torch.full((B * k,), t, device=device)
    latents = model.latent_tokens(x_t.repeat(k, 1, 1, 1), tt)  # [kB, n, H]
    markers = model.embed_tokens(torch.tensor([s.start_of_image, s.end_of_image], device=device))
    h = torch.cat([markers[0].expand(B * k, 1, -1), latents.to(markers.dtype), markers[1].expand(B * k, 1, -1)], 1)
    n = h.shape[1]
    kind = torch.full((B * k, n), LATENT, device=device)
    kind[:, 0] = kind[:, -1] = TEXT
    positions = cache.next_position[rows][:, None].expand(-1, n)
    prefix_valid = cache.key_valid[rows]
    if prefix_valid.all():
        mask = FULL_ATTENTION  # no padding: the block sees every prefix key and itself
    else:  # every query of the block sees the same keys: one key-padding row, broadcast over queries
        mask = torch.cat([prefix_valid, prefix_valid.new_ones(B * k, n)], dim=1)[:, None, None, :]
    cache.kv.rows = rows
    try:
        out, _ = model.run_layers(h, kind == LATENT, positions, mask, cache.kv)
    finally:
        cache.kv.rows = slice(None)
    v = unpatchify(model.velocity(out[:, 1:-1]), hh, ww).float()
    return dict(zip(branches, v.chunk(k)))


def branches_for(settings: SamplerSettings, has_image: bool) -> tuple[str, ...]:
    """Every branch any step of this sampler will ask for (the prefixes to cache)."""
    out = [COND]
    if settings.cfg_text != 1.0:
        out.append(NO_TEXT)
    if has_image and settings.cfg_img != 1.0:
        out.append(NO_IMAGE)
    return tuple(out)


@torch.no_grad()
def generate_latents(model: UniX, reports: list[list[int]], settings: SamplerSettings, grid: tuple[int, int],
                     images: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None, progress=None) -> torch.Tensor:
    """Token ids of B reports -> normalised latents [B, C, h, w] (decode them with the VAE)."""
    h, w = grid
    C = model.config.vae.latent_channels
    device = model.embed_tokens.weight.device
    if noise is None:
        noise = torch.randn((len(reports), C, h, w), generator=generator).to(device)
    cache = encode_prompts(model, reports, h * w, images, branches_for(settings, images is not None))

    def velocity_fn(x, t, branches):
        return predict_velocity(model, cache, x, t, branches)

    return euler_sample(velocity_fn, noise, settings, has_image=images is not None, progress=progress)
