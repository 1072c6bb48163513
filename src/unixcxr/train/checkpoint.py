"""Training checkpoints: everything `--resume` needs to continue exactly (trainable weights, their EMA,
AdamW moments, RNG states) plus the step, the data position, the model config and the stage recipe
it was made with. Two layouts, one set of keys ("param.<name>", "ema.<name>", "optim.<name>.<key>"):

- unsharded runs (one process, DDP): `step_<N>.safetensors`, one file written by rank 0, with the
  metadata inside;
- FSDP2 runs: `step_<N>/`, a torch.distributed.checkpoint folder in which every rank writes its own
  shards (nothing is gathered to one rank), plus `meta.json`. Loading reshards, so such a checkpoint
  resumes on any number of processes (8 GPUs -> 4, 2 processes -> 1).

Either is written under a temporary name and renamed, so a killed run never leaves half a checkpoint
(stale temporaries are removed when the stage starts again); then all but the newest `keep` are
removed. Frozen weights are not stored: they are the stage's starting point (the previous stage's
export), rebuilt identically on resume."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unixcxr.files import atomic_output
from unixcxr.model.config import UniXConfig
from unixcxr.strict import diff
from unixcxr.train.distributed import DistEnv, barrier, full_tensor, like_param
from unixcxr.train.ema import EMA

FORMAT_VERSION = 1
META_KEY = "unixcxr_checkpoint"
META_FILE = "meta.json"  # inside a sharded checkpoint folder
PREFIX_PARAM, PREFIX_EMA, PREFIX_OPTIM = "param.", "ema.", "optim."
RESUMABLE_RECIPE_FIELDS = ("steps",)  # a run may be extended; every other stage field must match
SHARDED = "fsdp"  # the strategy whose checkpoints are written per rank
_STEP = re.compile(r"^step_(\d{8})(\.safetensors)?$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message names the file and what differs."""


def checkpoint_path(folder: Path, step: int, sharded: bool = False) -> Path:
    return folder / (f"step_{step:08d}" if sharded else f"step_{step:08d}.safetensors")


def list_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints of either layout, oldest first (a folder counts once its meta.json is in)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _STEP.match(p.name) and (p.is_file() or (p / META_FILE).is_file())]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def remove_stale(folder: Path, env: DistEnv) -> None:
    """Temporaries of a checkpoint write that was killed (rank 0 removes them; all ranks wait)."""
    if env.is_main and folder.is_dir():
        for stale in folder.glob(".step_*.tmp"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    barrier(env)


@dataclass
class TrainingState:
    """What one stage's loop owns: the tensors a checkpoint carries."""

    params: dict[str, torch.nn.Parameter]  # trainable, by name
    optimizer: torch.optim.Optimizer
    ema: EMA | None


def save_checkpoint(folder: Path, step: int, state: TrainingState, meta: dict, env: DistEnv, keep: int,
                    strategy: str = "single") -> Path:
    """A collective: every rank takes part (FSDP: each writes its shards; otherwise rank 0 writes)."""
    sharded = strategy == SHARDED
    path = checkpoint_path(folder, step, sharded)
    meta = {**meta, "format": FORMAT_VERSION, "step": step, "strategy": strategy, "world_size": env.world_size,
            "rng": _rng_meta()}
    if env.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    if sharded:
        _save_sharded(path, state, meta, env)
    else:
        _save_file(path, state, meta, env)
    if env.is_main:
        for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    barrier(env)
    return path


def _save_file(path: Path, state: TrainingState, meta: dict, env: DistEnv) -> None:
    tensors = {key: full_tensor(t.detach()).cpu().contiguous() for key, t in _tensors(state).items()}
    if not env.is_main:
        return
    with atomic_output(path, fsync=True) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})


def _save_sharded(path: Path, state: TrainingState, meta: dict, env: DistEnv) -> None:
    import torch.distributed.checkpoint as dcp

    tmp = path.with_name(f".{path.name}.tmp")
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(env)
    with _quiet_single_process():
        dcp.save({k: t.detach() for k, t in _tensors(state).items()}, checkpoint_id=tmp, no_dist=not env.distributed)
    if env.is_main:
        (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)


def _tensors(state: TrainingState) -> dict[str, torch.Tensor]:
    """The flat checkpoint dict: weights, EMA and optimizer state of every trainable parameter."""
    out = {}
    for name, p in state.params.items():
        out[PREFIX_PARAM + name] = p
        if state.ema is not None:
            out[PREFIX_EMA + name] = state.ema.shadow[name]
        for key, value in state.optimizer.state.get(p, {}).items():
            out[f"{PREFIX_OPTIM}{name}.{key}"] = value if value.dim() else value.reshape(1)
    return out


def read_meta(path: Path) -> dict:
    try:
        if path.is_dir():
            return json.loads((path / META_FILE).read_text(encoding="utf-8"))
        with safe_open(str(path), framework="pt") as f:
            return json.loads(f.metadata()[META_KEY])
    except Exception as err:  # truncated, not safetensors, or not ours
        raise CheckpointError(f"{path}: not a readable unixcxr checkpoint ({err}); delete it to resume from "
                              "the one before") from err


def check_compatible(path: Path, meta: dict, config: UniXConfig, stage: str, stage_recipe: object,
                     env: DistEnv | None = None) -> None:
    """Refuse a checkpoint made with another model config, stage recipe or (unsharded) world size."""
    if meta.get("stage") != stage:
        raise CheckpointError(f"{path}: a checkpoint of stage {meta.get('stage')!r}, not {stage!r}")
    saved = UniXConfig.from_dict(meta["config"])
    differing = saved.diff(config)
    if differing:
        raise CheckpointError(f"{path}: made with a different model config; differing fields: "
                              f"{', '.join(differing)}. Resume with the recipe it was made with, or start a new "
                              "--out folder")
    changed = [f for f in diff(meta["recipe"], stage_recipe) if f not in RESUMABLE_RECIPE_FIELDS]
    if changed:
        raise CheckpointError(f"{path}: made with a different stages.{stage} recipe; differing fields: "
                              f"{', '.join(changed)}. Only `steps` may change on --resume")
    world = meta.get("world_size")
    if env is not None and not path.is_dir() and world is not None and world != env.world_size:
        raise CheckpointError(f"{path}: written by {world} process(es) ({meta.get('strategy')}), resumed by "
                              f"{env.world_size}; resume with --nproc-per-node {world} (only FSDP checkpoints, "
                              "runtime.strategy: fsdp, move between world sizes)")


def load_checkpoint(path: Path, state: TrainingState, env: DistEnv | None = None) -> dict:
    """Restore weights, EMA, optimizer moments and RNG states in place; returns the metadata."""
    meta = read_meta(path)
    loaded = _load_sharded(path, state, env) if path.is_dir() else _load_file(path, state)
    expected = {PREFIX_PARAM + n for n in state.params}
    stored = {k for k in loaded if k.startswith(PREFIX_PARAM)}  # (an older file also holds rng.* tensors)
    if stored != expected:
        raise CheckpointError(f"{path}: trainable parameters differ from this stage's ({sorted(stored ^ expected)[:5]} "
                              "...)")
    with torch.no_grad():
        for name, p in state.params.items():
            p.copy_(_like(loaded[PREFIX_PARAM + name], p))
            if state.ema is not None:
                if PREFIX_EMA + name not in loaded:
                    raise CheckpointError(f"{path}: no EMA weights for {name}; the recipe's ema changed")
                state.ema.shadow[name].copy_(_like(loaded[PREFIX_EMA + name], state.ema.shadow[name]))
            prefix = f"{PREFIX_OPTIM}{name}."
            optim = {k[len(prefix):]: v for k, v in loaded.items() if k.startswith(prefix)}
            if optim:
                state.optimizer.state[p] = {key: _step_tensor(v, p, state.optimizer) if key == "step"
                                            else _like(v, p) for key, v in optim.items()}
    _restore_rng(meta["rng"], loaded)
    return meta


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`value` laid out like `param`: a sharded load already is; a whole tensor is placed (and sharded)."""
    return value if hasattr(value, "device_mesh") else like_param(value, param)


def _load_file(path: Path, state: TrainingState) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _load_sharded(path: Path, state: TrainingState, env: DistEnv | None) -> dict[str, torch.Tensor]:
    """Fill tensors laid out like this run's (DTensor shards under FSDP, whole tensors otherwise) from
    the folder, whatever world size wrote it: torch.distributed.checkpoint reshards."""
    import torch.distributed.checkpoint as dcp

    stored = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    live = {k: t.detach() for k, t in _tensors(state).items()}
    targets = {}
    for key, info in stored.items():
        if key in live and tuple(live[key].shape) == tuple(info.size):
            targets[key] = torch.empty_like(live[key])
        elif key.startswith(PREFIX_OPTIM) and key.rpartition(".")[0][len(PREFIX_OPTIM):] in state.params:
            p = state.params[key.rpartition(".")[0][len(PREFIX_OPTIM):]]
            shaped = tuple(info.size) == tuple(p.shape)
            targets[key] = torch.empty_like(p.detach(), dtype=info.properties.dtype) if shaped else \
                torch.empty(tuple(info.size), dtype=info.properties.dtype)
        else:
            targets[key] = torch.empty(tuple(info.size), dtype=info.properties.dtype)
    with _quiet_single_process():
        dcp.load(targets, checkpoint_id=str(path), no_dist=env is None or not env.distributed)
    return targets


@contextlib.contextmanager
def _quiet_single_process():
    """torch.distributed.checkpoint warns that one process is meant when there is no process group:
    here that is by design (a sharded run resumed by one process, or one run with strategy fsdp)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _step_tensor(value: torch.Tensor, p: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """AdamW's step count where its kernel keeps it: on the parameter's device for the fused and
    capturable kernels, a CPU scalar otherwise."""
    group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
    step = full_tensor(value).reshape(()).float().cpu()
    if group.get("fused") or group.get("capturable"):
        return step.to(p.device if not hasattr(p, "device_mesh") else p.to_local().device)
    return step


# --- RNG states (rank 0's, restored on every rank) -------------------------------------------------
def _rng_meta() -> dict:
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    out = {"python": [version, list(internal), gauss], "numpy": [int(pos), int(has_gauss), float(cached)],
           "numpy_keys": keys.astype(np.int64).tolist(),
           "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode()
    return out


def _restore_rng(meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    if "torch" not in meta:  # a checkpoint from before the states moved into the metadata
        meta = {**meta, "torch": base64.b64encode(tensors["rng.torch"].numpy().tobytes()).decode(),
                "numpy_keys": tensors["rng.numpy"].tolist()}
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(meta["torch"])), dtype=torch.uint8))
    if "cuda" in meta and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(meta["cuda"])), dtype=torch.uint8))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, cached = meta["numpy"]
    keys = np.asarray(meta["numpy_keys"], dtype=np.int64).astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, cached))
