"""Regional torch.compile for training: each expert's two token-wise regions (`Expert.qkv` and
`Expert.update`), not the whole network, whose attention and routing change shape with every batch
(a whole-model compile's dynamic-shape backward fails an inductor stride check on CPU with torch
2.14). One compile (~45 s on 2 CPU cores) serves every layer and batch shape; measured in
docs/performance.md. Eval-mode calls (validation, decoding, sampling) stay eager."""

from __future__ import annotations

import torch

from unixcxr.model.mot import Expert
from unixcxr.model.unix import UniX


def compile_regions(model: UniX, dynamic: bool = True, **kwargs) -> None:
    """Compile every expert of `model` in place (kwargs go to torch.compile)."""
    for layer in model.layers:
        compile_expert(layer.und, dynamic=dynamic, **kwargs)
        compile_expert(layer.gen, dynamic=dynamic, **kwargs)


def compile_expert(expert: Expert, **kwargs) -> None:
    """Replace `expert.qkv` and `expert.update` by compiled versions for training. They see contiguous
    [N, H] rows of any N and hold everything but attention and routing: inductor fuses their norms,
    SwiGLU and residual adds around the GEMMs. Every expert runs the same code, so one graph serves all
    of them (parameters are graph inputs). A frozen expert of a training step (the und expert of a
    generation stage: training mode, no autograd) has graphs of its own (a second code object, so the
    grad-mode switch never recompiles the first). In eval mode the regions stay eager: N = 1 rows and
    the sampler's view layouts would each make a new graph, and the recompile limit is 8."""

    def when_training(eager, compiled, frozen):
        def run(*tensors: torch.Tensor) -> torch.Tensor:
            grad = torch.is_grad_enabled()
            if not grad and not expert.training:
                return eager(*tensors)
            rows = (t.reshape(-1, t.shape[-1]).contiguous() for t in tensors)  # one rank, one layout
            out = (compiled if grad else frozen)(*rows)
            lead = tensors[0].shape[:-1]
            return tuple(o.view(*lead, -1) for o in out) if isinstance(out, tuple) else out.view(*lead, -1)
        return run

    qkv, update = expert.qkv, expert.update
    expert.qkv = when_training(qkv, torch.compile(qkv, **kwargs), torch.compile(lambda x: qkv(x), **kwargs))
    expert.update = when_training(update, torch.compile(update, **kwargs),
                                  torch.compile(lambda x, attn: update(x, attn), **kwargs))
