"""The VAE's hot paths: encoding films into latents (the training stages' latent cache) and decoding
latents into films (every generated image), in the two layouts of `LatentVAE.for_inference`: the
default layout throughout (exact=True, release folders) and channels-last (our models on a CPU); and
a training step in both, which is why training keeps the default. Ratios are measured in one run;
each layout's decode is compared with a float64 decode.

    python -m benchmarks.bench_vae [--quick] [--size 128] [--images 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy

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
    vae = LatentVAE(VAEConfig(**DEMO_VAE)).to(args.device)
    films = torch.rand(n, 3, args.size, args.size, device=args.device) * 2 - 1
    crops = films[:16, :, : args.size // 2, : args.size // 2].contiguous()
    train = timed(lambda: step(vae, crops), repeat=3, warmup=1)
    vae.to(memory_format=torch.channels_last)
    train_cl = timed(lambda: step(vae, crops), repeat=3, warmup=1)

    vae.for_inference(exact=True)
    with torch.no_grad():
        enc = timed(lambda: vae.encode(films), repeat=3, warmup=1)
        latents = vae.encode(films)
        dec = timed(lambda: vae.decode(latents), repeat=3, warmup=1)
        images = vae.decode(latents)
        exact = copy.deepcopy(vae.autoencoder).double()
        reference = exact.decode(vae.denormalise(latents.double())).sample.clamp(-1, 1)
    vae.for_inference()
    with torch.no_grad():
        enc_cl = timed(lambda: vae.encode(films), repeat=3, warmup=1)
        dec_cl = timed(lambda: vae.decode(latents), repeat=3, warmup=1)
        latent_diff = (vae.encode(films) - latents).abs().max().item()
        images_cl = vae.decode(latents)
    error, error_cl = ((x.double() - reference).abs().max().item() for x in (images, images_cl))

    print_table(f"VAE of configs/small.yaml, {n} films at {args.size} px, {args.device} ({machine()})", [
        ("encode, default layout (exact)", f"{enc / n * 1e3:.1f} ms/film"),
        ("encode, channels-last", f"{enc_cl / n * 1e3:.1f} ms/film ({enc / enc_cl:.2f}x)"),
        ("decode, default layout (exact)", f"{dec / n * 1e3:.1f} ms/film"),
        ("decode, channels-last", f"{dec_cl / n * 1e3:.1f} ms/film ({dec / dec_cl:.2f}x)"),
        ("decode, max |difference| from float64: exact / channels-last", f"{error:.1e} / {error_cl:.1e}"),
        ("max |difference| between the layouts, latents", f"{latent_diff:.1e}"),
        ("training step (16 crops), channels-last vs default", f"{train / train_cl:.2f}x"),
    ])

if __name__ == "__main__":
    main()
