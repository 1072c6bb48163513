"""One UniX stage end to end: start from the previous stage's export (or `init`, or a seeded random
network), freeze what the stage does not train, build its data, train with the generic loop,
validate, and export the EMA weights to RUN_DIR/model."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from dataclasses import asdict

import torch
from safetensors.torch import load_file

from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT
from unixcxr.model.config import UniXConfig
from unixcxr.model.io import load_model_folder, resolve_model_folder, save_model_folder
from unixcxr.model.unix import UniX
from unixcxr.train.builders import GenerationBuilder, UnderstandingBuilder, vit_images
from unixcxr.train.checkpoint import latest_checkpoint
from unixcxr.train.compile import compile_regions
from unixcxr.train.context import RunContext, TrainError
from unixcxr.train.data import BatchPlan, film_cache, items_key, latent_cache, micro_batches, tokenize
from unixcxr.train.distributed import barrier, choose_strategy, wrap
from unixcxr.train.loop import Trainer
from unixcxr.train.plots import plot_metrics
from unixcxr.train.recipe import MODEL_STAGES
from unixcxr.train.stages import (
    GENERATION,
    SPECS,
    ModelLoss,
    build_repa_encoder,
    check_resolution,
    set_trainable,
    with_flops,
)
from unixcxr.train.validate import Validator

VAL_SEED_OFFSET = 1_000_003  # validation micro-batches draw from streams no training step uses
FEATURE_MEAN_FILMS = 512  # training films the connector's per-position mean feature is fitted on


def start_model(ctx: RunContext, name: str, config: UniXConfig) -> UniX:
    """The network a stage starts from: the run's latest export, `init`, or a seeded random one."""
    earlier = MODEL_STAGES[:MODEL_STAGES.index(name)]
    if any(ctx.recipe.stage(n) is not None and ctx.run.is_done(n) for n in earlier):
        source = ctx.run.model
    elif ctx.recipe.init:
        source = resolve_model_folder(ctx.recipe.init)
    else:
        torch.manual_seed(ctx.recipe.seed)
        model = UniX(config)
        if ctx.run.vision_weights.is_file():  # stage 0b's ViT
            model.vision.load_state_dict(load_file(ctx.run.vision_weights))
        return model
    model, _, _ = load_model_folder(source, with_vae=False)
    differing = model.config.diff(config)
    if differing:
        raise TrainError(f"{source}: its config differs from this run's in {', '.join(differing)}; "
                         "it was made by another recipe")
    return model.train()


def run_model_stage(ctx: RunContext, name: str, resume: bool) -> dict:
    spec, stage, rt = SPECS[name], ctx.recipe.stage(name), ctx.recipe.runtime
    config, env, folder = ctx.config(), ctx.env, ctx.run.stage(name)
    grid = check_resolution(config, spec, stage.resolution)
    if latest_checkpoint(folder / "checkpoints") is not None and not resume:
        raise TrainError(f"{folder} holds checkpoints of an interrupted stage; pass --resume to continue it")
    model = start_model(ctx, name, config)
    if spec.init_gen_from_und:
        model.init_gen_from_und()  # resumed runs overwrite these with the checkpoint's weights
    model = model.to(ctx.device)
    trainable = set_trainable(model, spec, stage.repa)
    strategy = choose_strategy(rt.strategy, env, config.name)
    tokenizer = ctx.tokenizer()
    build, items = stage_data(ctx, name, config, tokenizer, "train")
    # Everything that runs a part of the network on its own happens before sharding: FSDP2 must see
    # its first forward through the whole model, and a sharded ViT cannot be called alone.
    if spec.task != GENERATION and config.vision.center_features:
        films = build.films[:FEATURE_MEAN_FILMS]
        model.fit_feature_mean(vit_images(films[i:i + 64], config).to(ctx.device) for i in range(0, len(films), 64))
    repa_encoder = build_repa_encoder(ctx.recipe.repa_encoder, model, ctx.device, own_copy=strategy == "fsdp") \
        if stage.repa else None
    if rt.compile:
        compile_regions(model)
    units = [*model.layers, *model.vision.vision_tower.blocks, model.vision]
    wrapped = wrap(model, strategy, env, units)
    params = {n: p for n, p in model.named_parameters() if n in trainable}
    loss_fn = ModelLoss(wrapped, spec, ctx.device, repa_encoder, stage.timestep_shift, stage.repa_weight)
    plan = BatchPlan(len(items), stage.batch_size, stage.micro_batch_size, env.world_size, env.rank,
                     ctx.recipe.seed)
    settings = ctx.loop_settings(name, plan.accumulation, lr_scales=(("vision.", stage.vit_lr_scale),))
    trainer = Trainer(wrapped, params, loss_fn, settings, env, folder,
                      meta={"stage": name, "config": config.to_dict(), "recipe": asdict(stage)},
                      peak_flops=ctx.peak_flops(), strategy=strategy)
    trainer.validate = validator(ctx, name, config, model, loss_fn, tokenizer, grid)
    if resume:
        trainer.resume(config, name, stage)
    stream = micro_batches(plan, build, trainer.step, stage.steps, rt.num_workers)
    last = trainer.fit(with_flops(stream, model, spec.freeze_und, repa_encoder))

    export(ctx, model, trainer)
    if env.is_main:
        plot_metrics(folder / "metrics.jsonl", folder / "loss.png", title=f"{name} ({config.name})")
    counts = model.parameter_counts()
    return {"steps": stage.steps, "trainable_parameters": sum(p.numel() for p in params.values()),
            "total_parameters": counts["total"], "strategy": strategy, **last}


def stage_data(ctx: RunContext, name: str, config: UniXConfig, tokenizer, split: str):
    """The micro-batch builder of a stage over one split, and that split's items."""
    spec, stage, rt = SPECS[name], ctx.recipe.stage(name), ctx.recipe.runtime
    items = ctx.items(split, generation=spec.task == GENERATION)
    if not items:
        return None, items
    tokens = tokenize(tokenizer, items, rt.max_report_tokens)
    ids = [it.id for it in items]
    size = config.vision.image_size
    vit_films = film_cache(items, size, ctx.run.cache, ctx.env, rt.cache_workers, ctx.progress)
    if spec.task != GENERATION:
        return UnderstandingBuilder(config, vit_films, tokens, ids, ctx.recipe.seed, rt.pack_to), items
    films = vit_films if stage.resolution == size else film_cache(items, stage.resolution, ctx.run.cache, ctx.env,
                                                                  rt.cache_workers, ctx.progress)
    vae = ctx.vae()
    latents = latent_cache(films, f"{items_key(items)}_{stage.resolution}", vae, ctx.run.cache, ctx.env,
                           ctx.device, ctx.progress)
    dropout = config.gen.text_dropout if stage.text_dropout is None else stage.text_dropout
    return GenerationBuilder(config, latents, tokens, ids, ctx.recipe.seed, dropout,
                             vit_films if stage.repa else None, rt.pack_to), items


def validator(ctx: RunContext, name: str, config: UniXConfig, model: UniX, loss_fn, tokenizer, grid):
    """The stage's Validator over the validate split, or None when the data has no such split."""
    spec, stage, rt = SPECS[name], ctx.recipe.stage(name), ctx.recipe.runtime
    build, items = stage_data(ctx, name, config, tokenizer, "validate")
    if build is None:
        return None
    n = min(rt.val_samples, len(items))
    order = list(range(n))
    chunks = [order[i:i + stage.micro_batch_size] for i in range(0, n, stage.micro_batch_size)]
    batches = [build(VAL_SEED_OFFSET, c, idx) for c, idx in enumerate(chunks)]
    common = dict(model=model, loss_fn=loss_fn, batches=batches, folder=ctx.run.stage(name), env=ctx.env,
                  tokenizer=tokenizer, task=spec.task, seed=ctx.recipe.seed)
    if spec.task == GENERATION and n > 1:
        # the same films, noise, t and dropout, each with the next film's prompt: does the text count?
        prompts = build.tokens.prompts
        moved = dataclasses.replace(build, tokens=dataclasses.replace(
            build.tokens, prompts=[*prompts[1:n], prompts[0], *prompts[n:]]))
        common["other_prompt_batches"] = [moved(VAL_SEED_OFFSET, c, idx) for c, idx in enumerate(chunks)]
    if spec.task != GENERATION:
        k = min(rt.val_reports, len(items))
        films = build.films[:k]
        train_reports = [it.report for it in ctx.items("train")]
        return Validator(**common, images=vit_images(films, config).to(ctx.device),
                         prompt=tokenizer.encode(DEFAULT_REPORT_PROMPT),
                         references=[it.report for it in items[:k]],
                         baseline_report=Counter(" ".join(r.split()) for r in train_reports).most_common(1)[0][0],
                         max_new_tokens=rt.max_report_tokens)
    k = min(rt.val_images, len(items))
    real = film_cache(items, stage.resolution, ctx.run.cache, ctx.env, rt.cache_workers, ctx.progress)[:k]
    return Validator(**common, prompts=build.tokens.prompts[:k], real_films=real, vae=ctx.vae(), grid=grid,
                     sample_points=rt.sample_points)


def training_facts(ctx: RunContext) -> dict:
    """What the model card says about a run: the recipe, the data and the steps of each stage."""
    recipe = ctx.recipe
    stages = {name: getattr(recipe.stage(name), "steps", "trained") for name in recipe.stage_names()}
    return {"recipe": recipe.source, "preset": recipe.preset, "seed": recipe.seed, "init": recipe.init,
            "data": str(ctx.data.root), "data_kind": ctx.data.kind,
            "studies": {split: len(ctx.items(split)) for split in ("train", "validate", "test")},
            "stages": stages}


def export(ctx: RunContext, model: UniX, trainer: Trainer) -> None:
    """EMA weights -> RUN_DIR/model (with the VAE, the tokenizer and a model card), atomically, by rank 0."""
    env = ctx.env
    with trainer.ema.applied() if trainer.ema is not None else contextlib.nullcontext():
        if hasattr(model, "unshard"):  # FSDP2: gather a whole copy on rank 0's CPU
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            full = None
            if env.is_main:
                with torch.device("meta"):
                    full = UniX(model.config)
                full = full.to_empty(device="cpu")
                full.load_state_dict(state)
                full.rope.reset()
        else:
            full = model
        if env.is_main:  # a run without a VAE (understanding only) exports a model that reads but cannot draw
            vae = ctx.vae() if ctx.run.vae_weights.is_file() else None
            save_model_folder(ctx.run.model, full, vae=vae, tokenizer_file=ctx.run.tokenizer,
                              source="trained with `unixcxr train`", training=training_facts(ctx))
    barrier(env)

