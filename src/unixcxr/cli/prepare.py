"""Resize a data folder once into training shards (letterboxed images with report and labels)."""

from __future__ import annotations

import argparse
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.data.images import ImageLoadError
from unixcxr.data.reports import SPLITS, DataError
from unixcxr.data.shards import DEFAULT_SHARD_SIZE, IMAGE_FORMATS

DEFAULT_SIZE = 256

EXAMPLES = f"""\
examples:
  unixcxr prepare data/synthcxr shards/synthcxr-256
  unixcxr clean /data/mimic-cxr-jpg/reports/files cleaned.jsonl
  unixcxr prepare /data/mimic-cxr-jpg shards/mimic-512 --size 512 --workers 8 --reports cleaned.jsonl
  unixcxr train configs/paper.yaml --data shards/mimic-512 --out runs/paper

DATA_DIR holds the MIMIC-CXR-JPG layout (real MIMIC-CXR-JPG or SynthCXR): files/, reports/,
mimic-cxr-2.0.0-{{split,chexpert,metadata}}.csv. Only frontal (PA/AP) images are written, one
sample per image with its study's report and labels; unreadable images are skipped and listed
in OUT/index.json. With --reports, each study's findings and impression are its cleaned text
(the raw report is kept beside them); studies the file has no cleaned text for keep the raw
sections and are counted. `unixcxr train`, `evaluate`, `report` and `generate --prompts` read OUT
wherever they read DATA_DIR. Default shard size: {DEFAULT_SHARD_SIZE} samples."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare", help=__doc__.splitlines()[0], description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="data folder (MIMIC-CXR-JPG layout)")
    parser.add_argument("out", metavar="OUT", type=Path, help="folder to write shards and index.json into")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"square image side in pixels (default {DEFAULT_SIZE})")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                        help=f"samples per shard (default {DEFAULT_SHARD_SIZE})")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes decoding and resizing images (default 1; use your core count)")
    parser.add_argument("--format", choices=sorted(IMAGE_FORMATS), default="png",
                        help="image encoding inside the shards (default png: lossless)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="splits to write (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order in shards (default 0)")
    parser.add_argument("--reports", type=Path, metavar="CLEANED.jsonl",
                        help="cleaned report text from `unixcxr clean`, written into the shards")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unixcxr.data.cleaned import CleanedReports, apply_cleaned
    from unixcxr.data.datasets import load_records  # torch import only when the command runs
    from unixcxr.data.shards import INDEX_FILE, write_shards
    from unixcxr.data.sources import is_shards

    if args.size < 1 or args.shard_size < 1 or args.workers < 1:
        raise CliError("--size, --shard-size and --workers must be positive")
    if is_shards(args.data_dir):
        raise CliError(f"{args.data_dir} is already a shards folder (it has {INDEX_FILE}); give the MIMIC-CXR-JPG "
                       "layout folder it was made from")
    if args.out.is_dir() and any(args.out.iterdir()):
        raise CliError(f"{args.out} is not empty; write shards into a new folder")
    try:
        cleaned = CleanedReports.load(args.reports) if args.reports else None
        records = load_records(args.data_dir, splits=args.splits)
        done: set[str] = set()
        if cleaned is not None:
            records, done = apply_cleaned(records, cleaned)
        index = write_shards(records, args.out, size=args.size, shard_size=args.shard_size,
                             workers=args.workers, image_format=args.format, seed=args.seed, cleaned=done)
    except (DataError, ImageLoadError) as err:
        raise CliError(str(err)) from err
    for split in SPLITS:
        shards = index.of_split(split)
        if shards:
            print(f"{split}: {sum(s.samples for s in shards)} images in {len(shards)} shards")
    if cleaned is not None:
        print(f"reports: {len(done)} of {len(records)} studies cleaned, {len(records) - len(done)} keep their raw "
              f"text ({args.reports})")
    if index.skipped:
        print(f"skipped {len(index.skipped)} unreadable images (listed in {args.out / 'index.json'})")
    print(f"wrote {args.out / 'index.json'}")
    return 0
