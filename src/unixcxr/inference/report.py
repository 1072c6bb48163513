"""Image -> report for a batch. Prompts are left-padded so that every row's next token lands in
the same column; keys/values live in a preallocated cache (written in place, never re-scattered);
each row stops at its own end-of-sequence token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unixcxr.model.sequence import LATENT, SampleLayout, collate, understanding_layout
from unixcxr.model.unix import UniX


@dataclass(frozen=True)
class DecodingSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy (the released evaluation setting)
    top_p: float = 1.0
    ignore_eos: bool = False  # always write max_new_tokens (benchmarks)


def sample_next(logits: torch.Tensor, settings: DecodingSettings, generator=None) -> torch.Tensor:
    # logits: [B, V] -> [B]
    if settings.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > settings.top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _layouts(model: UniX, prompts: list[list[int]]) -> list[SampleLayout]:
    cfg = model.config
    return [understanding_layout(cfg.tokens, cfg.vision.num_tokens, p, None) for p in prompts]


@torch.no_grad()
def generate_reports(model: UniX, images: torch.Tensor, prompts: list[list[int]],
                     settings: DecodingSettings = DecodingSettings(), generator: torch.Generator | None = None,
                     return_logits: bool = False, on_token: Callable[[torch.Tensor], None] | None = None):
    """images: [B, 3, S, S] normalised; prompts: B instruction token lists. Returns B lists of report
    token ids (without eos), and with return_logits the [B, V] logits of every step. on_token([B] ids)
    is called after every step (token streaming)."""
    B = images.shape[0]
    if len(prompts) != B:
        raise ValueError(f"{B} images but {len(prompts)} prompts")
    eos, pad = model.config.tokens.eos, model.config.tokens.pad
    device = model.embed_tokens.weight.device
    batch = collate(_layouts(model, prompts), left_pad=True).to(device)
    Lp = batch.shape[1]
    cache = model.new_cache(B, Lp + settings.max_new_tokens)
    # prefill: the whole prompt once
    h = model.embed(batch, model.encode_images(images.to(device)))
    h, _ = model.run_layers(h, batch.kind == LATENT, batch.position, batch.attention_mask(), cache)
    cache.advance(Lp)
    logits = model.text_logits(h[:, -1])
    key_valid = torch.ones(B, cache.max_len, dtype=torch.bool, device=device)
    key_valid[:, :Lp] = batch.segment >= 0
    padded = not bool(key_valid[:, :Lp].all())
    position = batch.position[:, -1:] + 1  # [B, 1]
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    tokens, step_logits = [], []
    for step in range(settings.max_new_tokens):
        if return_logits:
            step_logits.append(logits.float())
        token = sample_next(logits, settings, generator)
        token = torch.where(finished, torch.full_like(token, pad), token)
        tokens.append(token)
        if on_token is not None:
            on_token(token)
        if not settings.ignore_eos:
            finished |= token == eos
        if bool(finished.all()) or step == settings.max_new_tokens - 1:
            break
        # decode: one new token per row attends to every cached key of its row
        h = model.embed_tokens(token[:, None])
        mask = key_valid[:, None, None, :cache.length + 1] if padded else None
        h, _ = model.run_layers(h, torch.zeros_like(finished)[:, None], position, mask, cache)
        cache.advance(1)
        position = position + 1
        logits = model.text_logits(h[:, -1])
    reports = _strip(torch.stack(tokens, 1).tolist(), eos, pad)
    return (reports, step_logits) if return_logits else reports


@torch.no_grad()
def generate_reports_uncached(model: UniX, images: torch.Tensor, prompts: list[list[int]],
                              settings: DecodingSettings = DecodingSettings()) -> list[list[int]]:
    """Reference decoder without a cache: the whole sequence is recomputed for every token (the cost
    the cache removes; used by tests and benchmarks). Greedy only."""
    device = model.embed_tokens.weight.device
    vit = model.encode_images(images.to(device))
    eos = model.config.tokens.eos
    layouts = _layouts(model, prompts)
    done = [False] * len(layouts)
    out: list[list[int]] = [[] for _ in layouts]
    for _ in range(settings.max_new_tokens):
        batch = collate(layouts, left_pad=True).to(device)
        h, _ = model.hidden_states(batch, vit)
        next_tokens = model.text_logits(h[:, -1]).argmax(-1).tolist()
        for i, tok in enumerate(next_tokens):
            if not done[i]:
                layouts[i].text([tok])
                out[i].append(tok)
                done[i] = tok == eos
        if all(done):
            break
    return _strip(out, eos, model.config.tokens.pad)


def _strip(rows: list[list[int]], eos: int, pad: int) -> list[list[int]]:
    out = []
    for row in rows:
        row = row[: row.index(eos)] if eos in row else row
        out.append([t for t in row if t != pad])
    return out
