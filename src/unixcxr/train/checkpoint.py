"""Training checkpoints: one safetensors file per saved step holding everything `--resume` needs
to continue exactly (trainable weights, their EMA, AdamW moments, RNG states) and, in its
metadata, the step, the data position, the model config and the stage recipe it was made with.

Files are written to a temporary name and renamed (a killed run never leaves half a checkpoint),
then all but the newest `keep` are removed. Frozen weights are not stored: they are the stage's
starting point (the previous stage's export), rebuilt identically on resume."""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unixcxr.model.config import UniXConfig
from unixcxr.train.distributed import DistEnv, barrier, full_tensor, like_param
from unixcxr.train.ema import EMA
from unixcxr.train.recipe import recipe_diff

FORMAT_VERSION = 1
META_KEY = "unixcxr_checkpoint"
PREFIX_PARAM, PREFIX_EMA, PREFIX_OPTIM = "param.", "ema.", "optim."
RESUMABLE_RECIPE_FIELDS = ("steps",)  # a run may be extended; every other stage field must match


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message names the file and what differs."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step_*.safetensors")) if folder.is_dir() else []


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


@dataclass
class TrainingState:
    """What one stage's loop owns: the tensors a checkpoint carries."""

    params: dict[str, torch.nn.Parameter]  # trainable, by name
    optimizer: torch.optim.Optimizer
    ema: EMA | None


def save_checkpoint(folder: Path, step: int, state: TrainingState, meta: dict, env: DistEnv, keep: int) -> Path:
    """Collective under FSDP (every rank gathers its shards); rank 0 writes."""
    tensors = _gather(state, env)
    path = checkpoint_path(folder, step)
    if env.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        tensors.update(_rng_tensors())
        meta = {**meta, "format": FORMAT_VERSION, "step": step, "rng": _rng_meta()}
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)})
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
            old.unlink(missing_ok=True)
    barrier(env)
    return path


def _gather(state: TrainingState, env: DistEnv) -> dict[str, torch.Tensor]:
    out = {}

    def put(key: str, t: torch.Tensor) -> None:
        full = full_tensor(t.detach())
        if env.is_main:
            out[key] = full.cpu().contiguous()

    for name, p in state.params.items():
        put(PREFIX_PARAM + name, p)
        if state.ema is not None:
            put(PREFIX_EMA + name, state.ema.shadow[name])
        for key, value in state.optimizer.state.get(p, {}).items():
            put(f"{PREFIX_OPTIM}{name}.{key}", value if value.dim() else value.reshape(1))
    return out


def read_meta(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()[META_KEY])
    except Exception as err:  # truncated, not safetensors, or not ours
        raise CheckpointError(f"{path}: not a readable unixcxr checkpoint ({err}); delete it to resume from "
                              "the one before") from err


def check_compatible(path: Path, meta: dict, config: UniXConfig, stage: str, stage_recipe: object) -> None:
    """Refuse a checkpoint made with another model config or stage recipe, naming what differs."""
    if meta.get("stage") != stage:
        raise CheckpointError(f"{path}: a checkpoint of stage {meta.get('stage')!r}, not {stage!r}")
    saved = UniXConfig.from_dict(meta["config"])
    differing = saved.diff(config)
    if differing:
        raise CheckpointError(f"{path}: made with a different model config; differing fields: "
                              f"{', '.join(differing)}. Resume with the recipe it was made with, or start a new "
                              "--out folder")
    changed = [f for f in recipe_diff(meta["recipe"], stage_recipe) if f not in RESUMABLE_RECIPE_FIELDS]
    if changed:
        raise CheckpointError(f"{path}: made with a different stages.{stage} recipe; differing fields: "
                              f"{', '.join(changed)}. Only `steps` may change on --resume")


def load_checkpoint(path: Path, state: TrainingState) -> dict:
    """Restore weights, EMA, optimizer moments and RNG states in place; returns the metadata."""
    meta = read_meta(path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        expected = {PREFIX_PARAM + n for n in state.params}
        stored = {k for k in keys if k.startswith(PREFIX_PARAM)}
        if stored != expected:
            diff = sorted(stored ^ expected)[:5]
            raise CheckpointError(f"{path}: trainable parameters differ from this stage's ({diff} ...)")
        with torch.no_grad():
            for name, p in state.params.items():
                p.copy_(like_param(f.get_tensor(PREFIX_PARAM + name), p))
                if state.ema is not None:
                    if PREFIX_EMA + name not in keys:
                        raise CheckpointError(f"{path}: no EMA weights for {name}; the recipe's ema changed")
                    state.ema.shadow[name].copy_(like_param(f.get_tensor(PREFIX_EMA + name),
                                                            state.ema.shadow[name]))
                optim = {k[len(PREFIX_OPTIM) + len(name) + 1:]: k for k in keys
                         if k.startswith(f"{PREFIX_OPTIM}{name}.")}
                if optim:
                    state.optimizer.state[p] = {
                        key: (f.get_tensor(k).reshape(()) if key == "step" else like_param(f.get_tensor(k), p))
                        for key, k in optim.items()
                    }
        _restore_rng({k: f.get_tensor(k) for k in keys if k.startswith("rng.")}, meta["rng"])
    return meta


# --- RNG states ------------------------------------------------------------------------------------
def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    return out


def _rng_meta() -> dict:
    version, internal, gauss = random.getstate()
    _, _, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss], "numpy": [int(pos), int(has_gauss), float(cached)]}


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, cached = meta["numpy"]
    np.random.set_state(("MT19937", tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
