"""Benchmark a model on one split of a data folder, like the paper: reports (label F1 micro/macro
x 14/5 x uncertain mappings, BLEU, ROUGE-L), images (FD, KD, precision/recall/density/coverage,
per-pathology FD with a named feature network), the report -> image -> report round trip with its
ceiling (the same reader on the VAE's reconstructions of the real images), and two baselines (most
common training report, nearest-neighbour retrieval in raw pixels). --privacy and --utility add
CheXGenBench's other two axes on films drawn from training prompts: each film's nearest training
film (memorisation rate against the split's real films as calibration), and a classifier trained on
generated / real / both films scored on the split's real films (docs/privacy-and-utility.md).

--data is a MIMIC-CXR-JPG layout folder or a shards folder from `unixcxr prepare`; --reports lays a
cleaned-reports JSONL (`unixcxr clean`) over its text, so references are the cleaned reports as in
the paper; --gen-split takes the generation half (which images, which prompts) from a CheXGenBench
/ LLaVA-Rad CSV or a LLaVA JSON, as the paper's generation evaluation does. Every option is checked
(model, data, split, feature network) before anything is generated. Per-sample outputs are kept in
OUT (reports.jsonl, generated/*.png): run the same command again to continue a killed run. Writes
OUT/metrics.json and OUT/metrics.md and prints the paper's label table (Micro / Macro x 14 / 5
observations x uncertain as negative / positive) for the model and the baselines.

examples:
  unixcxr evaluate --model runs/small --data data/synthcxr --split test --out runs/small/eval
  unixcxr evaluate --model runs/small --data data/synthcxr --limit 50 --steps 20   # a quick look
  unixcxr evaluate --model runs/small --data data/synthcxr --limit 100 --cfg-text 4 --out runs/small/eval-cfg4
  unixcxr evaluate --model runs/small --data data/synthcxr --limit 100 --privacy --utility
  unixcxr evaluate --model runs/paper --data shards/mimic-512 --reports cleaned.jsonl \
      --gen-split LLAVARAD_ANNOTATIONS_TEST.csv --features rad-dino:/models/rad-dino"""

from __future__ import annotations

import argparse
from pathlib import Path

from unixcxr.cli import CliError, check_options
from unixcxr.model.config import SAMPLER_PRESETS


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="benchmark a model: reports, images, round trip, baselines",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="model or run folder (or an official release folder)")
    p.add_argument("--data", required=True, type=Path,
                   help="MIMIC-CXR-JPG layout folder (SynthCXR too) or shards folder from `unixcxr prepare`")
    p.add_argument("--reports", type=Path, metavar="CLEANED.jsonl", help="cleaned report text (`unixcxr clean`)")
    p.add_argument("--gen-split", type=Path, metavar="CSV|JSON",
                   help="the generation half's images and prompts: a CheXGenBench / LLaVA-Rad CSV or a LLaVA JSON")
    p.add_argument("--split", default="test", choices=["train", "validate", "test"])
    p.add_argument("--out", type=Path, default=None, help="output folder (default: MODEL/eval-SPLIT)")
    p.add_argument("--limit", type=int, default=None, help="first N studies only (default: all)")
    p.add_argument("--steps", type=int, default=None, help="sampler grid points (default: the released 50)")
    p.add_argument("--sampler", default=None, choices=SAMPLER_PRESETS,
                   help="sampler preset (default: the model's own: released, the authors' evaluation settings, for "
                        "their weights; unixcxr for ours)")
    p.add_argument("--cfg-text", type=float, default=None,
                   help="text guidance scale, replacing the preset's (sweep it: higher follows the report more)")
    p.add_argument("--cfg-img", type=float, default=None, help="image guidance scale, replacing the preset's")
    p.add_argument("--cfg-interval", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="guidance applied while LO < t <= HI, replacing the preset's")
    p.add_argument("--shift", type=float, default=None, help="sampler timestep shift, replacing the preset's")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest report in tokens (default: the model's own, 499 for the authors' weights, 256 ours)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--features", default="effnet-lite0",
                   help="image feature network: effnet-lite0 (offline default) or rad-dino:PATH")
    p.add_argument("--no-baselines", action="store_true", help="skip the two report baselines")
    p.add_argument("--no-vae-ceiling", action="store_true",
                   help="skip reading back the VAE's reconstructions of the real images (the round trip's ceiling)")
    p.add_argument("--privacy", action="store_true",
                   help="privacy: draw films from training prompts, find each one's nearest training film (features, "
                        "pixels), calibrated on the split's real films; memorisation rate")
    p.add_argument("--privacy-n", type=int, default=None,
                   help="films drawn from training prompts for --privacy (default: as many as the split's images)")
    p.add_argument("--reid-checkpoint", type=Path, metavar="PATH",
                   help="with --privacy: a Siamese patient re-identification state_dict (ResNet-50, the published "
                        "CXR re-identification / CheXGenBench format) to score re-identification too")
    p.add_argument("--utility", action="store_true",
                   help="utility: EfficientNet-Lite0 fine-tuned on N generated / N real / N real + N generated films, "
                        "AUROC and F1 per observation on the split's real films")
    p.add_argument("--utility-n", type=int, default=None,
                   help="films per utility arm (default: as many as the split's images)")
    p.add_argument("--utility-steps", type=int, default=100, help="fine-tuning steps per utility arm (default 100)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from unixcxr.data.reports import DataError
    from unixcxr.data.sources import DataSource
    from unixcxr.data.tokenizer import TokenizerError
    from unixcxr.evaluate.image_features import build_extractor
    from unixcxr.evaluate.privacy import load_reid
    from unixcxr.evaluate.suite import MIN_STUDIES, BenchmarkSettings, run_benchmark, select
    from unixcxr.evaluate.synthetic_use import select_training
    from unixcxr.model.io import ModelFolderError, resolve_model_folder
    from unixcxr.pipeline import UniXPipeline

    if args.limit is not None and args.limit < MIN_STUDIES:
        raise CliError(f"--limit must be at least {MIN_STUDIES} (precision / recall look at 5 neighbours)")
    check_options(args, "steps", "max_new_tokens", "batch_size", "cfg_text", "cfg_img", "cfg_interval", "shift")
    for option in ("privacy_n", "utility_n", "utility_steps"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise CliError(f"--{option.replace('_', '-')} {value}: must be a positive whole number")
    if args.reid_checkpoint and not args.privacy:
        raise CliError(f"--reid-checkpoint {args.reid_checkpoint}: scores privacy; add --privacy")
    out = args.out or Path(args.model) / f"eval-{args.split}"
    settings = BenchmarkSettings(split=args.split, limit=args.limit, max_new_tokens=args.max_new_tokens,
                                 steps=args.steps, sampler=args.sampler, cfg_text=args.cfg_text,
                                 cfg_img=args.cfg_img, shift=args.shift,
                                 cfg_interval=tuple(args.cfg_interval) if args.cfg_interval else None,
                                 batch_size=args.batch_size,
                                 features=args.features, baselines=not args.no_baselines,
                                 vae_ceiling=not args.no_vae_ceiling,
                                 generation_split=str(args.gen_split) if args.gen_split else None,
                                 privacy=args.privacy, privacy_n=args.privacy_n, utility=args.utility,
                                 utility_n=args.utility_n, utility_steps=args.utility_steps,
                                 reid_checkpoint=str(args.reid_checkpoint) if args.reid_checkpoint else None)
    # every option is checked before anything is generated: the data, the split, the feature network, the model
    try:
        resolve_model_folder(args.model)  # a model folder at all: cheap, before the data is read
        reid = load_reid(args.reid_checkpoint) if args.reid_checkpoint else None
        source = DataSource(args.data, args.reports)
        und, gen = select(source, settings)
        extractor = build_extractor(args.features)
        if args.privacy or args.utility:
            select_training(source)
        pipe = UniXPipeline.from_pretrained(args.model, device=args.device)
    except (DataError, ValueError, FileNotFoundError, ImportError, OSError, ModelFolderError, TokenizerError) as err:
        raise CliError(str(err)) from err
    print(f"evaluating {args.model} on {len(und)} studies of {args.data} ({source.kind}, split {args.split}); "
          f"images for {len(gen)}" + (f" from {args.gen_split}" if args.gen_split else ""))
    try:
        run_benchmark(pipe, source, out, settings, model_name=str(args.model), extractor=extractor, reid=reid)
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    print((out / "metrics.md").read_text())  # the paper's whole label table, images, round trip
    print(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}")
    return 0
