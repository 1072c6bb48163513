"""The VAE's hot paths: encoding films into latents (the training stages' latent cache) and decoding
latents into films (every generated image), in the default and in the channels-last layout that
`LatentVAE.for_inference` picks on a CPU; and a training step in both, which is why training keeps
the default. Ratios are measured in one run; outputs are compared.

    python -m benchmarks.bench_vae [--quick] [--size 128] [--images 64] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, print_table, timed
from unixcxr.model.config import VAEConfig
from unixcxr.model.vae import LatentVAE

DEMO_VAE = {"block_out_channels": (16, 32, 64, 64), "norm_num_groups": 8}  # configs/small.yaml


def step(vae: LatentVAE, films: torch.Tensor) -> None:
    vae.zero_grad(set_to_none=True)
    reconstruction, _ = vae(films)
    (reconstruction - films).abs().mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    parser.add_argument("--size", type=int, default=128, help="film side in pixels (the demo's: 128)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n = 16 if args.quick else args.images

    torch.manual_seed(0)
    vae = LatentVAE(VAEConfig(**DEMO_VAE)).to(args.device).eval().requires_grad_(False)
    films = torch.rand(n, 3, args.size, args.size, device=args.device) * 2 - 1
    crops = films[:16, :, : args.size // 2, : args.size // 2].contiguous()
    with torch.no_grad():
        enc = timed(lambda: vae.encode(films), repeat=3, warmup=1)
        latents = vae.encode(films)
        dec = timed(lambda: vae.decode(latents), repeat=3, warmup=1)
        images = vae.decode(latents)
    vae.train().requires_grad_(True)
    train = timed(lambda: step(vae, crops), repeat=3, warmup=1)

    vae.to(memory_format=torch.channels_last)
    train_cl = timed(lambda: step(vae, crops), repeat=3, warmup=1)
    vae.for_inference()
    with torch.no_grad():
        enc_cl = timed(lambda: vae.encode(films), repeat=3, warmup=1)
        dec_cl = timed(lambda: vae.decode(latents), repeat=3, warmup=1)
        latent_diff = (vae.encode(films) - latents).abs().max().item()
        image_diff = (vae.decode(latents) - images).abs().max().item()

    print_table(f"VAE of configs/small.yaml, {n} films at {args.size} px, {args.device} ({machine()})", [
        ("encode, default layout", f"{enc / n * 1e3:.1f} ms/film"),
        ("encode, channels-last", f"{enc_cl / n * 1e3:.1f} ms/film ({enc / enc_cl:.2f}x)"),
        ("decode, default layout", f"{dec / n * 1e3:.1f} ms/film"),
        ("decode, channels-last", f"{dec_cl / n * 1e3:.1f} ms/film ({dec / dec_cl:.2f}x)"),
        ("max |difference|, latents / images", f"{latent_diff:.1e} / {image_diff:.1e}"),
        ("training step (16 crops), channels-last vs default", f"{train / train_cl:.2f}x"),
    ])


if __name__ == "__main__":
    main()
