"""Our model folder: what a training run exports and what every user-facing tool loads, laid out
so that the field's libraries read its parts:

    MODEL_DIR/
      config.json              UniXConfig (every size, constant, special token id and convention)
                               and the unixcxr version that wrote it
      model.safetensors        UniX weights (EMA weights for trained runs)
      vae/config.json          the KL autoencoder, diffusers' AutoencoderKL: from_pretrained(MODEL_DIR,
      vae/diffusion_pytorch_model.safetensors                                   subfolder="vae")
      tokenizer.json           the tokenizer (tokenizers library format); with tokenizer_config.json and
      tokenizer_config.json    special_tokens_map.json, transformers' AutoTokenizer.from_pretrained(MODEL_DIR)
      special_tokens_map.json
      README.md                the model card (model/card.py)

Folders written before this layout (the VAE as vae.safetensors at the top, no tokenizer config, no
card) load as they are. A run folder holds one under RUN_DIR/model. Files are written to a
temporary folder and renamed into place, so a folder is either complete or absent."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unixcxr import __version__
from unixcxr.files import atomic_output
from unixcxr.model.card import CARD, card_facts, read_card_facts, render_card
from unixcxr.model.config import RELEASED_CONVENTIONS, TokenConfig, UniXConfig
from unixcxr.model.tokenizer import SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, ReportTokenizer, SpecialTokens
from unixcxr.model.unix import UniX, upgrade_state_dict
from unixcxr.model.vae import (
    DIFFUSERS_CONFIG,
    DIFFUSERS_WEIGHTS,
    LatentVAE,
    diffusers_config_mismatch,
    release_layout,
    save_diffusers_folder,
)

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
VAE_DIR = "vae"  # diffusers' subfolder
VAE_WEIGHTS = "vae.safetensors"  # where folders before the diffusers layout kept the VAE (still read)
VERSION_KEY = "unixcxr_version"  # config.json: the version that wrote the folder (not a UniXConfig field)
TRANSFORMERS_FILES = (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)


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


def vae_weights_file(folder: Path) -> Path | None:
    """The VAE's weights in a model folder: diffusers' layout, or the earlier vae.safetensors."""
    for path in (folder / VAE_DIR / DIFFUSERS_WEIGHTS, folder / VAE_WEIGHTS):
        if path.is_file():
            return path
    return None


def _write_tokenizer(tmp: Path, tokenizer_file: Path, config: UniXConfig) -> None:
    """tokenizer.json and the two files AutoTokenizer reads beside it: copied when they lie beside the
    source (the authors' release: their tokenizer class and flags kept), else written from the
    model's special ids."""
    shutil.copyfile(tokenizer_file, tmp / TOKENIZER)
    source = Path(tokenizer_file).parent
    if all((source / name).is_file() for name in TRANSFORMERS_FILES):
        for name in TRANSFORMERS_FILES:
            shutil.copyfile(source / name, tmp / name)
        return
    special = SpecialTokens(**dataclasses.asdict(config.tokens))
    files = ReportTokenizer.load(tokenizer_file, special=special).transformers_files(config.llm.max_position)
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model_folder(folder: str | Path, model: UniX, vae: LatentVAE | None = None,
                      tokenizer_file: str | Path | None = None, source: str = "saved by unixcxr",
                      license: str | None = None, training: dict | None = None,
                      evaluation: dict | None = None) -> Path:
    """Write the folder (layout above). source, license, training and evaluation go to the model card;
    left out, a folder being replaced keeps its card's facts (a re-export keeps its evaluation)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    earlier = read_card_facts(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        config = model.config
        (tmp / CONFIG).write_text(json.dumps({**config.to_dict(), VERSION_KEY: __version__}, indent=2),
                                  encoding="utf-8")
        save_file(_state_dict(model), tmp / WEIGHTS, metadata={"format": "pt", "unixcxr": "model"})
        if vae is not None:
            save_diffusers_folder(vae, tmp / VAE_DIR)
        if tokenizer_file is not None:
            _write_tokenizer(tmp, Path(tokenizer_file), config)
        facts = card_facts(config, __version__, sum(p.numel() for p in model.parameters()), source,
                           license or earlier.get("license"), training or earlier.get("training"),
                           evaluation or earlier.get("evaluation"))
        (tmp / CARD).write_text(render_card(config, facts, str(folder)), encoding="utf-8")
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


def update_model_card(folder: str | Path, **facts) -> Path:
    """Rewrite a folder's README.md with some facts replaced (e.g. evaluation=evaluation_facts(...)),
    atomically; the rest of the folder is untouched."""
    folder = resolve_model_folder(folder)
    config = read_config(folder / CONFIG)
    merged = {**read_card_facts(folder), **{k: v for k, v in facts.items() if v is not None}}
    merged.setdefault("version", __version__)
    merged.setdefault("name", config.name)
    with atomic_output(folder / CARD) as tmp:
        tmp.write_text(render_card(config, merged, str(folder)), encoding="utf-8")
    return folder / CARD


def _load_weights(module: torch.nn.Module, file: Path) -> None:
    try:
        state = load_file(file)
    except Exception as err:  # safetensors raises several types for truncated / corrupt files
        raise ModelFolderError(f"{file}: cannot read weights ({err}); the file is truncated or corrupt, "
                               "copy or export it again") from err
    if isinstance(module, UniX):
        state = upgrade_state_dict(state)
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
    raw.pop(VERSION_KEY, None)
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
    vae_file = vae_weights_file(folder) if with_vae else None
    if vae_file is not None:
        _check_vae_config(folder, config)
        vae = LatentVAE(config.vae)
        _load_weights(vae.autoencoder, vae_file)
        vae = vae.to(device=device, dtype=dtype).for_inference(exact=release_layout(config.conventions))
    tokenizer = folder / TOKENIZER if (folder / TOKENIZER).is_file() else None
    return model.to(device=device, dtype=dtype).eval(), vae, tokenizer


def _check_vae_config(folder: Path, config: UniXConfig) -> None:
    file = folder / VAE_DIR / DIFFUSERS_CONFIG
    if not (folder / VAE_DIR / DIFFUSERS_WEIGHTS).is_file():
        return  # the earlier layout: config.json alone describes the VAE
    try:
        wrong = diffusers_config_mismatch(file, config.vae)
    except (OSError, ValueError) as err:
        raise ModelFolderError(f"{file}: unreadable ({err}); export the model folder again") from err
    if wrong:
        raise ModelFolderError(f"{file} describes another autoencoder than {folder / CONFIG}: {'; '.join(wrong)}; "
                               "export the model folder again")
