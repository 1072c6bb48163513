"""What every stage of a training run shares: the run folder's layout (RunFolder), the loaded
inputs of a run (RunContext), the model config derived from the recipe and the earlier stages, and
TrainError. The stage runners (train/model_stage.py, vae.py, vision.py) import this module, and
train/runner.py imports them: nothing here imports a runner."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from unixcxr.data.sources import DataSource, Sample
from unixcxr.files import write_text
from unixcxr.model.config import UniXConfig, preset
from unixcxr.model.io import CONFIG, TOKENIZER, VAE_WEIGHTS, resolve_model_folder
from unixcxr.model.tokenizer import ReportTokenizer, SpecialTokens
from unixcxr.model.vae import LatentVAE
from unixcxr.train.distributed import DistEnv, broadcast_object
from unixcxr.train.loop import LoopSettings
from unixcxr.train.mfu import measure_peak_flops
from unixcxr.train.recipe import Recipe, RecipeError
from unixcxr.train.stages import repa_encoder_dim


def annotation_path(value: str, data_root: Path) -> Path:
    """A recipe's annotation file: absolute, or relative to the working directory, else to the data."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or path.exists() else data_root / path


LATENT_STATS = "latent_stats.json"


class TrainError(ValueError):
    """A run that cannot start or continue; the message names the folder or file and the fix."""


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def vae_weights(self) -> Path:
        return self.root / "vae" / VAE_WEIGHTS

    @property
    def latent_stats(self) -> Path:
        return self.root / "vae" / LATENT_STATS

    @property
    def vision_weights(self) -> Path:
        return self.root / "vision" / "vit.safetensors"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def stage(self, name: str) -> Path:
        return self.root / "stages" / name

    def is_done(self, name: str) -> bool:
        return (self.stage(name) / "done.json").is_file()

    def mark_done(self, name: str, summary: dict) -> None:
        write_text(self.stage(name) / "done.json", json.dumps(summary, indent=2))


@dataclass
class RunContext:
    """Everything a stage runner needs, loaded lazily and once."""

    recipe: Recipe
    data: DataSource
    run: RunFolder
    env: DistEnv
    progress: bool = True
    _items: dict = field(default_factory=dict)
    _peak: float | None = None

    @property
    def device(self) -> torch.device:
        return self.env.device

    def items(self, split: str, generation: bool = False) -> list[Sample]:
        """The samples of `split`; for the generation stages, from the recipe's generation split
        file when it names one for `split`."""
        key = (split, generation and split in self.recipe.data.generation_split)
        if key not in self._items:
            if key[1]:
                path = annotation_path(self.recipe.data.generation_split[split], self.data.root)
                self._items[key] = self.data.annotated(path, split)
            else:
                self._items[key] = self.data.samples(split)
        return self._items[key]

    def config(self) -> UniXConfig:
        return derive_config(self.recipe, self.run)

    def tokenizer(self):
        if not self.run.tokenizer.is_file():
            raise TrainError(f"{self.run.tokenizer} is missing: run the tokenizer stage first (or set `init:`)")
        special = SpecialTokens(**vars(self.config().tokens)) if self.recipe.init else None
        return ReportTokenizer.load(self.run.tokenizer, special=special)

    def vae(self):
        """The frozen VAE on this rank's device."""
        if not self.run.vae_weights.is_file():
            raise TrainError(f"{self.run.vae_weights} is missing: run the vae stage first (or set `init:`)")
        vae = LatentVAE(self.config().vae)
        vae.autoencoder.load_state_dict(load_file(self.run.vae_weights))
        return vae.to(self.device).for_inference()

    def peak_flops(self) -> float:
        if self.recipe.runtime.peak_flops:
            return self.recipe.runtime.peak_flops
        if self._peak is None:
            self._peak = broadcast_object(measure_peak_flops(self.device), self.env)
        return self._peak

    def loop_settings(self, name: str, accumulation: int, lr_scales: tuple = ()) -> LoopSettings:
        """The loop settings of stage `name`: its steps, LR, warm-up and EMA, the recipe's optimizer
        and runtime."""
        stage, opt, rt = self.recipe.stage(name), self.recipe.optimizer, self.recipe.runtime
        return LoopSettings(
            steps=stage.steps, lr=stage.lr, warmup=stage.warmup, accumulation=accumulation, betas=opt.betas,
            eps=opt.eps, weight_decay=opt.weight_decay,
            clip_grad=opt.clip_grad if stage.clip_grad is None else stage.clip_grad, ema=stage.ema,
            ema_warmup=stage.ema_warmup, log_every=rt.log_every, val_every=rt.val_every,
            checkpoint_every=rt.checkpoint_every, keep_checkpoints=rt.keep_checkpoints, progress=self.progress,
            description=name, lr_scales=lr_scales, tensorboard=rt.tensorboard, wandb=rt.wandb)


def derive_config(recipe: Recipe, run: RunFolder) -> UniXConfig:
    """The run's model config from the recipe and what the earlier stages produced."""
    if recipe.init:
        base = UniXConfig.load(resolve_model_folder(recipe.init) / CONFIG).to_dict()
        base.pop("conventions", None)  # our training lays prompts out our way: the result carries ours
    else:
        base = preset(recipe.preset).to_dict()
    merged = _merge(base, recipe.model, recipe.source)
    if run.tokenizer.is_file() and not recipe.init:
        tokenizer = ReportTokenizer.load(run.tokenizer)
        merged["tokens"] = tokenizer.special.as_dict()
        merged["llm"]["vocab_size"] = tokenizer.vocab_size
    if run.latent_stats.is_file():
        stats = json.loads(run.latent_stats.read_text())
        merged["vae"]["shift"], merged["vae"]["scale"] = -stats["mean"], 1.0 / stats["std"]
    try:
        if recipe.uses_repa():
            merged["gen"]["repa_dim"] = repa_encoder_dim(recipe.repa_encoder, UniXConfig.from_dict(merged))
        return UniXConfig.from_dict(merged)
    except (RecipeError, TrainError):
        raise
    except (TypeError, ValueError) as err:
        raise TrainError(f"{recipe.source}: the model config is invalid ({err}); check `model:` overrides") from err


def _merge(base: dict, overrides: dict, source: str, where: str = "model.") -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if key not in out:
            raise TrainError(f"{source}: {where}{key} is not a config field; known: {', '.join(sorted(out))}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise TrainError(f"{source}: {where}{key} must be a mapping")
            out[key] = _merge(out[key], value, source, f"{where}{key}.")
        else:
            out[key] = value
    return out
