"""Image -> report for a batch. Prompts are left-padded so that every row's next token lands in
the same column; keys/values live in a preallocated cache (written in place, never re-scattered);
each row stops at its own end-of-sequence token. On a GPU every decode step after the prompt is
replayed from one CUDA graph (a step of the released-size model is otherwise launch-bound)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from unixcxr.inference.graphs import can_capture, capture, graphed_or_eager
from unixcxr.model.attention import Mask
from unixcxr.model.cache import KVCache
from unixcxr.model.routing import Routing
from unixcxr.model.sequence import LATENT, SampleLayout, collate, understanding_layout
from unixcxr.model.unix import UniX
from unixcxr.validation import check


@dataclass(frozen=True)
class DecodingSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy (the released evaluation setting)
    top_p: float = 1.0
    ignore_eos: bool = False  # always write max_new_tokens (benchmarks)

    def __post_init__(self):
        """The shared rules of unixcxr.validation: a negative temperature or top_p 0 would decode
        garbage or nothing, max_new_tokens < 1 nothing at all."""
        for name in ("max_new_tokens", "temperature", "top_p"):
            check(name, getattr(self, name))


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


class DecodeStep:
    """One token per row through the decoder over the cache's whole capacity: its inputs live in
    fixed buffers (`token`, `position`, `slot`: the column it writes) and the mask hides the padding
    and the columns after `slot`, so nothing changes shape or syncs with the host between steps.
    The growing cache's numbers (masked keys get zero weight: in float32 every logit equal on an
    H200; bf16 rounds the longer reductions differently); it reads max_len keys per step instead of
    length, which is why only the graphed path uses it."""

    def __init__(self, model: UniX, cache: KVCache, key_valid: torch.Tensor):
        B, device = key_valid.shape[0], key_valid.device
        self.model, self.cache, self.key_valid = model, cache, key_valid  # key_valid: [B, max_len] bool
        self.token = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(B, 1, dtype=torch.long, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.columns = torch.arange(cache.max_len, device=device)
        self.routing = Routing.all_und()  # every token is text

    def set(self, token: torch.Tensor, position: torch.Tensor, column: int) -> None:
        self.token.copy_(token.view(-1, 1))
        self.position.copy_(position)
        self.slot.fill_(column)

    def __call__(self) -> torch.Tensor:
        mask = Mask.explicit((self.key_valid & (self.columns <= self.slot))[:, None, None, :])  # [B, 1, 1, max_len]
        h = self.model.embed_tokens(self.token)
        h, _ = self.model.run_layers(h, self.routing, self.position, mask, self.cache.view(slot=self.slot))
        return self.model.text_logits(h[:, -1])


class GraphedDecodeStep:
    """A DecodeStep captured once in a CUDA graph and replayed: one launch per token instead of
    ~1,500 (24 layers of norms, projections, RoPE and attention at batch 1)."""

    def __init__(self, step: DecodeStep):
        self.step = step
        # the warm-ups write only the column at `slot`, which the first real step rewrites before reading it
        self.graph, self.logits = capture(step)

    def set(self, token: torch.Tensor, position: torch.Tensor, column: int) -> None:
        self.step.set(token, position, column)

    def __call__(self) -> torch.Tensor:
        self.graph.replay()
        return self.logits.clone()  # the graph's output buffer is overwritten by the next replay


GRAPH_MIN_TOKENS = 8  # capturing costs about three eager steps: below this, decode eagerly


def _layouts(model: UniX, prompts: list[list[int]]) -> list[SampleLayout]:
    cfg = model.config
    bos = cfg.conventions.prompt_bos
    return [understanding_layout(cfg.tokens, cfg.vision.num_tokens, p, None, bos) for p in prompts]


def prefill(model: UniX, images: torch.Tensor, prompts: list[list[int]], room: int):
    """Images and instruction prompts once through the model, left-padded: (the batch, a cache holding
    their keys and values with `room` more columns, the next token's logits [B, V])."""
    device = model.embed_tokens.weight.device
    batch = collate(_layouts(model, prompts), left_pad=True).to(device)
    cache = model.new_cache(len(prompts), batch.shape[1] + room)
    h = model.embed(batch, model.encode_images(images.to(device)))
    routing = Routing.from_mask(batch.kind == LATENT)
    h, _ = model.run_layers(h, routing, batch.position, Mask.explicit(batch.attention_mask()), cache)
    cache.advance(batch.shape[1])
    return batch, cache, model.text_logits(h[:, -1])


def decode_step(model: UniX, tokens: torch.Tensor, position: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache) -> torch.Tensor:
    """One new token per row ([B] ids at [B, 1] positions) over every cached key its mask allows
    (None: all), written into the cache's next column -> the next token's logits [B, V]."""
    h = model.embed_tokens(tokens[:, None])
    mask = Mask.causal() if mask is None else Mask.explicit(mask)  # one query: causal = every cached key
    h, _ = model.run_layers(h, Routing.all_und(), position, mask, cache)
    return model.text_logits(h[:, -1])


@torch.no_grad()
def generate_reports(model: UniX, images: torch.Tensor, prompts: list[list[int]],
                     settings: DecodingSettings = DecodingSettings(), generator: torch.Generator | None = None,
                     return_logits: bool = False, on_token: Callable[[torch.Tensor], None] | None = None,
                     cuda_graphs: bool = True, static: bool | None = None):
    """images: [B, 3, S, S] normalised; prompts: B instruction token lists. Returns B lists of report
    token ids (without eos), and with return_logits the [B, V] logits of every step. on_token([B] ids)
    is called after every step (token streaming). On a GPU the decode steps replay one CUDA graph,
    captured per call (cuda_graphs=False: eager). static: decode over the fixed-shape cache
    (DecodeStep) even without graphs; by default only when graphed (the growing cache reads fewer
    keys)."""
    B = images.shape[0]
    if len(prompts) != B:
        raise ValueError(f"{B} images but {len(prompts)} prompts")
    eos, pad = model.config.tokens.eos, model.config.tokens.pad
    device = model.embed_tokens.weight.device
    batch, cache, logits = prefill(model, images, prompts, settings.max_new_tokens)
    Lp = batch.shape[1]
    key_valid = torch.ones(B, cache.max_len, dtype=torch.bool, device=device)
    key_valid[:, :Lp] = batch.segment >= 0
    padded = not bool(key_valid[:, :Lp].all())
    position = batch.position[:, -1:] + 1  # [B, 1]
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    graphs = cuda_graphs and can_capture(device) and settings.max_new_tokens >= GRAPH_MIN_TOKENS
    static = graphs or bool(static)  # a graph needs the fixed-shape step
    step_fn = None  # the fixed-shape step, built at the first decode step
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
        if cache.length >= cache.max_len:
            raise ValueError(f"KV cache overflow: {cache.length + 1} tokens > capacity {cache.max_len}")
        if static:
            if step_fn is None:  # set before a capture: its warm-ups write the column at the slot
                eager = DecodeStep(model, cache, key_valid)
                eager.set(token, position, cache.length)
                step_fn = graphed_or_eager(partial(GraphedDecodeStep, eager), eager, "decoding") if graphs else eager
            else:
                step_fn.set(token, position, cache.length)
            logits = step_fn()
        else:
            mask = key_valid[:, None, None, :cache.length + 1] if padded else None
            logits = decode_step(model, token, position, mask, cache)
        cache.advance(1)
        position = position + 1
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
