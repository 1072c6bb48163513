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

from unixcxr.model.config import LanguageConfig
from unixcxr.model.embedders import apply_rotary
from unixcxr.model.linear import Linear

FULL_ATTENTION = "full"  # mask value: every query sees every key (no mask tensor needed)


class RMSNorm(nn.RMSNorm):
    """RMSNorm computed in float32 whatever the activation dtype (as LLaMA does): under bf16
    autocast the fp32 weight would otherwise push torch off its fused kernel. Under autocast the
    output is in the autocast dtype: every consumer is a projection that computes in it, and one cast
    here replaces one per projection (q, k, v; gate, up), forward and backward. Without autograd on
    a CPU, where F.rms_norm is not fused (square, mean, add, rsqrt, two products: a pass over x
    each), the mean square comes from one vector_norm reduction instead: 2.9x faster at
    [1032, 384], 6.4x at the QK-norm's [6192, 64] (2 cores; same numbers to 3e-6). With autograd
    its longer backward cancels the gain (training steps 0.95-1.09x), so training keeps F.rms_norm.
    On a GPU, rows and weight of one dtype (a bf16 model's inference) go straight to the fused
    kernel, which accumulates in float32 itself: the same outputs as the float32 round trip, every
    one equal, 1.9-3.3x faster without its two casts (H200, torch 2.11; scripts/gpu_model_check.py)."""

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


DECODE_QUERY_LIMIT = 4  # up to this many queries over a longer cache, plain matmul attention is faster


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

    def compile(self, **kwargs) -> None:
        """torch.compile the two token-wise regions, `qkv` and `update`, for training (kwargs go to
        torch.compile). They see contiguous [N, H] rows of any N and hold everything but attention
        and routing: inductor fuses their norms, SwiGLU and residual adds around the GEMMs. Every
        expert runs the same code, so one graph serves all of them (parameters are graph inputs).
        A frozen expert of a training step (the und expert of a generation stage: training mode, no
        autograd) has graphs of its own (a second code object, so the grad-mode switch never
        recompiles the first): gen_pretrain steps 1.08x over compiling the trained expert alone.
        In eval mode (validation, decoding, sampling) the regions stay eager: N = 1 rows and the
        sampler's view layouts would each make a new graph, and the recompile limit is 8."""

        def when_training(eager, compiled, frozen):
            def run(*tensors: torch.Tensor) -> torch.Tensor:
                grad = torch.is_grad_enabled()
                if not grad and not self.training:
                    return eager(*tensors)
                rows = (t.reshape(-1, t.shape[-1]).contiguous() for t in tensors)  # one rank, one layout
                out = (compiled if grad else frozen)(*rows)
                lead = tensors[0].shape[:-1]
                return tuple(o.view(*lead, -1) for o in out) if isinstance(out, tuple) else out.view(*lead, -1)
            return run

        qkv, update = self.qkv, self.update
        self.qkv = when_training(qkv, torch.compile(qkv, **kwargs), torch.compile(lambda x: qkv(x), **kwargs))
        self.update = when_training(update, torch.compile(update, **kwargs),
                                    torch.compile(lambda x, attn: update(x, attn), **kwargs))


@dataclass
class Routing:
    """Which tokens of a [B, L] grid go to which expert, padding to neither: the projections and MLPs
    (nearly all of a step's FLOPs) run on real tokens only. Between layers the residual stream stays
    split by expert (`split` once before the first layer, `merge` after the last): the und rows and
    the gen rows, each in the layout its expert runs on, so that only q/k/v (merged into the grid for
    attention) and the attention output (split back) cross between the layouts in a layer.
    The all-und / all-gen cases without padding need no gather-scatter at all (text decoding,
    latent-only steps), and a latent block at the same columns of every row (`block`) is a slice, not
    an index gather (the sampler's [soi] latents [eoi], and a generation batch padded on the left,
    [pad..] [bos] text [eos] [soi] latents [eoi]): the gen expert, the one a generation stage trains,
    sees a plain slice; with padding outside the block, `und` indexes the real tokens of the others."""

    und: torch.Tensor | None  # flat indices into the [B * L] grid; None: every non-gen token is und
    gen: torch.Tensor | None  # flat indices, or None when no token is gen or the gen tokens are the block
    all_gen: bool = False
    block: tuple[int, int] | None = None  # gen = columns [a, b) of every row, und = the rest
    und_rest: torch.Tensor | None = None  # block routing with padding: `und` as indices into the rest columns

    @classmethod
    def from_mask(cls, is_gen: torch.Tensor, valid: torch.Tensor | None = None) -> Routing:
        """is_gen, valid: [B, L] bool; valid False marks padding (None: no padding)."""
        flat = is_gen.reshape(-1)
        keep = None if valid is None or bool(valid.all()) else valid.reshape(-1)
        n_gen = int(flat.sum())
        if keep is None:
            if n_gen == 0:
                return cls(und=None, gen=None)
            if n_gen == flat.numel():
                return cls(und=None, gen=None, all_gen=True)
        block = cls.shared_block(is_gen)
        und = ~flat if keep is None else ~flat & keep
        if block is not None:  # padding is never inside the block: index the real tokens of the rest
            if keep is None:
                return cls(und=None, gen=None, block=block)
            a, b = block
            rest = torch.cat([valid[:, :a], valid[:, b:]], dim=1).reshape(-1)
            return cls(und=und.nonzero().squeeze(1), gen=None, block=block, und_rest=rest.nonzero().squeeze(1))
        gen = flat if keep is None else flat & keep
        return cls(und=und.nonzero().squeeze(1), gen=gen.nonzero().squeeze(1) if n_gen else None)

    @staticmethod
    def shared_block(is_gen: torch.Tensor) -> tuple[int, int] | None:
        """(a, b) when every row's gen tokens are exactly the columns a..b-1, else None."""
        first = is_gen[0]
        cols = first.nonzero().squeeze(1)
        if cols.numel() == 0 or not bool((is_gen == first).all()):
            return None
        a, b = int(cols[0]), int(cols[-1]) + 1
        return (a, b) if b - a == cols.numel() else None

    def split(self, x: torch.Tensor, freeze_und: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """x: [B, L, D] -> (und rows, gen rows), None where an expert has no token: [B, L', D] for
        the layouts without index gathers, else [N, D] rows (index_select, whose backward, an
        index_add, runs 5x faster on a CPU than advanced indexing's index_put). With freeze_und the
        und rows are taken without autograd."""
        if self.all_gen:
            return None, x
        if self.block is None and self.und is None:
            return x, None
        flat = x.reshape(-1, x.shape[-1])
        with torch.no_grad() if freeze_und else nullcontext():
            und = flat.index_select(0, self.und) if self.und is not None else \
                torch.cat([x[:, :self.block[0]], x[:, self.block[1]:]], dim=1)
        if self.block is not None:
            return und, x[:, self.block[0]:self.block[1]]
        return und, None if self.gen is None else flat.index_select(0, self.gen)

    def merge(self, und: torch.Tensor | None, gen: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        """The inverse of `split`: -> [B, L, D] for shape (B, L), zeros at padding."""
        if self.all_gen:
            return gen
        if self.block is None and self.und is None:
            return und
        if self.block is not None and self.und is None:
            a = self.block[0]
            return torch.cat([und[:, :a].to(gen.dtype), gen, und[:, a:].to(gen.dtype)], dim=1)
        dtype = (gen if gen is not None else und).dtype
        if self.block is not None:  # the real rest tokens into a zero [B, L - n, D], then the block between
            a, b = self.block
            rest = und.new_zeros(shape[0] * (shape[1] - b + a), und.shape[-1], dtype=dtype)
            rest = rest.index_copy_(0, self.und_rest, und.to(dtype)).view(shape[0], -1, und.shape[-1])
            return torch.cat([rest[:, :a], gen, rest[:, a:]], dim=1)
        out = und.new_zeros(shape[0] * shape[1], und.shape[-1], dtype=dtype).index_copy_(0, self.und, und.to(dtype))
        if gen is not None:
            out.index_copy_(0, self.gen, gen)
        return out.view(*shape, -1)


class KVCache:
    """Preallocated keys/values for every layer: [layers, B, kv_heads, max_len, head_dim]. New keys are
    written in place after `length`; `advance` commits them. Writing without advancing gives
    scratch space: the image sampler reuses the cached prompt at every step this way.
    With `slot` set (a one-element long tensor on the cache's device), one new column is written at
    that index and every layer attends over the whole capacity (the caller's mask hides the columns
    after it): shapes and indices that never change between steps, so a decode step can be
    replayed from a CUDA graph."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device):
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.rows = slice(None)  # which batch rows the next forward touches
        self.slot: torch.Tensor | None = None  # static writes: the column index, on the device

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [B, kv_heads, L, d] -> all keys/values so far: [B, kv_heads, length + L, d]
        # (static writes: L = 1 at `slot`, and the whole capacity back: [B, kv_heads, max_len, d])
        if self.slot is not None:
            if not isinstance(self.rows, slice):  # indexed rows would be a copy, not the cache
                raise ValueError("static KV-cache writes take every batch row (rows = slice(None))")
            keys, values = self.k[layer, self.rows], self.v[layer, self.rows]
            return keys.index_copy_(2, self.slot, k), values.index_copy_(2, self.slot, v)
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        self.k[layer, self.rows, :, self.length:end] = k
        self.v[layer, self.rows, :, self.length:end] = v
        return self.k[layer, self.rows, :, :end], self.v[layer, self.rows, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class MoTLayer(nn.Module):
    def __init__(self, cfg: LanguageConfig):
        super().__init__()
        self.cfg = cfg
        self.und = Expert(cfg)
        self.gen = Expert(cfg)

    def forward(self, x: tuple, shape: tuple[int, int], routing: Routing, rope, mask, cache: KVCache | None,
                layer_idx: int, freeze_und: bool = False, shared: int = 1, prefix: int = 0) -> tuple:
        # x: the residual stream split by expert, (und rows, gen rows) as Routing.split gives them,
        # for a [B, L] grid (shape); returns the same after this layer
        # rope: (cos, sin) [B, L, 1, d], or None for no rotation (the sampler's block, whose one
        # shared position is folded into the cached prompt keys)
        # mask: [B, 1, L, Lk] bool (True = attend), None for plain causal, or FULL_ATTENTION
        # shared: x holds the rows of one guidance branch, identical in `shared` branches: the
        # projections run once and the output has shared * B rows, branch-major (block routing only)
        # prefix: the queries of columns [0, prefix) see only keys before it and are und tokens
        # (causal_prefix; 0: no split)
        cfg = self.cfg
        nq, nkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        # with freeze_und the und expert runs without autograd: gradients stop at every one of its
        # outputs, so a generation loss can never change understanding
        und_ctx = torch.no_grad() if freeze_und else nullcontext()
        x_und, x_gen = x
        with und_ctx:
            qkv_und = self.und.qkv(x_und) if x_und is not None else (None,) * 3
        qkv_gen = self.gen.qkv(x_gen) if x_gen is not None else (None,) * 3
        # each [B, L, heads * d], rows of unit stride (Linear's skinny inference path gives transposed
        # views, which would push SDPA off its fused kernel)
        q, k, v = (routing.merge(u, g, shape) for u, g in zip(qkv_und, qkv_gen))
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        if shared > 1:
            q, k, v = (t.repeat(shared, 1, 1) for t in (q, k, v))
            x_und, x_gen = (t.repeat(shared, 1, 1) if t is not None else None for t in (x_und, x_gen))
        B, L, _ = q.shape
        q, k = q.view(B, L, nq, d), k.view(B, L, nkv, d)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, nq, L, d], [B, nkv, L, d]
        v = v.view(B, L, nkv, d).transpose(1, 2)
        if cache is not None:
            if mask is None and L > 1 and cache.length > 0:  # a causal flag would align to the wrong corner
                raise ValueError("an explicit mask is needed when several queries follow cached keys")
            k, v = cache.write(layer_idx, k, v)
        if L <= DECODE_QUERY_LIMIT and k.shape[2] > L:
            attn = decode_attention(q, k, v, None if isinstance(mask, str) else mask)
        elif 0 < prefix < L and cache is None:
            attn = prefix_attention(q, k, v, mask, prefix, freeze_und)
        else:
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if isinstance(mask, str) else mask, is_causal=mask is None and L > 1,
                enable_gqa=nq != nkv,
            )
        # the output projection's input, already in the dtype it computes in (under autocast: no round
        # trip through the residual stream's float32)
        dtype = compute_dtype(x_gen if x_gen is not None else x_und)
        attn_und, attn_gen = routing.split(attn.transpose(1, 2).reshape(B, L, nq * d).to(dtype), freeze_und)
        with und_ctx:
            x_und = self.und.update(x_und, attn_und) if x_und is not None else None
        return x_und, self.gen.update(x_gen, attn_gen) if x_gen is not None else None
