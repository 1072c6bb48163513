"""The authors' released UniX weights, loaded strictly onto our modules.

A release folder (README, "The authors' released weights") holds a Janus-style config.json ("language_config",
"aligner_config", "vision_config"), one model.safetensors, the DeepSeek tokenizer files and a
latent-diffusion VAE (vae/kl-f16d16.ckpt + vae/config.yaml). Every tensor is mapped by the rules in
official_keys.py; a missing, unexpected or mis-shaped tensor is refused with its key named. The
VAE checkpoint is read with torch.load(weights_only=True) and its loss.* entries (perceptual-loss
networks) are dropped unread: nothing is ever fetched from the network."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from tqdm import tqdm

from unixcxr.model.card import read_front_matter
from unixcxr.model.config import (
    RELEASED_CONVENTIONS,
    GenerationConfig,
    LanguageConfig,
    UniXConfig,
    VAEConfig,
    VisionConfig,
    unix,
)
from unixcxr.model.io import ModelFolderError, save_model_folder
from unixcxr.model.official_keys import (
    MODEL_RULES,
    convert_vae_state_dict,
    is_unused_model_key,
    rename,
)
from unixcxr.model.unix import UniX
from unixcxr.model.vae import LatentVAE, release_layout

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
VAE_CKPT, VAE_YAML = Path("vae") / "kl-f16d16.ckpt", Path("vae") / "config.yaml"
SPECIAL_TOKENS_FILES = ("special_tokens_map.json", "tokenizer_config.json")
RELEASED_VIT_ACT = "gelu"  # exact GELU: see _vision
LDM_NORM_GROUPS = 32  # latent-diffusion's Normalize() uses 32 groups, fixed in its code
# timm names Janus uses in vision_config.params.model_name, with the sizes they stand for
KNOWN_VISION_TOWERS = {
    "siglip_large_patch16_384": dict(image_size=384, patch_size=16, width=1024, layers=24, heads=16, mlp_ratio=4),
}


class OfficialCheckpointError(ModelFolderError):
    """A release folder that cannot be loaded; the message names the file or key and the fix."""


def is_official_folder(path: str | Path) -> bool:
    """True for a folder whose config.json is Janus-style (has "language_config")."""
    config = Path(path) / CONFIG
    if not config.is_file():
        return False
    try:
        return "language_config" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


# --- config ----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise OfficialCheckpointError(f"{path}: unreadable JSON ({err}); download the file again") from err


def _language(raw: dict, base: LanguageConfig) -> LanguageConfig:
    lang = raw["language_config"]
    hidden = lang.get("hidden_size", base.hidden_size)
    heads = lang.get("num_attention_heads", base.num_heads)
    return dataclasses.replace(
        base, hidden_size=hidden, num_layers=lang.get("num_hidden_layers", base.num_layers), num_heads=heads,
        num_kv_heads=lang.get("num_key_value_heads", heads), head_dim=lang.get("head_dim", hidden // heads),
        intermediate_size=lang.get("intermediate_size", base.intermediate_size),
        vocab_size=lang.get("vocab_size", base.vocab_size), rms_norm_eps=lang.get("rms_norm_eps", base.rms_norm_eps),
        rope_theta=lang.get("rope_theta", base.rope_theta),
        max_position=lang.get("max_position_embeddings", base.max_position),
    )


def _vision(raw: dict, base: VisionConfig, path: Path) -> VisionConfig:
    params = raw.get("vision_config", {}).get("params", {})
    name = params.get("model_name", "siglip_large_patch16_384")
    sizes = {**KNOWN_VISION_TOWERS.get(name, {}), **{k: v for k, v in params.items() if k in
                                                     ("image_size", "patch_size", "width", "layers", "heads",
                                                      "mlp_ratio")}}
    missing = {"image_size", "patch_size", "width", "layers", "heads", "mlp_ratio"} - set(sizes)
    if missing:
        raise OfficialCheckpointError(f"{path}: unknown vision tower {name!r} and no sizes {sorted(missing)} in "
                                      f"vision_config.params; known towers: {sorted(KNOWN_VISION_TOWERS)}")
    # act_layer: the release's ViT (Janus' siglip_vit.VisionTransformer) hard-codes nn.GELU, the exact
    # erf form, whatever the tower's name says; with the tanh form logits move by ~4e-6 even in a
    # one-block test tower (docs/released-code.md)
    return dataclasses.replace(base, image_size=sizes["image_size"], patch_size=sizes["patch_size"],
                               width=sizes["width"], depth=sizes["layers"], num_heads=sizes["heads"],
                               mlp_dim=int(sizes["width"] * sizes["mlp_ratio"]), act_layer=RELEASED_VIT_ACT)


def _check_aligner(raw: dict, vision: VisionConfig, llm: LanguageConfig, path: Path) -> None:
    params = raw.get("aligner_config", {}).get("params", {})
    expected = {"projector_type": "mlp_gelu", "depth": 2, "input_dim": vision.width, "n_embed": llm.hidden_size}
    wrong = {k: (params[k], v) for k, v in expected.items() if k in params and params[k] != v}
    if wrong:
        raise OfficialCheckpointError(f"{path}: aligner_config.params {wrong} (found, expected): the connector "
                                      "must be Linear-GELU-Linear from the ViT width to the LLM width")


def _vae(folder: Path) -> VAEConfig:
    """VAEConfig from vae/config.yaml's ddconfig (ch * ch_mult levels, attention at the lowest)."""
    path = folder / VAE_YAML
    try:
        params = yaml.safe_load(path.read_text())["model"]["params"]
        dd = params["ddconfig"]
        levels = [dd["ch"] * m for m in dd["ch_mult"]]
        lowest = dd["resolution"] // 2 ** (len(levels) - 1)
        attn = set(dd.get("attn_resolutions", []))
        embed_dim, z = params.get("embed_dim", dd["z_channels"]), dd["z_channels"]
        layers = dd["num_res_blocks"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise OfficialCheckpointError(f"{path}: not a latent-diffusion autoencoder config ({err!r}); expected "
                                      "model.params.ddconfig with ch, ch_mult, num_res_blocks, z_channels") from err
    if attn - {lowest} or embed_dim != z or not dd.get("double_z", True):
        raise OfficialCheckpointError(f"{path}: unsupported autoencoder layout (attention at {sorted(attn)}, lowest "
                                      f"resolution {lowest}; embed_dim {embed_dim}, z_channels {z}); only "
                                      "attention at the lowest level and embed_dim == z_channels are supported")
    return dataclasses.replace(VAEConfig(), latent_channels=z, block_out_channels=tuple(levels),
                               layers_per_block=layers, norm_num_groups=LDM_NORM_GROUPS,
                               attention_at_lowest_level=lowest in attn)


def _tokenizer_pad_id(folder: Path) -> int | None:
    """The id of the tokenizer's declared pad token, if its files name one."""
    if not (folder / TOKENIZER).is_file():
        return None
    name = None
    for file in SPECIAL_TOKENS_FILES:
        if (folder / file).is_file():
            pad = _read_json(folder / file).get("pad_token")
            name = pad.get("content") if isinstance(pad, dict) else pad
            if name:
                break
    if not name:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / TOKENIZER)).token_to_id(name)


def _tokenizer_adds_bos(folder: Path) -> bool:
    """Whether the release's tokenizer opens an encoding with BOS itself (LlamaTokenizerFast does
    unless tokenizer_config.json sets add_bos_token false); their code prepends another one."""
    file = folder / "tokenizer_config.json"
    return bool(_read_json(file).get("add_bos_token", True)) if file.is_file() else True


def official_config(folder: str | Path) -> UniXConfig:
    """UniXConfig of a release folder: sizes from config.json and vae/config.yaml, every other value
    from the `unix` preset (released special ids, preprocessing, latent normalisation), and the
    authors' conventions (prompt layout, guidance, preprocessing, 8-bit output), recorded so that a
    converted folder keeps running their way."""
    folder = Path(folder)
    try:
        return _official_config(folder, _read_json(folder / CONFIG))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, OfficialCheckpointError):
            raise
        raise OfficialCheckpointError(f"{folder / CONFIG}: not a Janus-style config ({err!r}); download it "
                                      "again") from err


def _official_config(folder: Path, raw: dict) -> UniXConfig:
    base = unix()
    llm = _language(raw, base.llm)
    vision = _vision(raw, base.vision, folder / CONFIG)
    _check_aligner(raw, vision, llm, folder / CONFIG)
    if raw.get("latent_patch_size", 1) != 1:
        raise OfficialCheckpointError(f"{folder / CONFIG}: latent_patch_size {raw['latent_patch_size']} "
                                      "is not supported (UniX uses 1)")
    vae = _vae(folder)
    grid_max = raw.get("max_latent_size", base.gen.latent_grid_max)
    gen = dataclasses.replace(GenerationConfig(), latent_grid_max=grid_max, image_size=grid_max * vae.downsample,
                              timestep_shift=raw.get("timestep_shift", base.gen.timestep_shift), repa_dim=0)
    lang = raw["language_config"]
    tokens = dataclasses.replace(base.tokens, bos=lang.get("bos_token_id", base.tokens.bos),
                                 eos=lang.get("eos_token_id", base.tokens.eos))
    pad = lang.get("pad_token_id", _tokenizer_pad_id(folder))
    if pad is not None and pad not in (tokens.bos, tokens.eos, tokens.start_of_image, tokens.end_of_image):
        tokens = dataclasses.replace(tokens, pad=pad)
    conventions = dataclasses.replace(RELEASED_CONVENTIONS, prompt_bos=1 + _tokenizer_adds_bos(folder))
    config = UniXConfig(llm=llm, vision=vision, vae=vae, gen=gen, tokens=tokens, name="unix", conventions=conventions)
    try:
        return config.validate()
    except ValueError as err:
        raise OfficialCheckpointError(f"{folder / CONFIG}: {err}") from err


# --- weights -------------------------------------------------------------------------------------------
def _describe(problems: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                     for kind, keys in problems.items() if keys)


def _check(file: Path, found: dict[str, tuple[str, tuple]], expected: dict[str, torch.Tensor],
           unknown: list[str]) -> None:
    """found: our name -> (their name, shape). Refuse any gap, surplus or shape mismatch, naming keys."""
    ours_to_theirs = {ours: theirs for ours, (theirs, _) in found.items()}
    problems = {
        "missing": sorted(k for k in expected if k not in found),
        "unexpected": sorted(unknown + [ours_to_theirs[k] for k in found if k not in expected]),
        "wrong shape": sorted(f"{ours_to_theirs[k]} {list(shape)} (expected {list(expected[k].shape)})"
                              for k, (_, shape) in found.items() if k in expected
                              and tuple(shape) != tuple(expected[k].shape)),
    }
    if any(problems.values()):
        raise OfficialCheckpointError(f"{file}: does not match the UniX layout ({_describe(problems)}); the "
                                      "download is incomplete or not a UniX release")


def _model_tensors(file: Path, expected: dict[str, torch.Tensor], progress: bool = False) -> dict[str, torch.Tensor]:
    """Map every tensor of model.safetensors to our names; shapes are checked before any is read.
    progress: a bar of tensors read (the released file holds 3.2 B parameters)."""
    if not file.is_file():
        raise OfficialCheckpointError(f"{file} is missing: download model.safetensors into the folder")
    try:
        with safe_open(file, framework="pt") as f:
            found, unknown = {}, []
            for key in f.keys():
                if is_unused_model_key(key):
                    continue
                ours = rename(key, MODEL_RULES)
                if ours is None:
                    unknown.append(key)
                else:
                    found[ours] = (key, tuple(f.get_slice(key).get_shape()))
            _check(file, found, expected, unknown)
            items = tqdm(found.items(), desc=f"reading {file.name}", unit="tensor", disable=not progress)
            return {ours: f.get_tensor(theirs) for ours, (theirs, _) in items}
    except OfficialCheckpointError:
        raise
    except Exception as err:  # safetensors raises several types for truncated / corrupt files
        raise OfficialCheckpointError(f"{file}: cannot read weights ({err}); download it again") from err


def _vae_tensors(folder: Path, config: VAEConfig, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    file = folder / VAE_CKPT
    if not file.is_file():
        raise OfficialCheckpointError(f"{file} is missing: download vae/kl-f16d16.ckpt into the folder")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # pickle refusals and corrupt archives come as many types
        raise OfficialCheckpointError(
            f"{file}: cannot be read safely ({err}). If it holds more than tensors, re-save its weights alone, "
            "in a trusted Python: torch.save({'state_dict': torch.load(F, weights_only=False)['state_dict']}, F)"
        ) from err
    ldm_state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(ldm_state, dict):
        raise OfficialCheckpointError(f"{file}: no 'state_dict' of tensors inside; not a latent-diffusion checkpoint")
    state, unknown = convert_vae_state_dict(ldm_state, len(config.block_out_channels))
    _check(file, {k: (k, tuple(v.shape)) for k, v in state.items()}, expected, unknown)
    return state


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], device, dtype) -> torch.nn.Module:
    """Allocate the module (built on meta) directly in its final device/dtype, then copy the tensors in."""
    dtype = dtype or next(iter(state.values())).dtype
    module = module.to(dtype=dtype).to_empty(device=device)
    module.load_state_dict(state, strict=True)
    return module.eval()


def load_official_folder(path: str | Path, device="cpu", dtype: torch.dtype | None = None,
                         with_vae: bool = True, progress: bool = False) -> tuple[UniX, LatentVAE | None, Path | None]:
    """-> (model, VAE or None, tokenizer.json path or None), like io.load_model_folder.
    dtype None keeps each checkpoint's own dtype (bf16 for the released model)."""
    folder = Path(path)
    config = official_config(folder)
    with torch.device("meta"):
        model = UniX(config)
    expected = model.state_dict()
    model = _load_into(model, _model_tensors(folder / WEIGHTS, expected, progress), device, dtype)
    model.rope.reset()  # non-persistent: recomputed, never stored
    vae = None
    if with_vae:
        with torch.device("meta"):
            vae = LatentVAE(config.vae)
        state = _vae_tensors(folder, config.vae, vae.autoencoder.state_dict())
        vae.autoencoder = _load_into(vae.autoencoder, state, device, dtype)
        vae = vae.for_inference(exact=release_layout(config.conventions))
    tokenizer = folder / TOKENIZER if (folder / TOKENIZER).is_file() else None
    return model, vae, tokenizer


def convert_official(src: str | Path, dst: str | Path, progress: bool = False) -> Path:
    """Write a release folder as our model folder (model/io.py's layout: diffusers' vae/, the
    tokenizer with its transformers files, a model card), keeping the checkpoints' own dtypes. The
    card's licence is the release card's, when its README.md states one."""
    model, vae, tokenizer = load_official_folder(src, progress=progress)
    if tokenizer is None:
        raise OfficialCheckpointError(f"{Path(src) / TOKENIZER} is missing: download the tokenizer files too")
    if progress:
        tqdm.write(f"writing {dst}")
    return save_model_folder(dst, model, vae, tokenizer, source=f"converted from the authors' release "
                             f"({Path(src).name})", license=read_front_matter(src).get("license"))
