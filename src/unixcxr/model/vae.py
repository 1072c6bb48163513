"""The frozen KL autoencoder between pixels and latents: diffusers' AutoencoderKL, configured like the
released latent-diffusion kl-f16d16 (attention blocks at the lowest resolution level as well as in
the middle block), with the latent normalisation z = scale * (z_raw + shift) kept in config."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn

from unixcxr.model.config import VAEConfig


def build_autoencoder(cfg: VAEConfig) -> AutoencoderKL:
    levels = len(cfg.block_out_channels)
    down = ["DownEncoderBlock2D"] * levels
    up = ["UpDecoderBlock2D"] * levels
    if cfg.attention_at_lowest_level:
        down[-1] = "AttnDownEncoderBlock2D"
        up[0] = "AttnUpDecoderBlock2D"
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=256,
    )


class LatentVAE(nn.Module):
    """images in [-1, 1] [N, 3, S, S] <-> normalised latents [N, C, S / f, S / f]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.autoencoder = build_autoencoder(cfg)

    def for_inference(self) -> LatentVAE:
        """Eval mode, frozen, and on a CPU channels-last weights: 2 cores encode 1.4-1.6x and decode
        1.1-1.3x faster so (benchmarks/bench_vae.py). Training keeps the default layout (its step is
        0.8-0.9x as fast in channels-last). Saved weights are made contiguous: files do not change."""
        self.eval().requires_grad_(False)
        if next(self.parameters()).device.type == "cpu":
            self.to(memory_format=torch.channels_last)
        return self

    def check_size(self, images: torch.Tensor) -> None:
        f = self.cfg.downsample
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"VAE expects [N, 3, H, W] with H, W multiples of {f}, got {list(images.shape)}")

    def normalise(self, z_raw: torch.Tensor) -> torch.Tensor:
        return self.cfg.scale * (z_raw + self.cfg.shift)

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.cfg.scale - self.cfg.shift

    def encode(self, images: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        self.check_size(images)
        posterior = self.autoencoder.encode(images).latent_dist
        z = posterior.sample(generator) if sample else posterior.mean
        return self.normalise(z)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(self.denormalise(latents)).sample.clamp(-1, 1)

    def forward(self, images: torch.Tensor, generator=None):
        """Training pass: reconstruction and posterior (for the KL term), raw latent space."""
        self.check_size(images)
        posterior = self.autoencoder.encode(images).latent_dist
        return self.autoencoder.decode(posterior.sample(generator)).sample, posterior


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] uint8, rounded to the nearest level (our models)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8_truncated(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] uint8 as the release writes its PNGs: x / 2 + 0.5 clamped to [0, 1], times
    255, the fraction dropped (float32, in their order of operations: equal levels, not just close)."""
    return ((images.float() / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
