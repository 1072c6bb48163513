"""Generate SynthCXR, the embedded chest X-ray data set, in the MIMIC-CXR-JPG layout."""

from __future__ import annotations

import argparse
import os

from unixcxr.cli import CliError

DESCRIPTION = """\
Generate SynthCXR: procedural frontal (PA) chest films with ground-truth findings and
MIMIC-style reports ("FINDINGS: ... IMPRESSION: ..."), written exactly like MIMIC-CXR-JPG so
every loader, trainer and metric of unixcxr runs on it unchanged:

  OUT/files/p1X/p1XXXXXXX/sXXXXXXXX/<dicom_id>.jpg      the films (grayscale JPEG)
  OUT/reports/files/p1X/p1XXXXXXX/sXXXXXXXX.txt         the reports
  OUT/mimic-cxr-2.0.0-{split,chexpert,metadata}.csv      split by patient, 14 labels, views
  OUT/synthcxr-truth.jsonl                               what was drawn, with parameters
  OUT/understanding_{train,validate,test}.json           instruction records (LLaVA style)
  OUT/generation_{train,validate,test}.csv               prompts for image generation

The same --seed and --size give byte-identical files whatever --workers is."""

EPILOG = """\
examples:
  unixcxr synth data/synthcxr --n 2000                   # 2,000 studies at 256 px
  unixcxr synth data/synth512 --n 500 --size 512 --workers 2
  unixcxr synth data/raw --n 200 --raw-noise             # reports with MIMIC-style noise
  unixcxr synth --contact-sheet sheet.png                # look at 16 studies, no data set
"""


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions like 0.8,0.1,0.1, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three fractions (train,validate,test), got {text!r}")
    return parts


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help=__doc__.splitlines()[0], description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("out", nargs="?", metavar="OUT", help="folder to create (must be new or empty)")
    parser.add_argument("--n", type=int, default=1000, help="number of studies (default: 1000)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels, 64-4096 (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (default: 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes rendering in parallel (default: all CPUs; results do not depend on it)")
    parser.add_argument("--split", type=_split, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST",
                        help="patient fractions of train/validate/test (default: 0.8,0.1,0.1)")
    parser.add_argument("--raw-noise", action="store_true",
                        help="write raw-style report files (placeholders ___, prior comparisons, "
                             "communication and technique lines) to test report cleaning; labels and the "
                             "understanding/generation manifests stay clean")  # fmt: skip
    parser.add_argument("--variant", default="mimic", choices=("mimic", "effusion-side"),
                        help="what the studies show: mimic (MIMIC-like findings, the default) or effusion-side (a "
                             "conditioning test: a large left, a large right or no pleural effusion, nothing else)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty OUT")
    parser.add_argument("--contact-sheet", metavar="PNG",
                        help="also (or only, without OUT) save a 4x4 grid of studies with their findings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unixcxr.data.synthcxr import contact_sheet, generate_dataset

    if args.out is None and args.contact_sheet is None:
        raise CliError("give an output folder OUT (e.g. `unixcxr synth data/synthcxr`) or --contact-sheet PNG")
    try:
        if args.contact_sheet:
            path = contact_sheet(args.contact_sheet, seed=args.seed, size=args.size)
            print(f"contact sheet: {path}")
        if args.out is not None:
            summary = generate_dataset(args.out, args.n, size=args.size, seed=args.seed, workers=args.workers,
                                       raw_noise=args.raw_noise, split=args.split, overwrite=args.overwrite,
                                       progress=not args.quiet, variant=args.variant)  # fmt: skip
    except ValueError as err:
        raise CliError(str(err)) from None
    except OSError as err:
        raise CliError(f"cannot write {err.filename or args.out}: {err.strerror or err}") from None
    if args.out is not None:
        counts = ", ".join(f"{k} {v}" for k, v in summary.split_counts.items())
        print(f"wrote {summary.studies} studies of {summary.patients} patients to {summary.out_dir} "
              f"({counts}) in {summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s")  # fmt: skip
    return 0
