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

import shutil
import time
from pathlib import Path

from unixcxr.data.prompts import REPORT_INSTRUCTIONS
from unixcxr.data.reports import DataError
from unixcxr.data.sources import DataSource
from unixcxr.model.io import TOKENIZER, resolve_model_folder
from unixcxr.model.tokenizer import ReportTokenizer
from unixcxr.strict import diff
from unixcxr.train.context import LATENT_STATS, RunContext, RunFolder, TrainError, derive_config
from unixcxr.train.distributed import DistEnv, barrier, broadcast_object, close_distributed, init_distributed
from unixcxr.train.model_stage import run_model_stage
from unixcxr.train.preflight import check_inputs, check_shapes
from unixcxr.train.recipe import STAGE_ORDER, Recipe, RecipeError
from unixcxr.train.vae import run_vae_stage
from unixcxr.train.vision import run_vision_stage

# RunContext, RunFolder, TrainError and derive_config live in train/context.py (the stage runners
# import them from there); they stay importable from here, where they always were
__all__ = ["LATENT_STATS", "RunContext", "RunFolder", "TrainError", "check_run_folder", "derive_config",
           "run_tokenizer_stage", "start_run", "train"]

RESUMABLE_RECIPE_FIELDS = ("runtime.",)  # prefixes that may differ when a run is continued


# --- stage 0a: tokenizer ----------------------------------------------------------------------------
def run_tokenizer_stage(ctx: RunContext, name: str = "tokenizer", resume: bool = False) -> dict:
    """Train the BPE on training reports and the instruction templates (or copy `init`'s)."""
    if ctx.recipe.init:
        if ctx.env.is_main:
            shutil.copyfile(resolve_model_folder(ctx.recipe.init) / TOKENIZER, ctx.run.tokenizer)
        barrier(ctx.env)
        return {"source": ctx.recipe.init}
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
RUNNERS = {"tokenizer": run_tokenizer_stage, "vae": run_vae_stage, "vision": run_vision_stage,
           "und_sft": run_model_stage, "gen_pretrain": run_model_stage, "gen_finetune": run_model_stage}


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
    changed = [f for f in diff(saved.to_dict(), recipe.to_dict())
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
        summaries = {}
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
            summary = RUNNERS[name](ctx, name, resume)
            summary["wall_seconds"] = time.perf_counter() - start
            if env.is_main:
                run.mark_done(name, summary)
            barrier(env)
            summaries[name] = summary
        return summaries
    finally:
        close_distributed()
