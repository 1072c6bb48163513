"""What each UniX stage trains and freezes, and its loss on one micro-batch (paper Table 1):

    und_sft       ViT + connector + und expert (embeddings, lm_head)   CE on reports
    gen_pretrain  gen expert + generation adapters (+ REPA projector)  flow-matching MSE (+ REPA)
    gen_finetune  gen expert + generation adapters                     flow-matching MSE, higher resolution

In the generation stages the und branch, ViT and VAE are frozen AND the generation loss is cut from
them by gradient stops (`freeze_und=True`), so generation training cannot change understanding.
This module imports only torch and the network, so the GPU check script can use it as is."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unixcxr.data.batches import TrainingBatch
from unixcxr.flow import matching
from unixcxr.model.config import UniXConfig
from unixcxr.model.unix import UniX, is_gen_parameter
from unixcxr.train.distributed import unwrap
from unixcxr.train.flops import encoder_flops, step_flops
from unixcxr.train.loop import MicroBatch
from unixcxr.train.mfu import count_training_flops

REPA_PREFIX = "repa_projector."
UNDERSTANDING, GENERATION = "understanding", "generation"


@dataclass(frozen=True)
class StageSpec:
    name: str
    task: str  # UNDERSTANDING or GENERATION
    freeze_und: bool  # gradient stops at every und-expert output
    init_gen_from_und: bool  # copy und weights into the gen expert when the stage starts

    def trains(self, name: str, repa: bool) -> bool:
        """Whether parameter `name` is trained in this stage."""
        if self.task == UNDERSTANDING:
            return not is_gen_parameter(name)
        return is_gen_parameter(name) and (repa or not name.startswith(REPA_PREFIX))


SPECS = {
    "und_sft": StageSpec("und_sft", UNDERSTANDING, freeze_und=False, init_gen_from_und=False),
    "gen_pretrain": StageSpec("gen_pretrain", GENERATION, freeze_und=True, init_gen_from_und=True),
    "gen_finetune": StageSpec("gen_finetune", GENERATION, freeze_und=True, init_gen_from_und=False),
}


def set_trainable(model: UniX, spec: StageSpec, repa: bool) -> dict[str, nn.Parameter]:
    """requires_grad on exactly this stage's parameters; returns them by name. A ViT whose features
    the connector centres (VisionConfig.center_features) is never trained here."""
    trainable = {}
    frozen_vit = model.config.vision.center_features  # the fitted feature mean must stay valid
    for name, p in model.named_parameters():
        p.requires_grad_(spec.trains(name, repa) and not (frozen_vit and name.startswith("vision.")))
        if p.requires_grad:
            trainable[name] = p
    return trainable


def check_resolution(config: UniXConfig, spec: StageSpec, resolution: int) -> tuple[int, int] | None:
    """The latent grid a generation stage trains at (None for understanding), or a clear error."""
    if spec.task == UNDERSTANDING:
        if resolution != config.vision.image_size:
            raise ValueError(f"stages.{spec.name}.resolution {resolution} must equal the ViT input size "
                             f"config.vision.image_size = {config.vision.image_size} (its position table is fixed)")
        return None
    f = config.vae.downsample
    if resolution % f:
        raise ValueError(f"stages.{spec.name}.resolution {resolution} is not a multiple of the VAE's "
                         f"downsampling factor {f}")
    side = resolution // f
    if side > config.gen.latent_grid_max:
        raise ValueError(f"stages.{spec.name}.resolution {resolution} gives a {side}x{side} latent grid, larger "
                         f"than the position table ({config.gen.latent_grid_max}); lower the resolution")
    return side, side


@dataclass
class ModelInputs:
    """What a UniX micro-batch carries beyond the sequence batch."""

    batch: TrainingBatch
    noise_seed: int | None = None  # seeds the flow-matching noise and t of this micro-batch
    repa_images: torch.Tensor | None = None  # [N, S, S] films in [0, 1] for the REPA target encoder


# --- REPA target encoders ------------------------------------------------------------------------
class VitRepaEncoder(nn.Module):
    """The frozen stage-1 ViT as REPA target (the offline default): its patch features, which
    model.repa_loss resamples to the latent grid. `own_copy` keeps a private frozen copy of the ViT:
    under FSDP2 the model's own ViT is sharded and can only run inside the model's forward."""

    def __init__(self, model: UniX, own_copy: bool = False):
        super().__init__()
        self.encoder = copy.deepcopy(model.vision).requires_grad_(False) if own_copy else model.vision
        self.mean, self.std = model.config.vision.norm_mean, model.config.vision.norm_std

    @property
    def dim(self) -> int:
        return self.encoder.cfg.width

    def flops_per_image(self) -> float:
        return encoder_flops(self.encoder)

    @torch.no_grad()
    def forward(self, films: torch.Tensor) -> torch.Tensor:
        # films: [N, S, S] in [0, 1] -> [N, (S / p)^2, width]
        x = ((films - self.mean) / self.std)[:, None].expand(-1, 3, -1, -1)
        return self.encoder(x.to(next(self.encoder.parameters()).dtype))


class DinoRepaEncoder(nn.Module):
    """A local DINOv2-layout folder (RAD-DINO for chest X-rays) read with transformers: patch tokens
    (class and register tokens dropped) at `size` px, as in the paper (224 px -> 16 x 16 patches)."""

    SIZE, DEFAULT_MEAN, DEFAULT_STD = 224, 0.5307, 0.2583  # RAD-DINO's processor statistics

    def __init__(self, folder: str | Path):
        super().__init__()
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json; repa_encoder must be 'vit' or a local DINOv2 / "
                                    "RAD-DINO folder (Hugging Face layout: config.json + model.safetensors)")
        from transformers import Dinov2Model

        self.net = Dinov2Model.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        self.skip = 1 + getattr(self.net.config, "num_register_tokens", 0)
        self.mean, self.std = self.DEFAULT_MEAN, self.DEFAULT_STD

    @property
    def dim(self) -> int:
        return self.net.config.hidden_size

    def flops_per_image(self) -> float:
        """Forward FLOPs of one film, counted by torch's FlopCounterMode over one real forward; cached."""
        if getattr(self, "_flops", None) is None:
            device = next(self.net.parameters()).device
            self._flops = count_training_flops(lambda: self(torch.zeros(1, self.SIZE, self.SIZE, device=device)))
        return self._flops

    @torch.no_grad()
    def forward(self, films: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(films[:, None].float(), size=(self.SIZE, self.SIZE), mode="bicubic", align_corners=False)
        x = ((x.clamp(0, 1) - self.mean) / self.std).expand(-1, 3, -1, -1)
        return self.net(pixel_values=x.to(self.net.dtype)).last_hidden_state[:, self.skip:]


def repa_encoder_dim(spec: str, config: UniXConfig) -> int:
    """The feature width the REPA projector must output for encoder `spec`."""
    if spec == "vit":
        return config.vision.width
    import json

    return int(json.loads((Path(spec) / "config.json").read_text())["hidden_size"])


def build_repa_encoder(spec: str, model: UniX, device: torch.device, own_copy: bool = False) -> nn.Module:
    return VitRepaEncoder(model, own_copy) if spec == "vit" else DinoRepaEncoder(spec).to(device)


# --- the loss of one micro-batch -------------------------------------------------------------------
class ModelLoss:
    """UniX.forward on a micro-batch: CE for understanding; MSE (+ REPA) for generation, with the
    noise and t drawn from a generator seeded per micro-batch, so a run is reproducible whatever
    the number of ranks, workers or restarts. While the network trains, t is drawn at the stage's
    `timestep_shift` when it has one; in eval mode (validation) always at the config's. REPA weighs
    `repa_weight` in the total (None: the config's)."""

    def __init__(self, model: nn.Module, spec: StageSpec, device: torch.device,
                 repa_encoder: nn.Module | None = None, timestep_shift: float | None = None,
                 repa_weight: float | None = None):
        self.model, self.spec, self.device, self.repa_encoder = model, spec, device, repa_encoder
        self.timestep_shift, self.repa_weight = timestep_shift, repa_weight

    def __call__(self, micro: MicroBatch) -> dict[str, torch.Tensor]:
        inputs: ModelInputs = micro.data
        b = inputs.batch.to(self.device)
        generator = None
        if inputs.noise_seed is not None:
            generator = torch.Generator(self.device).manual_seed(inputs.noise_seed)
        target = None
        if self.repa_encoder is not None and inputs.repa_images is not None:
            target = self.repa_encoder(inputs.repa_images.to(self.device))
        t = None
        # the Validator switches the raw network to eval mode; a DDP wrapper keeps its own flag
        if self.timestep_shift is not None and unwrap(self.model).training and b.latents is not None:
            t = matching.sample_timesteps(b.latents.shape[0], self.timestep_shift, generator, self.device)
        return self.model(b.sequence, images=b.images, latents=b.latents, t=t, repa_target=target,
                          freeze_und=self.spec.freeze_und, generator=generator, repa_weight=self.repa_weight)


def with_flops(micros, model: UniX, freeze_und: bool, repa_encoder: nn.Module | None = None):
    """Fill in each micro-batch's training FLOPs from the network's own count for that batch (forward
    only where gradients stop, no lm_head where no token is supervised, the ViT where images are),
    plus the frozen REPA encoder's forward on the batch's films (counted as the frozen ViT is)."""
    per_film = repa_encoder.flops_per_image() if repa_encoder is not None else 0.0
    for micro in micros:
        micro.flops = step_flops(model, micro.data.batch.sequence, freeze_und)
        films = micro.data.repa_images
        if per_film and films is not None:
            micro.flops += per_film * films.shape[0]
        yield micro
