"""The generic training loop shared by every stage (and by the GPU check script): AdamW, linear
warm-up then constant learning rate, gradient accumulation up to the global batch, global-norm
clipping, EMA of the trainable weights, bf16 autocast on GPU (fp32 on CPU), and the bookkeeping
around it: progress bar, JSONL metrics with throughput and MFU, periodic validation and atomic
checkpoints that resume exactly.

A stage hands the loop its trainable parameters, a loss function of one micro-batch and an
iterator of micro-batches for this rank; the loop knows nothing about UniX."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from unixcxr.train.checkpoint import (
    TrainingState,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    remove_stale,
    save_checkpoint,
)
from unixcxr.train.distributed import DistEnv, all_reduce_sum, full_tensor, gradient_sync
from unixcxr.train.ema import EMA
from unixcxr.train.metrics import MetricsLog, wandb_requested
from unixcxr.train.mfu import mfu

LossFn = Callable[["MicroBatch"], dict[str, torch.Tensor]]
ValidateFn = Callable[[int], dict[str, float]]


@dataclass
class MicroBatch:
    """One forward/backward on one rank."""

    data: object  # whatever the stage's loss function reads
    ids: list[str]  # sample ids, named when a loss turns non-finite
    num_tokens: int  # tokens (VAE: pixels / 256) processed, for throughput
    flops: float = 0.0  # forward + backward FLOPs, for MFU


@dataclass
class LoopSettings:
    steps: int
    lr: float
    warmup: int = 0
    accumulation: int = 1  # micro-batches per optimizer step on each rank
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-15
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    ema: float = 0.0  # 0 = no EMA
    ema_warmup: bool = False
    log_every: int = 10
    val_every: int = 0  # 0 = validate only at the end
    checkpoint_every: int = 0  # 0 = only at the end
    keep_checkpoints: int = 2
    lr_scales: tuple[tuple[str, float], ...] = ()  # (name prefix, factor): e.g. a slower pretrained ViT
    progress: bool = True
    description: str = "train"
    tensorboard: bool = True  # TensorBoard events beside metrics.jsonl, when tensorboard is installed
    wandb: bool = False  # an offline W&B run beside metrics.jsonl, when wandb is installed


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf: stop at once, naming the step and the samples."""


@dataclass
class Trainer:
    model: nn.Module  # possibly DDP/FSDP-wrapped; called with the micro-batch by loss_fn
    params: dict[str, nn.Parameter]  # the trainable ones, by name
    loss_fn: LossFn
    settings: LoopSettings
    env: DistEnv
    folder: Path  # the stage folder: checkpoints/, metrics.jsonl
    meta: dict  # config and stage recipe, stored in every checkpoint
    peak_flops: float = 0.0  # per device; 0 = do not report MFU
    strategy: str = "single"  # how the model is distributed: "fsdp" checkpoints are written per rank
    validate: ValidateFn | None = None
    step: int = 0  # optimizer steps done
    log: MetricsLog | None = None
    _window: dict = field(default_factory=dict)

    def __post_init__(self):
        s = self.settings
        if not self.params:
            raise ValueError("nothing to train: no parameter requires a gradient in this stage")
        groups: dict[float, list] = {}
        for name, p in self.params.items():
            scale = next((f for prefix, f in s.lr_scales if name.startswith(prefix)), 1.0)
            groups.setdefault(scale, []).append(p)
        self.optimizer = torch.optim.AdamW([{"params": ps, "scale": f} for f, ps in groups.items()], lr=s.lr,
                                           betas=s.betas, eps=s.eps, weight_decay=s.weight_decay,
                                           **_adamw_kernel(self.params.values()))
        self.ema = EMA(self.params, s.ema, s.ema_warmup) if s.ema > 0 else None
        self.state = TrainingState(self.params, self.optimizer, self.ema)
        self.log = self.log or MetricsLog(self.folder / "metrics.jsonl", self.env, tensorboard=s.tensorboard,
                                          wandb=wandb_requested(s.wandb), name=s.description)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.env.device.type == "cuda" \
            else contextlib.nullcontext()
        remove_stale(self.checkpoint_dir, self.env)

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoints"

    # --- resume -----------------------------------------------------------------------------------
    def resume(self, config, stage: str, stage_recipe) -> bool:
        """Continue from the newest checkpoint of this stage, if there is one."""
        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            return False
        check_compatible(path, read_meta(path), config, stage, stage_recipe, self.env)
        meta = load_checkpoint(path, self.state, self.env)
        self.step = meta["step"]
        self.log.truncate_after(self.step)
        return True

    def save(self) -> Path:
        meta = {**self.meta, "data": {"step": self.step}}
        return save_checkpoint(self.checkpoint_dir, self.step, self.state, meta, self.env,
                               self.settings.keep_checkpoints, self.strategy)

    # --- one optimizer step ------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up over `warmup` steps, then constant (paper Table 1)."""
        s = self.settings
        return s.lr * min(1.0, (step + 1) / s.warmup) if s.warmup > 0 else s.lr

    def train_step(self, micros: list[MicroBatch]) -> dict[str, torch.Tensor]:
        """Forward/backward every micro-batch (gradients averaged over them and over ranks), clip,
        AdamW, EMA. Returns the step's summed loss parts and counts (tensors, not yet synced)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step) * group["scale"]
        totals: dict[str, torch.Tensor] = {}
        losses = []
        for i, micro in enumerate(micros):
            with gradient_sync(self.model, sync=i == len(micros) - 1):
                with self.autocast:
                    out = self.loss_fn(micro)
                (out["loss"] / len(micros)).backward()
            losses.append(out["loss"].detach().float())
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float()
        self._check_finite(torch.stack(losses), micros)
        grad_norm = self._clip()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.step)
        self.step += 1
        totals = {k: v / len(micros) for k, v in totals.items()}
        totals["grad_norm"] = grad_norm
        return totals

    def _check_finite(self, losses: torch.Tensor, micros: list[MicroBatch]) -> None:
        bad = ~torch.isfinite(losses)
        if bool(all_reduce_sum(bad.any().float(), self.env) > 0):
            where = [m.ids for m, b in zip(micros, bad.tolist()) if b]
            detail = f"batch ids {where[0]}" if where else "on another rank"
            raise NonFiniteLoss(f"{self.settings.description}: loss is {losses.tolist()} at step {self.step} "
                                f"({detail}); lower the learning rate or check these samples")

    def _clip(self) -> torch.Tensor:
        params = [p for p in self.params.values() if p.grad is not None]
        limit = self.settings.clip_grad if self.settings.clip_grad > 0 else float("inf")
        norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, limit)).float()
        if not bool(torch.isfinite(norm)):
            raise NonFiniteLoss(f"{self.settings.description}: gradient norm is {norm.item()} at step {self.step}")
        return norm

    # --- the loop ----------------------------------------------------------------------------------
    def fit(self, micro_batches: Iterable[MicroBatch]) -> dict[str, float]:
        """Run from self.step to settings.steps; returns the last logged metrics."""
        s, it = self.settings, iter(micro_batches)
        bar = tqdm(total=s.steps, initial=self.step, desc=s.description, unit="step", dynamic_ncols=True,
                   disable=not (s.progress and self.env.is_main))
        last: dict[str, float] = {}
        try:
            while self.step < s.steps:
                start = time.perf_counter()
                micros = _take(it, s.accumulation)
                waited = time.perf_counter() - start  # building (or waiting for) the micro-batches
                totals = self.train_step(micros)
                self._accumulate(totals, micros, time.perf_counter() - start, waited)
                bar.update(1)
                done = self.step == s.steps
                if self.step % s.log_every == 0 or done:
                    last = self._flush(bar)
                if self.validate and ((s.val_every and self.step % s.val_every == 0) or done):
                    last.update(self.run_validation())
                if (s.checkpoint_every and self.step % s.checkpoint_every == 0) or done:
                    self.save()
        finally:
            bar.close()
            self.log.close()
        return last

    def run_validation(self) -> dict[str, float]:
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            metrics = self.validate(self.step)
        self.log.write({"step": self.step, "split": "val", **metrics})
        return {f"val_{k}": v for k, v in metrics.items()}

    def _accumulate(self, totals: dict[str, torch.Tensor], micros: list[MicroBatch], seconds: float,
                    data_seconds: float = 0.0) -> None:
        w = self._window
        for k, v in totals.items():
            w[k] = w.get(k, 0.0) + v
        w["tokens"] = w.get("tokens", 0) + sum(m.num_tokens for m in micros)
        w["flops"] = w.get("flops", 0.0) + sum(m.flops for m in micros)
        w["seconds"] = w.get("seconds", 0.0) + seconds
        w["data_seconds"] = w.get("data_seconds", 0.0) + data_seconds
        w["steps"] = w.get("steps", 0) + 1

    def _flush(self, bar: tqdm) -> dict[str, float]:
        """Average the window over steps and ranks; log one record."""
        w, self._window = self._window, {}
        names = sorted(k for k in w if k not in ("tokens", "flops", "seconds", "data_seconds", "steps"))
        values = [float(w[k]) for k in names] + [float(w["tokens"]), float(w["flops"])]
        summed = all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=self.env.device), self.env).tolist()
        steps, seconds = w["steps"], w["seconds"]
        record = {k: summed[i] / steps / self.env.world_size for i, k in enumerate(names)}
        tokens, flops = summed[len(names)], summed[len(names) + 1]
        record.update(step=self.step, lr=self.lr_at(self.step - 1), tokens_per_s=tokens / seconds,
                      steps_per_s=steps / seconds, seconds_per_step=seconds / steps,
                      data_fraction=w["data_seconds"] / seconds)  # the loader's share of the step time
        if self.peak_flops and flops:
            record["mfu"] = mfu(flops / self.env.world_size, seconds, self.peak_flops)
        self.log.write(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        return record


def _take(it: Iterator[MicroBatch], n: int) -> list[MicroBatch]:
    micros = []
    for _ in range(n):
        try:
            micros.append(next(it))
        except StopIteration:
            raise RuntimeError("the micro-batch stream ended before the last step") from None
    return micros


def _adamw_kernel(params) -> dict:
    """torch's fused AdamW (one kernel over all tensors; ~3x faster than foreach on a CPU, measured
    in benchmarks/bench_train.py) where it applies: plain CPU/CUDA float tensors. Sharded (FSDP2
    DTensor) parameters keep the foreach kernel."""
    from torch.distributed.tensor import DTensor

    plain = all(not isinstance(p, DTensor) and p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in params)
    return {"fused": True} if plain else {"foreach": True}
