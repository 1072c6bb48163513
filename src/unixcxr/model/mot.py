"""The Mixture-of-Transformers decoder: every layer holds two full sets of weights, the understanding
expert (und: text, ViT tokens, image markers) and the generation expert (gen: VAE latent tokens).
Each token goes through its own expert's norms, projections and MLP; attention is ONE softmax over
the joint sequence (the paper's cross-modal self-attention)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unixcxr.model.attention import Mask, attend
from unixcxr.model.cache import CacheView, KVCache
from unixcxr.model.config import LanguageConfig
from unixcxr.model.embedders import apply_rotary
from unixcxr.model.linear import Linear
from unixcxr.model.routing import Routing


class RMSNorm(nn.RMSNorm):
    """RMSNorm computed in float32 whatever the activation dtype (as LLaMA does), its output in the
    dtype the next projection computes in. Two fast paths, measured in docs/performance.md: a bf16
    model on a GPU goes straight to the fused kernel (it accumulates in float32 itself), and without
    autograd on a CPU the mean square comes from one vector_norm reduction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x)
        if x.is_cuda and dtype == x.dtype and (self.weight is None or self.weight.dtype == dtype):
            return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        weight = self.weight.float() if self.weight is not None else None
        xf = x.float()
        if x.device.type != "cpu" or torch.is_grad_enabled() or len(self.normalized_shape) != 1:
            return F.rms_norm(xf, self.normalized_shape, weight, self.eps).to(dtype)
        n = self.normalized_shape[0]
        eps = torch.finfo(torch.float32).eps if self.eps is None else self.eps
        scale = torch.rsqrt(torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square() / n + eps)
        out = xf * scale
        return (out * weight if weight is not None else out).to(dtype)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the next projection computes x in: autocast's when it is on for x's device, else x's."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Expert(nn.Module):
    """One branch's weights for one layer (pre-norm attention projections, QK-norm, SwiGLU)."""

    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        H, d = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, d
        self.attn_norm = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.q_proj = Linear(H, cfg.num_heads * d, bias=cfg.qkv_bias)
        self.k_proj = Linear(H, cfg.num_kv_heads * d, bias=cfg.qkv_bias)
        self.v_proj = Linear(H, cfg.num_kv_heads * d, bias=cfg.qkv_bias)
        self.q_norm = RMSNorm(d, eps=cfg.rms_norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(d, eps=cfg.rms_norm_eps) if cfg.qk_norm else nn.Identity()
        self.o_proj = Linear(cfg.num_heads * d, H, bias=False)
        self.mlp_norm = RMSNorm(H, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(H, cfg.intermediate_size)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: [N, H] -> q [N, heads * head_dim], k and v [N, kv_heads * head_dim]; q and k normalised
        h = self.attn_norm(x)
        q = self.q_norm(self.q_proj(h).unflatten(-1, (self.num_heads, self.head_dim)))
        k = self.k_norm(self.k_proj(h).unflatten(-1, (self.num_kv_heads, self.head_dim)))
        return q.flatten(-2), k.flatten(-2), self.v_proj(h)

    def update(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        # residual stream after attention output projection and MLP: [N, H]
        x = x + self.o_proj(attn)
        return x + self.mlp(self.mlp_norm(x))


@dataclass(frozen=True, eq=False)
class LayerContext:
    """What every layer of one forward shares."""

    shape: tuple[int, int]  # the [B, L] grid of the residual stream
    routing: Routing  # which tokens go to which expert
    rope: tuple[torch.Tensor, torch.Tensor] | None  # (cos, sin) [B, L, 1, d]; None: no rotation (the
    # sampler's block, whose one shared position is folded into the cached prompt keys)
    mask: Mask
    cache: KVCache | CacheView | None = None
    freeze_und: bool = False  # the und expert runs without autograd: a generation loss never reaches it
    shared: int = 1  # x holds one guidance branch's rows, the input of `shared` branches: the projections
    # run once and the output has shared * B rows, branch-major (block routing only)


class MoTLayer(nn.Module):
    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.cfg = cfg
        self.und = Expert(cfg)
        self.gen = Expert(cfg)

    def forward(self, x: tuple, ctx: LayerContext, layer_idx: int) -> tuple:
        """x: the residual stream split by expert, (und rows, gen rows) as Routing.split gives them;
        returns the same after this layer: each token through its own expert's projections and MLP,
        one attention over the joint sequence."""
        cfg, routing = self.cfg, ctx.routing
        nq, nkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        und_ctx = torch.no_grad() if ctx.freeze_und else nullcontext()
        x_und, x_gen = x
        with und_ctx:
            qkv_und = self.und.qkv(x_und) if x_und is not None else (None,) * 3
        qkv_gen = self.gen.qkv(x_gen) if x_gen is not None else (None,) * 3
        # each [B, L, heads * d], rows of unit stride (Linear's skinny inference path gives transposed
        # views, which would push SDPA off its fused kernel)
        q, k, v = (routing.merge(u, g, ctx.shape) for u, g in zip(qkv_und, qkv_gen))
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        if ctx.shared > 1:
            q, k, v = (t.repeat(ctx.shared, 1, 1) for t in (q, k, v))
            x_und, x_gen = (t.repeat(ctx.shared, 1, 1) if t is not None else None for t in (x_und, x_gen))
        B, L, _ = q.shape
        q, k = q.view(B, L, nq, d), k.view(B, L, nkv, d)
        if ctx.rope is not None:
            q, k = apply_rotary(q, *ctx.rope), apply_rotary(k, *ctx.rope)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, nq, L, d], [B, nkv, L, d]
        v = v.view(B, L, nkv, d).transpose(1, 2)
        if ctx.cache is not None:
            if ctx.mask.kind == "causal" and L > 1 and ctx.cache.length > 0:  # would align to the wrong corner
                raise ValueError("an explicit mask is needed when several queries follow cached keys")
            k, v = ctx.cache.write(layer_idx, k, v)
        attn = attend(q, k, v, ctx.mask, ctx.freeze_und, cached=ctx.cache is not None)
        # the output projection's input, already in the dtype it computes in (under autocast: no round
        # trip through the residual stream's float32)
        dtype = compute_dtype(x_gen if x_gen is not None else x_und)
        attn_und, attn_gen = routing.split(attn.transpose(1, 2).reshape(B, L, nq * d).to(dtype), ctx.freeze_und)
        with und_ctx:
            x_und = self.und.update(x_und, attn_und) if x_und is not None else None
        return x_und, self.gen.update(x_gen, attn_gen) if x_gen is not None else None
