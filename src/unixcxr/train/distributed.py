"""Scale-out with PyTorch's own engine. The same code runs single-process and under
`torchrun --nproc-per-node N -m unixcxr train ...`: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK,
we join the process group (NCCL on GPU, gloo on CPU) and wrap the network with DDP or FSDP2
(`torch.distributed.fsdp.fully_shard`: each decoder layer and ViT block is one shard unit)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

FSDP_PRESETS = ("unix",)  # presets too large for one replica of weights + AdamW state per GPU


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | None = None) -> torch.device:
    """`auto` (or None): the GPU when there is one, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no GPU; use --device cpu")
    return device


def init_distributed(device_name: str | None = None) -> DistEnv:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise one process."""
    device = pick_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device
                                if device.type == "cuda" else None)
    return DistEnv(rank, world, local_rank, device)


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def choose_strategy(requested: str, env: DistEnv, preset_name: str) -> str:
    if requested != "auto":
        return requested
    if not env.distributed:
        return "single"
    return "fsdp" if preset_name in FSDP_PRESETS else "ddp"


def wrap(model: nn.Module, strategy: str, env: DistEnv, shard_units: list[nn.Module] = ()) -> nn.Module:
    """DDP: one full replica per rank, gradients all-reduced (averaged). FSDP2: parameters,
    gradients and optimizer state sharded; `shard_units` (decoder layers, ViT blocks) are
    gathered one at a time. Either way the returned module is called like the original, and
    its parameters keep their names."""
    if strategy == "single" or not env.distributed:
        return model
    if strategy == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if env.device.type == "cuda" else MixedPrecisionPolicy()
        with torch.no_grad():  # FSDP2 shards dense storage: channels-last conv weights (the CNN encoder) first
            for p in model.parameters():
                if not p.is_contiguous():
                    p.data = p.data.contiguous()
        for unit in shard_units:
            fully_shard(unit, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    raise ValueError(f"unknown strategy {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, sync: bool):
    """Context for one micro-batch's backward: skip the gradient all-reduce except on the last
    micro-batch of a step (accumulation), as DDP's no_sync and FSDP2's set_requires_gradient_sync do."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if sync else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def all_reduce_mean(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's value of obj on every rank (e.g. a measured peak FLOP rate)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A parameter or optimizer state as one whole tensor (gathers FSDP2 shards; a collective)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like_param(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out like `param` (re-sharded for FSDP2), on its device."""
    if hasattr(param, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements)
    return full.to(param.device, param.dtype)
