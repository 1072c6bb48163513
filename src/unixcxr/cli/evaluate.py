"""Benchmark a model on one split of a data folder, like the paper: reports (label F1 micro/macro
x 14/5 x uncertain mappings, BLEU, ROUGE-L), images (FD, KD, precision/recall/density/coverage,
per-pathology FD with a named feature network), the report -> image -> report round trip with its
ceiling (the same reader on the VAE's reconstructions of the real images), and two baselines (most
common training report, nearest-neighbour retrieval in raw pixels).

Per-sample outputs are kept in OUT (reports.jsonl, generated/*.png): run the same command again to
continue a killed run. Writes OUT/metrics.json and OUT/metrics.md.

example:
  unixcxr evaluate --model runs/small --data data/synthcxr --split test --out runs/small/eval
  unixcxr evaluate --model runs/small --data data/synthcxr --limit 50 --steps 20   # a quick look"""

from __future__ import annotations

import argparse
from pathlib import Path

from unixcxr.cli import CliError


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="benchmark a model: reports, images, round trip, baselines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="model or run folder (or an official release folder)")
    p.add_argument("--data", required=True, type=Path, help="data folder in the MIMIC-CXR-JPG layout (SynthCXR too)")
    p.add_argument("--split", default="test", choices=["train", "validate", "test"])
    p.add_argument("--out", type=Path, default=None, help="output folder (default: MODEL/eval-SPLIT)")
    p.add_argument("--limit", type=int, default=None, help="first N studies only (default: all)")
    p.add_argument("--steps", type=int, default=None, help="sampler grid points (default: the released 50)")
    p.add_argument("--sampler", default="released", choices=["released", "demo"], help="sampler settings by name")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--features", default="effnet-lite0",
                   help="image feature network: effnet-lite0 (offline default) or rad-dino:PATH")
    p.add_argument("--no-baselines", action="store_true", help="skip the two report baselines")
    p.add_argument("--no-vae-ceiling", action="store_true",
                   help="skip reading back the VAE's reconstructions of the real images (the round trip's ceiling)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from unixcxr.data.reports import DataError
    from unixcxr.evaluate.benchmark import BenchmarkSettings, run_benchmark
    from unixcxr.model.io import ModelFolderError
    from unixcxr.pipeline import UniXPipeline

    if args.limit is not None and args.limit < 2:
        raise CliError("--limit must be at least 2 (image metrics need two images per set)")
    try:
        pipe = UniXPipeline.from_pretrained(args.model, device=args.device)
    except ModelFolderError as err:
        raise CliError(str(err)) from err
    out = args.out or Path(args.model) / f"eval-{args.split}"
    settings = BenchmarkSettings(split=args.split, limit=args.limit, max_new_tokens=args.max_new_tokens,
                                 steps=args.steps, sampler=args.sampler, batch_size=args.batch_size,
                                 features=args.features, baselines=not args.no_baselines,
                                 vae_ceiling=not args.no_vae_ceiling)
    try:
        run_benchmark(pipe, args.data, out, settings, model_name=str(args.model))
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    print((out / "metrics.md").read_text())
    print(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")
    return 0
