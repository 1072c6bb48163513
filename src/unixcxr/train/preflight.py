"""Before a run: check the recipe and the data whole, and (`unixcxr train --dry-run`) plan it.

`check_inputs` runs on rank 0 before anything is written: the recipe's files (init folder, REPA
encoder), every split each stage reads (the data set's own or the recipe's generation split) and
every image file behind them. `plan_run` estimates per stage what a user needs to rent GPUs for a
paper run: steps, tokens, FLOPs (the network's own count on a meta-device copy, on micro-batches of
the data's mean text lengths), memory per GPU for the strategy chosen, and wall time at the MFU we
measured on that kind of GPU.

Memory = training state (fp32 weights; gradients, AdamW moments and EMA of the trainable part;
all divided by the GPU count under FSDP) + activations, estimated as ACTIVATION_BYTES per hidden
unit, per token, per layer. That constant was fitted to the peak memory measured on an H200 at
paper.yaml's micro-batches (unix preset, bf16 autocast, no sharding: und_sft 74.2 GiB at 16,
gen_pretrain 49.2 GiB at 32, gen_finetune 47-51 GiB at 8); expect +-20%."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from unixcxr.data.reports import DataError
from unixcxr.data.sources import DataSource
from unixcxr.model.config import UniXConfig, preset
from unixcxr.model.io import TOKENIZER, resolve_model_folder
from unixcxr.model.sequence import collate, generation_layout, understanding_layout
from unixcxr.model.tokenizer import ReportTokenizer
from unixcxr.model.unix import UniX
from unixcxr.model.vae import LatentVAE
from unixcxr.model.vision import VisionEncoder
from unixcxr.train.context import RunFolder, annotation_path, derive_config
from unixcxr.train.distributed import FSDP_PRESETS
from unixcxr.train.flops import encoder_flops, step_flops
from unixcxr.train.mfu import FORWARD_BACKWARD, count_training_flops, measure_peak_flops
from unixcxr.train.recipe import GENERATION_STAGES, MODEL_STAGES, Recipe, RecipeError
from unixcxr.train.stages import SPECS, check_resolution, set_trainable

GIB = 2**30
ACTIVATION_BYTES = {"und_sft": 60.0, "gen_pretrain": 40.0, "gen_finetune": 40.0}  # bf16, fitted (above)
FP32_ACTIVATION_FACTOR = 2.0  # without autocast (CPU) activations are float32
CHARS_PER_TOKEN = 4.0  # a byte-level BPE over radiology reports, when no tokenizer exists yet
TEXT_SAMPLE = 2000  # texts whose token lengths are averaged


@dataclass(frozen=True)
class Machine:
    """A kind of accelerator, with the MFU our training measured on it (eager, paper.yaml micro-batches)."""

    name: str
    peak_flops: float  # achievable bf16 matmul FLOP/s, measured (not the datasheet's)
    memory_gib: float
    mfu: dict[str, float]
    source: str


H200_MFU = {"und_sft": 0.404, "gen_pretrain": 0.293, "gen_finetune": 0.37}
MACHINES = {
    "h200": Machine("H200", 7.5e14, 141, H200_MFU, "measured on one H200 (2026-12-04): matmul peak 717-796 TFLOP/s"),
    "h100": Machine("H100 80GB", 7.5e14, 80, H200_MFU,
                    "not measured on an H100: the H200's MFU and peak (the same Hopper compute; less memory)"),
}
DEFAULT_MFU = 0.3  # stages never measured on a GPU (tokenizer, vision, vae)
CPU_MFU = 0.55  # the small preset's eager training on 2 CPU cores (README: 53-60%)


def check_inputs(recipe: Recipe, source: DataSource, names: list[str],
                 world_size: int = 1) -> dict[str, dict[str, int]]:
    """Every file the stages `names` will read exists, and every global batch splits over `world_size`
    processes; returns samples per task and split."""
    for name in names:
        stage = recipe.stage(name)
        micro = getattr(stage, "micro_batch_size", None)
        if micro and stage.batch_size % (micro * world_size):
            fix = f"set micro_batch_size to a divisor of {stage.batch_size // world_size}" \
                if stage.batch_size % world_size == 0 else f"use a batch_size divisible by {world_size}"
            raise RecipeError(f"{recipe.source}: stages.{name}.batch_size {stage.batch_size} does not split into "
                              f"micro-batches of {micro} on {world_size} processes; {fix}, or use fewer processes")
    if recipe.init is not None and not Path(recipe.init).expanduser().is_dir():
        raise RecipeError(f"{recipe.source}: init {recipe.init!r} is not a folder; give a model folder (e.g. made "
                          "by `unixcxr convert-official`) or null to train from scratch")
    if recipe.repa_encoder != "vit" and recipe.uses_repa() and \
            not (Path(recipe.repa_encoder).expanduser() / "config.json").is_file():
        raise RecipeError(f"{recipe.source}: repa_encoder {recipe.repa_encoder!r} is neither 'vit' nor a folder with "
                          "config.json (a local DINOv2 / RAD-DINO copy in the Hugging Face layout)")
    counts: dict[str, dict[str, int]] = {}
    if any(n != "tokenizer" or recipe.init is None for n in names):
        counts["all"] = source.check_files(["train"])
        if not counts["all"]["train"]:
            raise DataError(f"{source.root}: the train split holds no image with report text")
        if "validate" in source.splits():
            counts["all"].update(source.check_files(["validate"]))
    if any(n in GENERATION_STAGES for n in names):
        for split, value in recipe.data.generation_split.items():
            samples = source.annotated(annotation_path(value, source.root), split)
            counts.setdefault("generation", {})[split] = len(samples)
    return counts


def check_shapes(recipe: Recipe, config: UniXConfig) -> None:
    """Every stage's resolution fits the model (the ViT's input side, the VAE's factor, the latent
    position table): found before the first stage runs, not when its turn comes."""

    for name in recipe.stage_names():
        stage = recipe.stage(name)
        try:
            if name in MODEL_STAGES:
                check_resolution(config, SPECS[name], stage.resolution)
            elif name == "vae":
                for field, side in (("resolution", stage.resolution), ("crop", stage.crop or stage.resolution)):
                    if side % config.vae.downsample:
                        raise ValueError(f"stages.vae.{field} {side} is not a multiple of the VAE's downsampling "
                                         f"factor {config.vae.downsample}")
        except ValueError as err:
            raise RecipeError(f"{recipe.source}: {err}") from None


# --- the plan -------------------------------------------------------------------------------------
@dataclass
class StagePlan:
    name: str
    steps: int
    batch: int
    micro: int
    accumulation: int
    tokens_per_sample: float
    flops: float  # the whole stage, all GPUs
    memory_gib: float | None  # per GPU
    hours: float | None
    note: str = ""
    fits: int | None = None  # the largest micro-batch whose estimate fits the GPU's memory


def text_lengths(source: DataSource, tokenizer=None) -> tuple[float, float]:
    """Mean token length of report targets and of generation prompts over a sample of training texts."""
    samples = source.samples("train")[:TEXT_SAMPLE]
    reports, prompts = [s.report for s in samples], [s.prompt for s in samples]
    if tokenizer is not None:
        def mean(texts):
            return sum(map(len, tokenizer.encode_batch(texts))) / max(1, len(texts))
    else:
        def mean(texts):
            return sum(len(t) for t in texts) / CHARS_PER_TOKEN / max(1, len(texts))
    return mean(reports), mean(prompts)


def _meta_model(config: UniXConfig):

    with torch.device("meta"):
        return UniX(config)


def _micro_batch(config: UniXConfig, stage: str, micro: int, resolution: int, report: float, prompt: float):

    s = config.tokens
    if stage == "und_sft":
        layout = understanding_layout(s, config.vision.num_tokens, [s.bos] * 20, [s.bos] * round(report))
    else:
        side = resolution // config.vae.downsample
        layout = generation_layout(s, [s.bos] * round(prompt), side * side)
    return collate([layout] * micro, left_pad=stage != "und_sft")


def state_bytes(model, trainable: int, ema: bool) -> float:
    total = sum(p.numel() for p in model.parameters())
    return 4.0 * total + (4.0 + 8.0 + (4.0 if ema else 0.0)) * trainable


def plan_run(recipe: Recipe, config: UniXConfig, source: DataSource, gpus: int, machine: Machine | None,
             strategy: str, cpu_peak: float = 0.0, tokenizer=None) -> list[StagePlan]:
    """Per stage: steps, tokens, FLOPs, memory per device and wall time (see the module docstring)."""

    report, prompt = text_lengths(source, tokenizer)
    model = _meta_model(config)
    plans = []
    for name in recipe.stage_names():
        stage = recipe.stage(name)
        if name not in MODEL_STAGES:
            plans.append(_image_stage_plan(name, stage, config, gpus, machine, cpu_peak))
            continue
        spec = SPECS[name]
        world = max(1, gpus)
        accumulation = max(1, stage.batch_size // (stage.micro_batch_size * world))
        seq = _micro_batch(config, name, stage.micro_batch_size, stage.resolution, report, prompt)
        trainable = sum(p.numel() for p in set_trainable(model, spec, stage.repa).values())
        flops_micro = step_flops(model, seq, spec.freeze_und)
        if stage.repa:
            flops_micro += encoder_flops(model.vision) * stage.micro_batch_size
        micro_tokens = float((seq.segment >= 0).sum())
        steps_flops = flops_micro * stage.batch_size / stage.micro_batch_size * stage.steps
        states = state_bytes(model, trainable, stage.ema > 0) / (world if strategy == "fsdp" else 1)
        if stage.repa and strategy == "fsdp" and recipe.repa_encoder == "vit":  # REPA's private ViT copy, unsharded
            states += 4.0 * sum(p.numel() for p in model.vision.parameters())
        per_token = ACTIVATION_BYTES[name] * (FP32_ACTIVATION_FACTOR if machine is None else 1.0)
        activations = per_token * micro_tokens * config.llm.num_layers * config.llm.hidden_size
        if machine is not None:
            peak, mfu, note = machine.peak_flops, machine.mfu.get(name, DEFAULT_MFU), ""
        else:
            peak, mfu, note = cpu_peak, CPU_MFU, ""
        hours = steps_flops / (peak * mfu * world) / 3600 if peak else None
        memory = (states + activations) / GIB
        fits = None
        if machine is not None:
            per_sample = activations / stage.micro_batch_size
            fits = max(0, int((machine.memory_gib * GIB - states) // per_sample))
            if memory > machine.memory_gib:
                note = f"does not fit {machine.memory_gib:g} GiB: lower micro_batch_size or use more GPUs with FSDP"
        plans.append(StagePlan(name, stage.steps, stage.batch_size, stage.micro_batch_size, accumulation,
                               micro_tokens / stage.micro_batch_size, steps_flops, memory, hours, note, fits))
    return plans


def _image_stage_plan(name: str, stage, config: UniXConfig, gpus: int, machine: Machine | None,
                      cpu_peak: float) -> StagePlan:
    """The stages that train on images alone: FLOPs of the network trained (the vision stage's frozen
    teacher not counted); memory not estimated (far below the model stages')."""
    if name == "tokenizer":
        return StagePlan(name, 0, 0, 0, 0, 0.0, 0.0, None, None, "seconds on a CPU")

    resolution = stage.crop or stage.resolution if name == "vae" else config.vision.image_size
    with torch.device("meta"):
        net = LatentVAE(config.vae) if name == "vae" else VisionEncoder(config.vision)
        x = torch.zeros(1, 3, resolution, resolution)
    with torch.no_grad():
        per_image = FORWARD_BACKWARD * count_training_flops(lambda: net(x))
    flops = per_image * stage.batch_size * stage.steps
    world = max(1, gpus)
    peak, mfu = (machine.peak_flops, DEFAULT_MFU) if machine is not None else (cpu_peak, CPU_MFU)
    hours = flops / (peak * mfu * world) / 3600 if peak else None
    note = f"MFU {mfu:.0%} assumed" if machine is not None else ""
    return StagePlan(name, stage.steps, stage.batch_size, stage.micro_batch_size,
                     max(1, stage.batch_size // (stage.micro_batch_size * world)), 0.0, flops, None, hours, note)


def format_plan(plans: list[StagePlan], machine: Machine | None, gpus: int, strategy: str) -> list[str]:
    where = f"{gpus} x {machine.name}" if machine else "this CPU"
    lines = [f"plan for {where}, strategy {strategy}:",
             f"{'stage':<13} {'steps':>7} {'batch':>6} {'micro':>6} {'accum':>6} {'tok/sample':>10} {'FLOP':>10} "
             f"{'GiB/dev':>8} {'fits':>5} {'hours':>8}"]
    for p in plans:
        mem = f"{p.memory_gib:8.1f}" if p.memory_gib is not None else f"{'-':>8}"
        mem += f" {p.fits:>5}" if p.fits is not None else f" {'-':>5}"
        hours = f"{p.hours:8.3g}" if p.hours is not None else f"{'-':>8}"
        flops = f"{p.flops:10.2e}" if p.flops else f"{'-':>10}"
        tokens = f"{p.tokens_per_sample:10.0f}" if p.tokens_per_sample else f"{'-':>10}"
        lines.append(f"{p.name:<13} {p.steps:>7} {p.batch:>6} {p.micro:>6} {p.accumulation or '-':>6} {tokens} {flops} "
                     f"{mem} {hours}" + (f"  ({p.note})" if p.note else ""))
    total = sum(p.hours for p in plans if p.hours)
    gpu_hours = f" ({total * gpus:.0f} GPU-hours)" if machine else ""
    lines.append(f"all stages: {total:.1f} hours of wall time{gpu_hours}")
    lines.append("MFU: " + (machine.source if machine else f"{CPU_MFU:.0%} of this CPU's measured matmul peak"))
    if machine:
        lines.append(f"fits: the largest micro-batch whose memory estimate fits {machine.memory_gib:g} GiB "
                     "(states + activations, +-20%)")
    return lines


def dry_run(recipe_path: str | Path, data: str | Path, reports: str | Path | None = None,
            out: str | Path | None = None, gpus: int = 1, gpu: str = "h100") -> list[str]:
    """What `unixcxr train --dry-run` prints: the checks a real start makes, the data per split and the
    plan per stage. Writes nothing."""

    recipe = Recipe.load(recipe_path)
    source = DataSource(data, reports)
    counts = check_inputs(recipe, source, recipe.stage_names(), gpus if gpu != "cpu" else 1)
    run = RunFolder(Path(out) if out else Path("/nonexistent-run-folder"))
    config = derive_config(recipe, run)
    check_shapes(recipe, config)
    tokenizer_file = run.tokenizer if run.tokenizer.is_file() else \
        resolve_model_folder(recipe.init) / TOKENIZER if recipe.init else None
    tokenizer = ReportTokenizer.load(tokenizer_file) if tokenizer_file else None
    if tokenizer is None and recipe.stages.tokenizer is not None:  # from scratch: the size the stage will train
        fields = config.to_dict()
        fields["llm"]["vocab_size"] = recipe.stages.tokenizer.vocab_size
        fields["tokens"] = preset("tiny").to_dict()["tokens"]  # our BPE's special ids (the first few)
        config = UniXConfig.from_dict(fields)
    machine = None if gpu == "cpu" else MACHINES[gpu]
    cpu_peak = measure_peak_flops(torch.device("cpu")) if machine is None else 0.0
    world = gpus if machine is not None else 1
    strategy = recipe.runtime.strategy
    if strategy == "auto":
        strategy = "single" if world == 1 else "fsdp" if recipe.preset in FSDP_PRESETS else "ddp"
    data_line = "; ".join(f"{task} " + ", ".join(f"{k} {v}" for k, v in c.items()) for task, c in counts.items())
    cleaned = f", cleaned reports {source.cleaned.path}" if source.cleaned else ""
    lengths = "the run's tokenizer" if tokenizer else f"estimated at {CHARS_PER_TOKEN:g} characters a token (no " \
        "tokenizer yet)"
    lines = [f"recipe {recipe.source}: preset {recipe.preset} ({config.llm.num_layers} layers x "
             f"{config.llm.hidden_size}), stages {', '.join(recipe.stage_names())}",
             f"data {source.root} ({source.kind}{cleaned}): {data_line}", f"text lengths: {lengths}"]
    plans = plan_run(recipe, config, source, world, machine, strategy, cpu_peak, tokenizer)
    lines += format_plan(plans, machine, world, strategy)
    lines.append("dry run: nothing was written")
    return lines
