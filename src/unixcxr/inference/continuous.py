"""Continuous batching of report decoding: requests join a running decode batch between tokens and
leave it when done, each row with its own prompt length, sampling settings and stopping rule.

The batch shares one key/value cache whose columns are aligned on the right: every row's next token
lands in the same column (as in `generate_reports`' left padding). A newcomer is prefilled on its
own (its image and prompt, one forward) and copied into the cache so that its prompt ends where the
running rows' last token is; each row keeps its own RoPE positions and a mask of its valid columns,
so the numbers each row sees are those of decoding it alone (greedy tokens equal
`generate_reports`', tested). Columns that no running row needs any more are dropped at each
admission, so the cache never holds more than the longest running row plus the tokens it may still
write. A request that finishes leaves at once; its row is removed from the cache.

Used by the server (serve/batcher.py): between two decode steps it admits what arrived, so a report
never waits for a batch that is already decoding to end."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unixcxr.inference.report import DecodingSettings, _strip, decode_step, prefill, sample_next
from unixcxr.model.cache import KVCache
from unixcxr.model.unix import UniX


@dataclass(eq=False)  # a request is itself, not its tensors' values
class ReportRequest:
    """One report to decode: image [3, S, S] as the model reads it, instruction token ids, its own
    decoding settings and (when sampling) its own generator. `handle` is the caller's (a Future)."""

    image: torch.Tensor
    prompt: list[int]
    settings: DecodingSettings = DecodingSettings()
    generator: torch.Generator | None = None
    handle: object = None
    tokens: list[int] = field(default_factory=list)


class ContinuousDecoder:
    """Rows join with `admit`, every `step` writes one token for each running row and returns the
    requests that finished (their `tokens` hold the report ids, without eos or padding)."""

    def __init__(self, model: UniX):
        self.model = model
        cfg = model.config
        self.eos, self.pad = cfg.tokens.eos, cfg.tokens.pad
        self.device = model.embed_tokens.weight.device
        self.requests: list[ReportRequest] = []
        self.cache: KVCache | None = None
        self.key_valid = torch.zeros(0, 0, dtype=torch.bool)  # [R, capacity] True where a row has a key
        self.position = torch.zeros(0, 1, dtype=torch.long)  # [R, 1] RoPE position of each row's next token
        self.logits: torch.Tensor | None = None  # [R, V] the next token's logits
        self.padded = False  # some row has a column without a key: decode steps need the mask

    @property
    def active(self) -> int:
        return len(self.requests)

    @property
    def length(self) -> int:
        return 0 if self.cache is None else self.cache.length

    @torch.no_grad()
    def admit(self, requests: list[ReportRequest]) -> None:
        """Prefill the newcomers (one forward over their images and prompts) and join them to the batch."""
        if not requests:
            return
        images = torch.stack([r.image for r in requests]).to(dtype=self.model.embed_tokens.weight.dtype)
        batch, cache, logits = prefill(self.model, images, [r.prompt for r in requests], 0)
        self._join(requests, cache, batch.segment >= 0, batch.position[:, -1:] + 1, logits)

    def _join(self, requests, cache: KVCache, valid: torch.Tensor, position: torch.Tensor, logits) -> None:
        # keep the running rows' columns from the first one any of them still needs
        old = self.cache
        start = 0
        if old is not None and self.requests:
            used = self.key_valid[:, :old.length]
            start = int(used.any(0).nonzero()[0]) if bool(used.any()) else old.length
        kept = 0 if old is None else old.length - start
        T = max(kept, cache.length)  # the column after every row's last key
        need = max(r.settings.max_new_tokens - len(r.tokens) for r in self.requests + requests)
        R, n = len(self.requests), len(requests)
        merged = self.model.new_cache(R + n, T + need)
        key_valid = torch.ones(R + n, merged.max_len, dtype=torch.bool, device=self.device)
        key_valid[:, :T] = False
        if R:
            merged.k[:, :R, :, T - kept:T] = old.k[:, :, :, start:old.length]
            merged.v[:, :R, :, T - kept:T] = old.v[:, :, :, start:old.length]
            key_valid[:R, T - kept:T] = self.key_valid[:, start:old.length]
        merged.k[:, R:, :, T - cache.length:T] = cache.k[:, :, :, :cache.length]
        merged.v[:, R:, :, T - cache.length:T] = cache.v[:, :, :, :cache.length]
        key_valid[R:, T - cache.length:T] = valid
        merged.advance(T)
        self.cache, self.key_valid = merged, key_valid
        self.padded = not bool(key_valid[:, :T].all())
        self.position = torch.cat([self.position.to(self.device), position]) if R else position
        self.logits = torch.cat([self.logits, logits]) if R else logits
        self.requests = self.requests + list(requests)

    def _sample(self) -> torch.Tensor:
        # one token per row, each by its own settings; greedy rows together
        tokens = self.logits.argmax(-1)
        for i, r in enumerate(self.requests):
            if r.settings.temperature > 0:
                tokens[i] = sample_next(self.logits[i:i + 1], r.settings, r.generator)[0]
        return tokens

    @torch.no_grad()
    def step(self) -> list[ReportRequest]:
        """One token for every running row; the requests that finished with it leave the batch."""
        if not self.requests:
            return []
        tokens = self._sample()
        done = []
        for r, token in zip(self.requests, tokens.tolist()):
            r.tokens.append(token)
            done.append((token == self.eos and not r.settings.ignore_eos)
                        or len(r.tokens) >= r.settings.max_new_tokens)
        finished = [r for r, d in zip(self.requests, done) if d]
        for r in finished:
            r.tokens = _strip([r.tokens], self.eos, self.pad)[0]
        keep = torch.tensor([not d for d in done], device=self.device)
        if finished:
            self._keep(keep)
            tokens = tokens[keep]
        if self.requests:
            self._decode(tokens)
        return finished

    def _keep(self, keep: torch.Tensor) -> None:
        rows = keep.nonzero().squeeze(1)
        self.requests = [r for r, k in zip(self.requests, keep.tolist()) if k]
        if not self.requests:
            self.cache, self.logits = None, None
            self.key_valid = torch.zeros(0, 0, dtype=torch.bool)
            self.position = torch.zeros(0, 1, dtype=torch.long)
            return
        cache = self.cache
        cache.k, cache.v = cache.k.index_select(1, rows), cache.v.index_select(1, rows)
        self.key_valid, self.position = self.key_valid[rows], self.position[rows]
        self.logits = self.logits[rows]
        self.padded = not bool(self.key_valid[:, :cache.length].all())

    def _decode(self, tokens: torch.Tensor) -> None:
        # one new token per running row attends to every valid cached key of its row
        cache = self.cache
        if cache.length >= cache.max_len:
            raise ValueError(f"KV cache overflow: {cache.length + 1} tokens > capacity {cache.max_len}")
        # a row alone or rows of equal prompts without padding take the maskless kernel
        mask = self.key_valid[:, None, None, :cache.length + 1] if self.padded else None
        self.logits = decode_step(self.model, tokens, self.position, mask, cache)
        cache.advance(1)
        self.position = self.position + 1


def decode_continuously(model: UniX, requests: list[ReportRequest], arrivals: list[int] | None = None,
                        max_rows: int = 16) -> list[list[int]]:
    """Decode `requests` with continuous batching, request i joining at step arrivals[i] (default: all
    at once) while at most max_rows decode together. Returns each request's report ids, in order.
    (The server does the same with arrivals decided by its clients; tests and benchmarks use this.)"""
    arrivals = [0] * len(requests) if arrivals is None else list(arrivals)
    order = sorted(range(len(requests)), key=lambda i: arrivals[i])
    engine, step, waiting = ContinuousDecoder(model), 0, list(order)
    while waiting or engine.active:
        ready = [i for i in waiting if arrivals[i] <= step][: max_rows - engine.active]
        if ready:
            engine.admit([requests[i] for i in ready])
            waiting = [i for i in waiting if i not in ready]
        engine.step()
        step += 1
    return [r.tokens for r in requests]
