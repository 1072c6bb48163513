"""nn.Linear with a faster path for decoding on a CPU.

Linear computes x @ W^T with W stored [out, in]. For a few rows (one token per report while
decoding) CPU BLAS runs that transposed-operand product far below its speed on a contiguous
[in, out] operand: at 16 rows of width 384 -> 1024, 1.5-3.5x slower on the 2-core machine we measured
(benchmarks/bench_decode.py prints the ratio). So, without autograd and for at most ROW_LIMIT rows on
a CPU, `Linear` multiplies by a cached contiguous W^T. The cache follows the weight's version
counter, so optimizer steps, `load_state_dict` and `copy_` invalidate it; the state dict and
every other path are those of nn.Linear. Cost: one extra copy of each such weight while it is used
for decoding (`drop_transposed` frees it), so weights above MAX_WEIGHT_ELEMENTS (the `unix` preset's
projections: 6 GB more in fp32) keep the plain product.
Measured in the decoding benchmark (small preset, 2 threads, best of 5): 1.06x per token at batch 16,
1.00x at batch 1; the single products gain more on their own (down projection 3.5x at 16 rows)."""

from __future__ import annotations

import torch
from torch import nn

ROW_LIMIT = 64  # above this many rows the plain product is as fast
MAX_WEIGHT_ELEMENTS = 4 * 2**20  # larger weights are not duplicated


class Linear(nn.Linear):
    _transposed: torch.Tensor | None = None
    _transposed_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or torch.is_grad_enabled() or x.dtype != self.weight.dtype
                or x.numel() > ROW_LIMIT * self.in_features or self.weight.numel() > MAX_WEIGHT_ELEMENTS):
            return super().forward(x)
        out = torch.matmul(x, self.transposed_weight())
        return out + self.bias if self.bias is not None else out

    def transposed_weight(self) -> torch.Tensor:
        """W^T as a contiguous [in, out] tensor, rebuilt when the weight has changed."""
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, tuple(w.shape))
        if self._transposed is None or self._transposed_key != key:
            self._transposed = w.detach().t().contiguous()
            self._transposed_key = key
        return self._transposed

    def drop_transposed(self) -> None:
        self._transposed = self._transposed_key = None


def drop_transposed(module: nn.Module) -> None:
    """Free every cached W^T under module (they are rebuilt on the next decoding step)."""
    for m in module.modules():
        if isinstance(m, Linear):
            m.drop_transposed()
