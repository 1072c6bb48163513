"""Keys and values of earlier tokens, preallocated for every layer (decoding and the image sampler's
cached prompt), and the view of them one forward reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class KVCache:
    """Preallocated keys/values for every layer: [layers, B, kv_heads, max_len, head_dim]. New keys are
    written in place after `length`; `advance` commits them. Writing without advancing gives
    scratch space: the image sampler reuses the cached prompt at every step this way. A forward that
    touches only some rows, or writes at a fixed column, takes a `view`."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device):
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def view(self, rows: slice | torch.Tensor = slice(None), slot: torch.Tensor | None = None) -> CacheView:
        return CacheView(self, rows, slot)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, rows: slice | torch.Tensor = slice(None),
              slot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [B, kv_heads, L, d] -> all keys/values so far: [B, kv_heads, length + L, d]
        # (static writes: L = 1 at `slot`, and the whole capacity back: [B, kv_heads, max_len, d])
        if slot is not None:
            if not isinstance(rows, slice):  # indexed rows would be a copy, not the cache
                raise ValueError("static KV-cache writes take every batch row (rows = slice(None))")
            keys, values = self.k[layer, rows], self.v[layer, rows]
            return keys.index_copy_(2, slot, k), values.index_copy_(2, slot, v)
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        self.k[layer, rows, :, self.length:end] = k
        self.v[layer, rows, :, self.length:end] = v
        return self.k[layer, rows, :, :end], self.v[layer, rows, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


@dataclass(frozen=True, eq=False)
class CacheView:
    """What one forward reads and writes of a KVCache: the batch `rows` it runs on (the image sampler's
    branches of a prompt cache), and for static writes `slot` (a one-element long tensor on the cache's
    device): one new column is written at that index and every layer attends over the whole capacity
    (the caller's mask hides the columns after it): shapes and indices that never change between
    steps, so a decode step can be replayed from a CUDA graph."""

    cache: KVCache
    rows: slice | torch.Tensor = field(default_factory=lambda: slice(None))
    slot: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.cache.length

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.write(layer, k, v, self.rows, self.slot)
