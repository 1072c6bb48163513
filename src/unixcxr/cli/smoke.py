"""`unixcxr smoke`: the whole inference path on a random tiny model, in seconds. It proves the
installation works (report decoding with a KV cache, prefix-cached guided sampling, VAE decoding);
the words and pixels are noise because nothing is trained. `unixcxr demo` trains a real model."""

from __future__ import annotations

import time
from pathlib import Path

from unixcxr.cli import check_options
from unixcxr.cli.outputs import IMAGE_FORMATS, check_output_file, write_image


def register(sub) -> None:
    p = sub.add_parser("smoke", help="check the installation: random tiny model -> one report and one image",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("smoke.png"),
                   help="where to write the image (default: %(default)s)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="model size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from PIL import Image
    from tqdm import tqdm

    from unixcxr.flow.sampler import SamplerSettings
    from unixcxr.inference.images import generate_latents
    from unixcxr.inference.report import DecodingSettings, generate_reports
    from unixcxr.model.config import preset
    from unixcxr.model.unix import UniX
    from unixcxr.model.vae import LatentVAE, to_uint8

    check_options(args, "seed")
    check_output_file(args.out, "--out", suffixes=tuple(IMAGE_FORMATS), example="smoke.png")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    cfg = preset(args.preset)
    model, vae = UniX(cfg).eval(), LatentVAE(cfg.vae).eval()
    size = cfg.vision.image_size
    decoding, sampler = DecodingSettings(max_new_tokens=16), SamplerSettings(num_points=10)
    with tqdm(total=decoding.max_new_tokens, desc="report", unit="token", leave=False) as bar:
        report = generate_reports(model, torch.randn(1, 3, size, size), [[10, 11, 12]], decoding,
                                  on_token=lambda token: bar.update(1))
    grid = cfg.latent_grid
    with tqdm(total=sampler.num_points - 1, desc="image", unit="step", leave=False) as bar:
        latents = generate_latents(model, [report[0] or [10]], sampler, (grid, grid),
                                   progress=lambda i, n: bar.update(1))
    with torch.no_grad():
        pixels = to_uint8(vae.decode(latents))[0].permute(1, 2, 0).numpy()
    write_image(args.out, Image.fromarray(pixels))
    print(f"random {args.preset} model ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters): "
          f"report of {len(report[0])} tokens, {cfg.gen.image_size}px image written to {args.out} "
          f"in {time.perf_counter() - start:.1f} s. Untrained: this checks the installation, not quality.")
    return 0
