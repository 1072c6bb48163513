"""Attention over the joint sequence: one softmax for both experts' tokens (the paper's cross-modal
self-attention), with the kernel chosen by the shape of the call (`attend`): a few queries over a long
cache take two matmuls, a generation step's causal text prefix attends over its own keys only, the
rest is one fused SDPA. Why each fast path is not the obvious one: docs/performance.md."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DECODE_QUERY_LIMIT = 4  # up to this many queries over a longer cache, plain matmul attention is faster


@dataclass(frozen=True, eq=False)
class Mask:
    """Which keys each query of a forward sees. `kind`: "causal" (each query sees the keys up to its
    own column; no tensor), "full" (every key; no tensor) or "explicit" (`tensor` [B, 1, L, Lk] bool,
    True = attend). `prefix`: the leading query columns that are causal und tokens seeing only the keys
    before it (`causal_prefix`), which attention then runs over those keys alone; 0: no split."""

    kind: str
    tensor: torch.Tensor | None = None
    prefix: int = 0

    @classmethod
    def causal(cls) -> Mask:
        return cls("causal")

    @classmethod
    def full(cls) -> Mask:
        return cls("full")

    @classmethod
    def explicit(cls, tensor: torch.Tensor, prefix: int = 0) -> Mask:
        return cls("explicit", tensor, prefix)

    @classmethod
    def of_layout(cls, tensor: torch.Tensor, is_gen: torch.Tensor) -> Mask:
        """An explicit mask with its causal prefix found (a training or validation batch, no cache)."""
        return cls("explicit", tensor, causal_prefix(tensor, is_gen))


def decode_attention(q, k, v, mask):
    """Attention for a few queries over many cached keys: two matmuls. The fused SDPA kernels are
    built for long query blocks and, on CPU, cost several times more for one query.
    q: [B, nq, L, d]; k, v: [B, nkv, Lk, d]; mask: [B, 1, L, Lk] bool or None -> [B, nq, L, d]."""
    B, nq, L, d = q.shape
    nkv = k.shape[1]
    q = q.reshape(B, nkv, (nq // nkv) * L, d)  # grouped heads share their key/value head
    scores = torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5  # [B, nkv, g*L, Lk]
    if mask is not None:
        m = mask.expand(B, 1, L, -1).repeat(1, 1, nq // nkv, 1)  # [B, 1, g*L, Lk]
        scores = scores.masked_fill(~m, float("-inf"))
    out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v)
    return out.reshape(B, nq, L, d)


def causal_prefix(mask: torch.Tensor, is_gen: torch.Tensor) -> int:
    """The number of leading columns whose queries attend causally (to no later key) and hold no gen
    token, in every row: a generation layout's padding and text before its image block.
    mask: [B, 1, L, L] bool; is_gen: [B, L] bool."""
    L = mask.shape[-1]
    idx = torch.arange(L, device=mask.device)
    sees_later = (mask[:, 0] & (idx[None, :] > idx[:, None])).any(dim=2).any(dim=0)  # [L] per query column
    stop = sees_later | is_gen.any(dim=0)
    return int(stop.int().argmax()) if bool(stop.any()) else L


def prefix_attention(q, k, v, mask, prefix: int, freeze_und: bool) -> torch.Tensor:
    """Attention where the queries before `prefix` see only the keys before it (causal_prefix): they
    run over those keys alone, and without autograd when they are a frozen expert's, which is then
    exact too (their outputs feed only its no-grad update); the rest attend to every key. A
    generation step's text queries skip the image keys' scores this way, forward and backward.
    q: [B, nq, L, d]; k, v: [B, nkv, L, d]; mask: [B, 1, L, L] bool -> [B, nq, L, d]."""
    gqa, c = q.shape[1] != k.shape[1], prefix
    with torch.no_grad() if freeze_und else nullcontext():
        head = F.scaled_dot_product_attention(q[:, :, :c], k[:, :, :c], v[:, :, :c],
                                              attn_mask=mask[..., :c, :c], enable_gqa=gqa)
    tail = F.scaled_dot_product_attention(q[:, :, c:], k, v, attn_mask=mask[..., c:, :], enable_gqa=gqa)
    return torch.cat([head, tail], dim=2)


def attend(q, k, v, mask: Mask, freeze_und: bool = False, cached: bool = False) -> torch.Tensor:
    """q: [B, nq, L, d]; k, v: [B, nkv, Lk, d] -> [B, nq, L, d], picking the kernel: a few queries over
    a longer cache take two matmuls, a causal und prefix attends over its own keys, the rest is one
    SDPA. cached: the keys include a cache's earlier columns (no prefix split then)."""
    L = q.shape[2]
    if L <= DECODE_QUERY_LIMIT and k.shape[2] > L:
        return decode_attention(q, k, v, mask.tensor)
    if 0 < mask.prefix < L and not cached:
        return prefix_attention(q, k, v, mask.tensor, mask.prefix, freeze_und)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.tensor, is_causal=mask.kind == "causal" and L > 1,
                                          enable_gqa=q.shape[1] != k.shape[1])
