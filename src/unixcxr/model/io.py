"""Our model folder: what a training run exports and what every user-facing tool loads.

    MODEL_DIR/
      config.json          UniXConfig (every size, constant and special token id)
      model.safetensors    UniX weights (EMA weights for trained runs)
      vae.safetensors      the KL autoencoder's weights (diffusers AutoencoderKL layout)
      tokenizer.json       the tokenizer (tokenizers library format)

A run folder holds one under RUN_DIR/model. Files are written to a temporary folder and renamed
into place, so a folder is either complete or absent."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unixcxr.model.config import RELEASED_CONVENTIONS, TokenConfig, UniXConfig
from unixcxr.model.unix import UniX
from unixcxr.model.vae import LatentVAE

CONFIG, WEIGHTS, VAE_WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "vae.safetensors", "tokenizer.json"


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; the message names the file and the fix."""


def resolve_model_folder(path: str | Path) -> Path:
    """Accept a model folder or a run folder (RUN_DIR/model)."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    if (path / "model" / CONFIG).is_file():
        return path / "model"
    raise ModelFolderError(
        f"{path}: not a unixcxr model folder (no {CONFIG}, nor model/{CONFIG}). Pass a folder written by "
        "`unixcxr train` (RUN_DIR or RUN_DIR/model) or convert the released weights with `unixcxr convert-official`."
    )


def _state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_model_folder(folder: str | Path, model: UniX, vae: LatentVAE | None = None,
                      tokenizer_file: str | Path | None = None) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.config.save(tmp / CONFIG)
        save_file(_state_dict(model), tmp / WEIGHTS, metadata={"format": "pt", "unixcxr": "model"})
        if vae is not None:
            save_file(_state_dict(vae.autoencoder), tmp / VAE_WEIGHTS, metadata={"format": "pt", "unixcxr": "vae"})
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _load_weights(module: torch.nn.Module, file: Path) -> None:
    try:
        state = load_file(file)
    except Exception as err:  # safetensors raises several types for truncated / corrupt files
        raise ModelFolderError(f"{file}: cannot read weights ({err}); the file is truncated or corrupt, "
                               "copy or export it again") from err
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{name}: {keys[:5]}{' ...' if len(keys) > 5 else ''}"
            for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise ModelFolderError(f"{file}: weights do not match config.json ({detail})")
    module.load_state_dict(state)


def is_converted_release(raw: dict) -> bool:
    """A config.json written by `convert-official` before folders recorded their conventions: the
    released special ids and no REPA projector (convert-official drops it; every recipe that trains
    the `unix` preset keeps it)."""
    released_ids = {k: v for k, v in dataclasses.asdict(TokenConfig()).items() if k != "pad"}
    tokens = raw.get("tokens", {})
    return (raw.get("name") == "unix" and raw.get("gen", {}).get("repa_dim") == 0
            and all(tokens.get(k) == v for k, v in released_ids.items()))


def read_config(file: Path) -> UniXConfig:
    """config.json -> UniXConfig. A folder without a conventions section (written before they were
    recorded) gets ours, or the authors' when it is a converted release (is_converted_release)."""
    raw = json.loads(file.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object at the top, got a {type(raw).__name__}")
    if "conventions" not in raw and is_converted_release(raw):
        raw["conventions"] = dataclasses.asdict(RELEASED_CONVENTIONS)
    return UniXConfig.from_dict(raw)


def load_model_folder(path: str | Path, device="cpu", dtype: torch.dtype = torch.float32,
                      with_vae: bool = True) -> tuple[UniX, LatentVAE | None, Path | None]:
    """-> (model in eval mode, VAE or None, tokenizer.json path or None)."""
    folder = resolve_model_folder(path)
    try:
        config = read_config(folder / CONFIG)
    except (ValueError, TypeError, AttributeError, OSError) as err:
        raise ModelFolderError(f"{folder / CONFIG}: invalid config ({err}); fix the field or export the "
                               "model folder again") from err
    if not (folder / WEIGHTS).is_file():
        raise ModelFolderError(f"{folder / WEIGHTS} is missing: the folder holds a config but no weights")
    with torch.device("meta"):
        model = UniX(config)
    model = model.to_empty(device="cpu")  # built on meta: no time spent on a random initialisation
    _load_weights(model, folder / WEIGHTS)
    model.rope.reset()  # the only non-persistent buffer
    vae = None
    if with_vae and (folder / VAE_WEIGHTS).is_file():
        vae = LatentVAE(config.vae)
        _load_weights(vae.autoencoder, folder / VAE_WEIGHTS)
        vae = vae.to(device=device, dtype=dtype).for_inference()
    tokenizer = folder / TOKENIZER if (folder / TOKENIZER).is_file() else None
    return model.to(device=device, dtype=dtype).eval(), vae, tokenizer
