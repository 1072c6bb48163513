"""nn.Linear with one CPU inference path for a skinny batch of rows (a decode step of a batch of
reports: one token per row).

For 9 to 48 rows of fp32 without autograd, MKL's sgemm behind F.linear (x W^T) is slower than the
same product with the roles swapped, (W x^T)^T (measured in docs/performance.md). The result is the
transposed view (copying it back to rows costs more than its consumers lose on
strides). `benchmarks/bench_decode.py` measures both paths in one run on any machine; set
SKINNY_ROWS = None to turn the path off. Training, GPUs, other dtypes and compiled graphs always
run F.linear. Parameters and state-dict keys are nn.Linear's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SKINNY_ROWS: tuple[int, int] | None = (9, 48)  # inclusive row range of the swapped product; None: off


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or SKINNY_ROWS is None or x.device.type != "cpu" \
                or x.dtype != torch.float32:
            return F.linear(x, self.weight, self.bias)
        rows = x.numel() // self.in_features
        if not SKINNY_ROWS[0] <= rows <= SKINNY_ROWS[1]:
            return F.linear(x, self.weight, self.bias)
        xt = x.reshape(rows, self.in_features).t()
        out = torch.mm(self.weight, xt) if self.bias is None else torch.addmm(self.bias[:, None], self.weight, xt)
        return out.t().reshape(*x.shape[:-1], self.out_features)
