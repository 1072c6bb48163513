"""Train UniX from a recipe: tokenizer, VAE, ViT warm-up, report SFT, generation pre-training and fine-tuning."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from unixcxr.cli import CliError

STAGES_HELP = "tokenizer, vision, vae, und_sft, gen_pretrain, gen_finetune"

DESCRIPTION = """\
Run the stages of a training recipe in order, in one run folder; each stage is resumable.

  stage 0   tokenizer      byte-level BPE over the training reports (written into the config)
            vision         (from scratch) gives the encoder eyes, standing in for the paper's SigLIP:
                           a ViT learns a pretrained network's patch features, or (vision.encoder:
                           efficientnet-lite0) the ImageNet CNN is fine-tuned on the reports' labels
            vae            KL autoencoder; then frozen, latent scale/shift fitted on training images
                           (perceptual: reader compares films through the fine-tuned reader)
  stage 1   und_sft        ViT + connector + und expert on reports (cross-entropy)
  stage 2   gen_pretrain   gen expert (initialised from und) with flow matching + REPA, low resolution
  stage 3   gen_finetune   gen expert at higher resolution, flow matching only

RUN_DIR gets stages/<name>/ (checkpoints, metrics.jsonl, loss.png, samples/) and model/, the
exported model folder (EMA weights) that every other command loads. Validation of the generation
stages logs val_text_gain: the MSE added by giving each film another film's prompt (near zero
while the generator ignores the text). Recipes: configs/tiny.yaml (tests, seconds),
configs/small.yaml (2 CPU cores, ~16 minutes on 2,000 SynthCXR images), configs/small-long.yaml
(the same with 5x the generation steps, ~1.2 hours: a generator that follows its text),
configs/paper.yaml (the paper's Table 1: 8 GPUs, FSDP)."""

EPILOG = """\
examples:
  unixcxr synth data/synth128 --n 2500 --size 128
  unixcxr train configs/small.yaml --data data/synth128 --out runs/small
  unixcxr train configs/small.yaml --data data/synth128 --out runs/small --resume   # after a crash
  unixcxr train configs/small.yaml --data data/synth128 --out runs/small --stage und_sft
  torchrun --nproc-per-node 8 -m unixcxr train configs/paper.yaml --data /data/mimic-cxr-jpg --out runs/paper

--resume continues the newest checkpoint of an interrupted stage and skips finished stages; the
resumed run reaches the same weights as one that was never interrupted. Under torchrun the same
command runs DDP (FSDP2 for the unix preset), with gloo on CPU and NCCL on GPU."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help=__doc__.splitlines()[0], description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path, metavar="RECIPE.yaml", help="training recipe (see configs/)")
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="a MIMIC-CXR-JPG layout folder (real MIMIC, or `unixcxr synth` output) or a shards "
                             "folder from `unixcxr prepare` (recognised by its index.json)")
    parser.add_argument("--reports", type=Path, metavar="CLEANED.jsonl",
                        help="cleaned report text from `unixcxr clean`, used instead of the raw reports")
    parser.add_argument("--out", type=Path, metavar="RUN_DIR", help="run folder to create or continue (required "
                        "unless --dry-run)")
    parser.add_argument("--stage", metavar="NAME",
                        help=f"run only this stage ({STAGES_HELP}); earlier ones must be done")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN_DIR")
    parser.add_argument("--device", default="auto", help="auto (GPU if there is one), cpu, cuda (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    plan = parser.add_argument_group("planning (writes nothing)")
    plan.add_argument("--dry-run", action="store_true",
                      help="check the recipe and the data (every file it will read), then print per stage the steps, "
                           "tokens, FLOPs, memory per GPU and wall time")
    plan.add_argument("--gpus", type=int, default=8, help="GPUs to plan for (default 8, the paper's node)")
    plan.add_argument("--gpu", default="h100", choices=("h100", "h200", "cpu"),
                      help="GPU kind to plan for (MFU as measured on it), or cpu: this machine (default h100)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unixcxr.data.reports import DataError
    from unixcxr.train.checkpoint import CheckpointError
    from unixcxr.train.loop import NonFiniteLoss
    from unixcxr.train.recipe import RecipeError
    from unixcxr.train.runner import TrainError, train

    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun, one process speaks for all
    if args.gpus < 1:
        raise CliError("--gpus must be at least 1")
    try:
        if args.dry_run:
            from unixcxr.train.preflight import dry_run

            print("\n".join(dry_run(args.recipe, args.data, args.reports, args.out, args.gpus, args.gpu)))
            return 0
        if args.out is None:
            raise CliError("--out RUN_DIR is required (the run folder to create or continue)")
        summaries = train(args.recipe, args.data, args.out, stage=args.stage, resume=args.resume,
                          device=args.device, progress=not args.no_progress, reports=args.reports)
    except (RecipeError, TrainError, CheckpointError, DataError, NonFiniteLoss) as err:
        if not main:
            raise SystemExit(2) from None
        raise CliError(str(err)) from err
    if not main:
        return 0
    for name, summary in summaries.items():
        shown = {k: v for k, v in summary.items() if k in ("wall_seconds", "loss", "val_loss", "tokens_per_s", "mfu",
                                                            "val_micro_f1", "val_micro_f1_baseline", "vocab_size")}
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in shown.items()))
    if (args.out / "model" / "config.json").is_file():
        print(f"model folder: {args.out / 'model'} (load it with any unixcxr command)")
    return 0
