"""Which tokens go to which expert of a Mixture-of-Transformers layer, and the residual stream split
by expert between layers."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch


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
    def all_und(cls) -> Routing:
        """Every token to the understanding expert (text decoding)."""
        return cls(und=None, gen=None)

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
        the layouts without index gathers, else [N, D] rows (index_select: its backward, an
        index_add, is faster than advanced indexing's index_put, docs/performance.md). With freeze_und the
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
