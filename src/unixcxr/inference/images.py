"""Report -> image. The prompt prefixes of every guidance branch are run through the decoder ONCE
and their keys/values cached; each sampler step then runs only the latent block
([soi][latents][eoi]) of all requested branches in one batched forward. Two more exact savings per
step: the block's one RoPE position is folded into the cached prompt keys (no rotation at all in
the step), and the branches' identical inputs are embedded and projected once in the first layer."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from unixcxr.flow.sampler import COND, NO_IMAGE, NO_TEXT, SamplerSettings, batch_settings, euler_sample
from unixcxr.inference.graphs import can_capture, capture, graphed_or_eager
from unixcxr.model.attention import Mask
from unixcxr.model.cache import KVCache
from unixcxr.model.embedders import apply_rotary
from unixcxr.model.routing import Routing
from unixcxr.model.sequence import LATENT, TEXT, SampleLayout, collate, prompt_ids
from unixcxr.model.unix import UniX, unpatchify


@dataclass
class PromptCache:
    """Cached prompt prefixes, rows grouped by branch: [cond x B, no_text x B, (no_image x B)]. The
    keys are stored relative to the latent block's position (`fold_block_rotation`): they serve a
    block at `next_position` only, which runs without RoPE."""

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


def prefix_layout(model: UniX, report: list[int] | None, with_image: bool) -> SampleLayout:
    """One branch's context before the latent block: [vit block] then the prompt. report None is the
    unconditional context: [bos][eos] for our models, nothing at all for the release (its latent
    block then sits at RoPE position 0), as the model's conventions say."""
    cfg = model.config
    layout = SampleLayout(cfg.tokens)
    if with_image:
        layout.vit_block(cfg.vision.num_tokens)
    if report is None and cfg.conventions.unconditional == "empty":
        return layout
    return layout.text(prompt_ids(cfg.tokens, report or [], cfg.conventions.prompt_bos))


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
            layouts.append(prefix_layout(model, None if branch == NO_TEXT else report, keep_image))
            if keep_image:
                vit.append(images[i])
    device = model.embed_tokens.weight.device
    batch = collate(layouts, left_pad=True).to(device)
    vit_tokens = model.encode_images(torch.stack(vit).to(device)) if vit else None
    R, Lp = batch.shape
    kv = model.new_cache(R, Lp + num_latent_tokens + 2)
    h = model.embed(batch, vit_tokens)
    routing, mask = Routing.from_mask(batch.kind == LATENT), Mask.explicit(batch.attention_mask())
    model.run_layers(h, routing, batch.position, mask, kv)
    kv.advance(Lp)
    next_position = torch.tensor([x.next_position for x in layouts], device=device)
    fold_block_rotation(model, kv, next_position)
    return PromptCache(kv, batch.segment >= 0, next_position, tuple(branches), len(reports))


def fold_block_rotation(model: UniX, kv: KVCache, block_position: torch.Tensor) -> None:
    """Every token of a latent block shares one RoPE position p, so its queries and keys all turn
    by the same R_p: inside the block the rotation cancels (<R_p q, R_p k> = <q, k>), and against a
    prompt key R_j k_j it leaves <q, R_{j - p} k_j>. Turning each row's cached prompt keys by R_{-p}
    once here lets every sampler step skip the rotation of its queries and keys. block_position: [R]."""
    cos, sin = model.rope(-block_position[:, None], torch.float32)  # [R, 1, 1, d]
    prompt = kv.k[:, :, :, :kv.length]  # [layers, R, kv_heads, Lp, d]
    prompt.copy_(apply_rotary(prompt.float(), cos[None], sin[None]).to(prompt.dtype))


class VelocityStep:
    """One sampler step for a fixed set of branches, prepared once: marker embeddings, routing
    and mask never change between steps, so a call does device work only (no host
    synchronisation), which also lets it be captured in a CUDA graph."""

    def __init__(self, model: UniX, cache: PromptCache, batch: int, grid: tuple[int, int],
                 branches: tuple[str, ...]):
        self.model, self.cache, self.grid, self.branches = model, cache, grid, branches
        k, n = len(branches), grid[0] * grid[1] + 2  # [soi] latents [eoi]
        R = batch * k
        device = model.embed_tokens.weight.device
        s = model.config.tokens
        self.rows = cache.rows(branches)
        self.markers = model.embed_tokens(torch.tensor([s.start_of_image, s.end_of_image], device=device))
        kind = torch.full((R, n), LATENT, device=device)
        kind[:, 0] = kind[:, -1] = TEXT
        self.routing = Routing.from_mask(kind == LATENT)
        prefix_valid = cache.key_valid[self.rows]
        if prefix_valid.all():
            self.mask = Mask.full()  # no padding: the block sees every prefix key and itself
        else:  # every query of the block sees the same keys: one key-padding row, broadcast over queries
            self.mask = Mask.explicit(torch.cat([prefix_valid, prefix_valid.new_ones(R, n)], dim=1)[:, None, None, :])

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x_t: [B, C, h, w]; t: [1] -> velocities of every branch, stacked: [k * B, C, h, w]
        # Every branch starts from the same block (the branches differ only in the prompt keys its
        # queries meet), so the embedding and the first layer's projections run on B rows, not k * B.
        model, k, B = self.model, len(self.branches), x_t.shape[0]
        latents = model.latent_tokens(x_t, t.expand(B))  # [B, n - 2, H]
        soi, eoi = self.markers[0].expand(B, 1, -1), self.markers[1].expand(B, 1, -1)
        h = torch.cat([soi, latents.to(soi.dtype), eoi], dim=1)
        # no RoPE: the block's one position is folded into the cached prompt keys
        out, _ = model.run_layers(h, self.routing, None, self.mask, self.cache.kv.view(rows=self.rows), shared=k)
        return unpatchify(model.velocity(out[:, 1:-1]), *self.grid).float()


class GraphedStep:
    """A VelocityStep replayed from a CUDA graph: one launch per step instead of ~2,000 (the
    released-size model at batch 1 is launch-bound, not FLOP-bound)."""

    def __init__(self, step: VelocityStep, x_t: torch.Tensor):
        self.x = x_t.clone()
        self.t = torch.zeros(1, device=x_t.device)
        self.graph, self.out = capture(lambda: step(self.x, self.t))  # the warm-ups write only scratch

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x_t)
        self.t.copy_(t)
        self.graph.replay()
        return self.out


@torch.no_grad()
def generate_latents(model: UniX, reports: list[list[int]], settings: SamplerSettings, grid: tuple[int, int],
                     images: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None, progress=None, cuda_graphs: bool = True,
                     text_scales: list[float] | None = None) -> torch.Tensor:
    """Token ids of B reports -> normalised latents [B, C, h, w] (decode them with the VAE).
    On a GPU each branch set's step is captured once in a CUDA graph and replayed. text_scales: one
    text guidance scale per report (rows with different scales share every sampler step)."""
    h, w = grid
    C = model.config.vae.latent_channels
    device = model.embed_tokens.weight.device
    if noise is None:
        noise = torch.randn((len(reports), C, h, w), generator=generator).to(device)
    branches = batch_settings(settings, text_scales).guided_branches(images is not None)
    cache = encode_prompts(model, reports, h * w, images, branches)

    use_graphs = cuda_graphs and can_capture(noise.device)
    steps: dict[tuple[str, ...], VelocityStep | GraphedStep] = {}

    def velocity_fn(x, t, branches):
        if branches not in steps:
            step = VelocityStep(model, cache, x.shape[0], grid, branches)
            steps[branches] = graphed_or_eager(partial(GraphedStep, step, x), step, "sampling") if use_graphs else step
        v = steps[branches](x, torch.tensor([t], device=x.device))
        return dict(zip(branches, v.chunk(len(branches))))

    return euler_sample(velocity_fn, noise, settings, has_image=images is not None, progress=progress,
                        text_scales=text_scales)
