"""`unixcxr train`: run a recipe's stages in order, each resumable, in one run folder.

    RUN_DIR/
      recipe.yaml                  the recipe this run follows (a resumed run must match it)
      tokenizer.json               stage 0a
      vision/vit.safetensors       stage 0b, the encoder's starting weights (from-scratch runs)
      vae/vae.safetensors          stage 0c, with vae/latent_stats.json (scale = 1/std, shift = -mean)
      stages/<name>/               checkpoints/, metrics.jsonl, loss.png, samples/, done.json
      model/                       the exported model folder (EMA weights) after each model stage
      cache/                       films and VAE latents per resolution

The model config of a run is derived, never edited by hand: the recipe's preset and overrides,
the trained tokenizer's vocabulary and special ids, the fitted latent scale/shift, and the REPA
target encoder's width. Every checkpoint stores it and is refused if it differs."""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unixcxr.data.reports import DataError
from unixcxr.data.sources import DataSource, Sample
from unixcxr.model.config import UniXConfig, preset
from unixcxr.model.io import CONFIG, TOKENIZER, VAE_WEIGHTS, resolve_model_folder
from unixcxr.train.distributed import DistEnv, barrier, broadcast_object, close_distributed, init_distributed
from unixcxr.train.loop import LoopSettings
from unixcxr.train.mfu import measure_peak_flops
from unixcxr.train.preflight import annotation_path, check_inputs, check_shapes
from unixcxr.train.recipe import STAGE_ORDER, Recipe, RecipeError, recipe_diff

LATENT_STATS = "latent_stats.json"
RESUMABLE_RECIPE_FIELDS = ("runtime.",)  # prefixes that may differ when a run is continued


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
        path = self.stage(name) / "done.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".done.json.tmp")
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        os.replace(tmp, path)


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
        from unixcxr.data.tokenizer import ReportTokenizer, SpecialTokens

        if not self.run.tokenizer.is_file():
            raise TrainError(f"{self.run.tokenizer} is missing: run the tokenizer stage first (or set `init:`)")
        special = SpecialTokens(**vars(self.config().tokens)) if self.recipe.init else None
        return ReportTokenizer.load(self.run.tokenizer, special=special)

    def vae(self):
        """The frozen VAE on this rank's device."""
        from safetensors.torch import load_file

        from unixcxr.model.vae import LatentVAE

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
        from unixcxr.data.tokenizer import ReportTokenizer

        tokenizer = ReportTokenizer.load(run.tokenizer)
        merged["tokens"] = tokenizer.special.as_dict()
        merged["llm"]["vocab_size"] = tokenizer.vocab_size
    if run.latent_stats.is_file():
        stats = json.loads(run.latent_stats.read_text())
        merged["vae"]["shift"], merged["vae"]["scale"] = -stats["mean"], 1.0 / stats["std"]
    try:
        if recipe.uses_repa():
            from unixcxr.train.stages import repa_encoder_dim

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


# --- stage 0a: tokenizer ----------------------------------------------------------------------------
def run_tokenizer_stage(ctx: RunContext, name: str = "tokenizer", resume: bool = False) -> dict:
    """Train the BPE on training reports and the instruction templates (or copy `init`'s)."""
    if ctx.recipe.init:
        if ctx.env.is_main:
            shutil.copyfile(resolve_model_folder(ctx.recipe.init) / TOKENIZER, ctx.run.tokenizer)
        barrier(ctx.env)
        return {"source": ctx.recipe.init}
    from unixcxr.data.prompts import REPORT_INSTRUCTIONS
    from unixcxr.data.tokenizer import ReportTokenizer

    stage = ctx.recipe.stages.tokenizer
    items = ctx.items("train")
    if ctx.env.is_main:
        texts = [it.report for it in items] + list(REPORT_INSTRUCTIONS) * stage.min_frequency
        texts += [it.instruction for it in items if it.instruction]
        tokenizer = ReportTokenizer.train(texts, vocab_size=stage.vocab_size, min_frequency=stage.min_frequency)
        tokenizer.save(ctx.run.tokenizer)
    barrier(ctx.env)
    return {"vocab_size": ctx.tokenizer().vocab_size, "reports": len(items)}


# --- the run ----------------------------------------------------------------------------------------
def _runners():
    from unixcxr.train.model_stage import run_model_stage
    from unixcxr.train.vae import run_vae_stage
    from unixcxr.train.vision import run_vision_stage

    return {"tokenizer": run_tokenizer_stage, "vae": run_vae_stage, "vision": run_vision_stage,
            "und_sft": run_model_stage,
            "gen_pretrain": run_model_stage, "gen_finetune": run_model_stage}


def check_run_folder(recipe: Recipe, run: RunFolder, resume: bool, stage: str | None) -> bool:
    """Whether RUN_DIR starts fresh; an error if it holds another run, or this run with another recipe.
    A folder holding only recipe.yaml (a start that failed before any stage wrote anything) is fresh."""
    others = [p for p in run.root.iterdir() if p != run.recipe] if run.root.is_dir() else []
    if not run.recipe.is_file() or not others:
        if others:
            raise TrainError(f"{run.root} is not empty and holds no run (no recipe.yaml); choose a new --out")
        return True
    if not (resume or stage):
        raise TrainError(f"{run.root} already holds a run; pass --resume to continue it, or choose a new --out")
    saved = Recipe.load(run.recipe)
    changed = [f for f in recipe_diff(saved.to_dict(), recipe.to_dict())
               if not f.startswith(RESUMABLE_RECIPE_FIELDS) and not f.endswith(".steps")]
    if changed:
        raise TrainError(f"{recipe.source} differs from the run's {run.recipe} in: {', '.join(changed)}; "
                         "continue with the run's own recipe, or choose a new --out")
    return False


def start_run(recipe: Recipe, source: DataSource, run: RunFolder, env: DistEnv, resume: bool,
              stage: str | None) -> None:
    """Rank 0 checks the run folder, the recipe's files and the data, then writes recipe.yaml; the
    other ranks wait for its verdict, so no rank races another over the folder, and a start that
    fails leaves nothing behind."""
    problem = None
    if env.is_main:
        try:
            fresh = check_run_folder(recipe, run, resume, stage)
            check_inputs(recipe, source, recipe.stage_names(), env.world_size)
            check_shapes(recipe, derive_config(recipe, run))
            if fresh:
                run.root.mkdir(parents=True, exist_ok=True)
                recipe.save(run.recipe)
        except (TrainError, RecipeError, DataError) as err:
            problem = err
    problem = broadcast_object(problem, env)
    if problem is not None:
        raise problem


def train(recipe_path: str | Path, data_dir: str | Path, out_dir: str | Path, stage: str | None = None,
          resume: bool = False, device: str | None = None, progress: bool = True,
          reports: str | Path | None = None) -> dict[str, dict]:
    """Run (or continue) the recipe's stages; returns each stage's summary. `data_dir` is a MIMIC-CXR-JPG
    layout folder or a shards folder; `reports` an optional cleaned-reports JSONL laid over its text."""
    recipe = Recipe.load(recipe_path)
    names = recipe.stage_names()
    if stage is not None and stage not in names:
        raise TrainError(f"--stage {stage}: the recipe has no such stage; it has {', '.join(names)} "
                         f"(all stages: {', '.join(STAGE_ORDER)})")
    run = RunFolder(Path(out_dir))
    env = init_distributed(device)
    try:
        source = DataSource(data_dir, reports)
        start_run(recipe, source, run, env, resume, stage)
        ctx = RunContext(recipe, source, run, env, progress)
        summaries, runners = {}, _runners()
        for name in names:
            if run.is_done(name):
                if name == stage:
                    raise TrainError(f"stage {name} of {run.root} is already done "
                                     f"({run.stage(name) / 'done.json'}); nothing to run")
                continue
            if stage is not None and name != stage:
                if STAGE_ORDER.index(name) < STAGE_ORDER.index(stage):
                    raise TrainError(f"--stage {stage} needs stage {name} first: run it with --stage {name}")
                continue
            start = time.perf_counter()
            summary = runners[name](ctx, name, resume)
            summary["wall_seconds"] = time.perf_counter() - start
            if env.is_main:
                run.mark_done(name, summary)
            barrier(env)
            summaries[name] = summary
        return summaries
    finally:
        close_distributed()
