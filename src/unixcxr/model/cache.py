"""Keys and values of earlier tokens, preallocated for every layer (decoding and the image sampler's
cached prompt)."""

from __future__ import annotations

import torch


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
