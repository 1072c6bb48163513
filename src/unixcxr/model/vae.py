"""The frozen KL autoencoder between pixels and latents: diffusers' AutoencoderKL, configured like the
released latent-diffusion kl-f16d16 (attention blocks at the lowest resolution level as well as in
the middle block), with the latent normalisation z = scale * (z_raw + shift) kept in config.

A model folder keeps it in diffusers' own layout (vae/config.json written by diffusers' ConfigMixin,
vae/diffusion_pytorch_model.safetensors in its key names), so that
AutoencoderKL.from_pretrained(folder, subfolder="vae") loads it; its scaling_factor and shift_factor
are our normalisation in diffusers' form z = scaling_factor * (z_raw - shift_factor)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import Attention
from safetensors.torch import save_file
from torch import nn

from unixcxr.model.config import VAEConfig

DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"


def autoencoder_arguments(cfg: VAEConfig) -> dict:
    """AutoencoderKL's constructor arguments for this config: the one place they are derived."""
    levels = len(cfg.block_out_channels)
    down = ["DownEncoderBlock2D"] * levels
    up = ["UpDecoderBlock2D"] * levels
    if cfg.attention_at_lowest_level:
        down[-1] = "AttnDownEncoderBlock2D"
        up[0] = "AttnUpDecoderBlock2D"
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=256,
        scaling_factor=cfg.scale,
        shift_factor=-cfg.shift + 0.0,  # + 0.0: no "-0.0" in the file when there is no shift
    )


def build_autoencoder(cfg: VAEConfig) -> AutoencoderKL:
    return AutoencoderKL(**autoencoder_arguments(cfg))


def save_diffusers_folder(vae: LatentVAE, folder: Path) -> None:
    """config.json by diffusers' own writer, with the normalisation of the VAE's config (the source of
    truth, which may have been refitted since the autoencoder was built); weights in its names
    (contiguous: a CPU inference VAE is channels-last, which safetensors cannot store as such)."""
    folder.mkdir(parents=True, exist_ok=True)
    autoencoder = vae.autoencoder
    arguments = autoencoder_arguments(vae.cfg)
    autoencoder.register_to_config(scaling_factor=arguments["scaling_factor"], shift_factor=arguments["shift_factor"])
    autoencoder.save_config(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in autoencoder.state_dict().items()}
    save_file(state, folder / DIFFUSERS_WEIGHTS, metadata={"format": "pt"})


def diffusers_config_mismatch(file: Path, cfg: VAEConfig) -> list[str]:
    """The fields of a vae/config.json that describe another autoencoder than config.json's vae
    section (the model's config stays the one source of truth; a hand-edited copy is refused)."""
    raw = json.loads(Path(file).read_text())
    if not isinstance(raw, dict):
        return ["(not a JSON object)"]
    wrong = []
    for key, value in autoencoder_arguments(cfg).items():
        found = raw.get(key)
        found = tuple(found) if isinstance(found, list) else found
        if found != value and not (isinstance(value, float) and isinstance(found, int | float) and
                                   abs(found - value) <= 1e-12 * max(1.0, abs(value))):
            wrong.append(f"{key} {found!r} (config.json's vae section gives {value!r})")
    return wrong


class LatentVAE(nn.Module):
    """images in [-1, 1] [N, 3, S, S] <-> normalised latents [N, C, S / f, S / f]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.autoencoder = build_autoencoder(cfg)
        self.exact = False  # set by for_inference
        self._contiguous_hooks: list = []  # exact layout: the hooks that make attention outputs contiguous

    def for_inference(self, exact: bool = False) -> LatentVAE:
        """Eval mode, frozen, in one of two layouts (saved weights are made contiguous either way).
        exact=False (our models): channels-last on a CPU, faster at a few times the float error.
        exact=True (folders that write the release's images, `release_layout`): the default layout
        throughout, as latent-diffusion's decoder runs; diffusers' attention hands back a channels-last
        view, which a hook makes contiguous, since CPU group norm on channels-last tensors is far less
        exact. Numbers: docs/performance.md and docs/released-code.md."""
        self.eval().requires_grad_(False)
        for handle in self._contiguous_hooks:
            handle.remove()
        self._contiguous_hooks = []
        if exact:
            self.to(memory_format=torch.contiguous_format)
            self._contiguous_hooks = [module.register_forward_hook(_contiguous_output)
                                      for module in self.autoencoder.modules() if isinstance(module, Attention)]
        elif next(self.parameters()).device.type == "cpu":
            self.to(memory_format=torch.channels_last)
        self.exact = exact
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


def release_layout(conventions) -> bool:
    """Whether a folder's VAE runs in the exact layout (`LatentVAE.for_inference(exact=True)`): when it
    writes its images the release's way, its decoder runs the release decoder's layout too."""
    return conventions.to_uint8 == "truncate"


def _contiguous_output(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] uint8, rounded to the nearest level (our models)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8_truncated(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] uint8 as the release writes its PNGs: x / 2 + 0.5 clamped to [0, 1], times
    255, the fraction dropped (float32, in their order of operations: equal levels, not just close)."""
    return ((images.float() / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
