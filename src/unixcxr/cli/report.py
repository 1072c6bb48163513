"""Write radiology reports for chest X-ray images (PNG, JPEG, DICOM) with a UniX model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unixcxr.cli import CliError, check_options
from unixcxr.cli.outputs import check_output_file
from unixcxr.data.images import DEFAULT_MAX_PIXELS
from unixcxr.model.config import SAMPLER_PRESETS
from unixcxr.validation import InvalidValue

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DEFAULT_BATCH = 8

EXAMPLES = """\
examples:
  unixcxr report --model runs/small cxr.png
  unixcxr report --model ~/weights/UniX studies/ -o reports.jsonl --device cuda --dtype bf16
  unixcxr report --model runs/small a.dcm b.jpg --prompt "Describe the FINDINGS of this chest X-ray."

--model takes our model or run folder, or the authors' release folder as downloaded. A folder
given as IMAGE stands for every PNG/JPEG/DICOM file under it; a shards folder (`unixcxr prepare`)
for every image in its shards (--split picks one split), named SHARDS#<sample id>. Without -o
each report is printed after its file name; with -o each line of the JSONL file is
{"image": PATH, "report": TEXT} (readable by `unixcxr label`). Bars on stderr count the tokens
of each batch and, for several images, the images. Rerunning with the same -o skips the images already written, so
an interrupted job resumes; a file -o names that this command did not write is refused and left
as it is, and -o is created only when the first report is written. Decoding is greedy (the
released evaluation setting) unless --temperature is set. An image that cannot be read, or whose
header claims more than --max-megapixels, is reported and skipped (exit status 1)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help=__doc__.splitlines()[0], description=__doc__, epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", metavar="IMAGE", nargs="+", type=Path, help="image files or folders")
    add_model_arguments(parser)
    parser.add_argument("--prompt", default=None,
                        help="instruction (default: the released one, \"As an imaging expert, review this X-ray "
                             "and share the FINDINGS and IMPRESSION.\")")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="longest report in tokens (default: the model's, 499 for the authors' weights, 256 ours)")
    parser.add_argument("--settings", default=None, choices=SAMPLER_PRESETS,
                        help="for the authors' weights: their evaluation's preprocessing (released, the default) "
                             "or their demo's (demo)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when sampling (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed when sampling")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"images per forward pass (default {DEFAULT_BATCH})")
    parser.add_argument("-o", "--output", type=Path, default=None, help="JSONL file to write (resumable)")
    parser.add_argument("--split", choices=("train", "validate", "test"),
                        help="with a shards folder as IMAGE: only this split (default: all)")
    add_pixel_limit_argument(parser)
    parser.set_defaults(func=run)


def add_pixel_limit_argument(parser: argparse.ArgumentParser) -> None:
    """--max-megapixels: shared by report and serve."""
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="refuse images larger than this, from their header, before decoding them "
                             f"(default {DEFAULT_MAX_PIXELS / 1e6:g})")


def max_pixels(args: argparse.Namespace) -> int:
    if not (args.max_megapixels > 0 and args.max_megapixels < float("inf")):  # NaN fails too
        raise CliError(f"--max-megapixels must be a positive number, got {args.max_megapixels}")
    return int(args.max_megapixels * 1e6)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype: shared by report, generate and serve."""
    parser.add_argument("--model", required=True, type=Path, help="model folder, run folder or release folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="weights dtype (default fp32)")


def load_pipeline(args: argparse.Namespace):
    import torch

    from unixcxr.model.io import ModelFolderError
    from unixcxr.model.tokenizer import TokenizerError
    from unixcxr.pipeline import UniXPipeline

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device}: no CUDA device here; use --device cpu")
    try:
        return UniXPipeline.from_pretrained(args.model, device=args.device, dtype=dtype)
    except (ModelFolderError, TokenizerError) as err:
        raise CliError(str(err)) from err


def expand_images(paths: list[Path], split: str | None = None) -> list[tuple[str, object]]:
    """(name, source) of every image: a file's path, or an image inside a shards folder (an ImageRef)."""
    from unixcxr.data.reports import DataError
    from unixcxr.data.sources import DataSource, is_shards

    out = []
    for path in paths:
        if is_shards(path):
            try:
                source = DataSource(path)
                samples = source.samples(split) if split else source.all_samples()
            except DataError as err:
                raise CliError(str(err)) from err
            if not samples:
                raise CliError(f"{path}: no images in {'split ' + split if split else 'its shards'}")
            out += [(f"{path}#{s.id}", s.image) for s in samples]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise CliError(f"{path}: no PNG, JPEG or DICOM files inside")
            out += [(str(p), p) for p in found]
        else:
            out.append((str(path), path))
    return out


def open_output(path: Path):
    """The resumable JSONL writer of -o (nothing is created before the first report), or CliError when
    -o names a file this command did not write."""
    from unixcxr.data.cleaning.records import ResumableWriter
    from unixcxr.data.reports import DataError

    check_output_file(path, example="reports.jsonl")
    try:
        return ResumableWriter(path, key="image")
    except DataError as err:
        raise CliError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from unixcxr.data.images import ImageLoadError

    check_options(args, "max_new_tokens", "temperature", "top_p", "seed", "batch_size")
    limit = max_pixels(args)
    out = open_output(args.output) if args.output else None
    images = expand_images(args.images, args.split)
    todo = [(name, source) for name, source in images if out is None or name not in out.done]
    if len(todo) < len(images):
        print(f"{len(images) - len(todo)} of {len(images)} images already in {args.output}; resuming", file=sys.stderr)
    pipe = load_pipeline(args)
    failed = written = 0
    try:
        bar = tqdm(total=len(todo), unit="image", desc="reports", disable=out is None and len(todo) == 1)
        for start in range(0, len(todo), args.batch_size):
            batch, pixels = [], []
            for name, source in todo[start:start + args.batch_size]:
                try:
                    pixels.append(pipe.read_image(source if isinstance(source, Path) else source.read(), limit))
                    batch.append(name)
                except ImageLoadError as err:
                    failed += 1
                    tqdm.write(f"skipped: {err}", file=sys.stderr)
            if not batch:
                continue
            try:
                reports = pipe.report(pixels, args.prompt, max_new_tokens=args.max_new_tokens,
                                      temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                      batch_size=args.batch_size, settings=args.settings, progress=True)
            except InvalidValue:
                raise  # named as its option by the CLI
            except ValueError as err:
                raise CliError(str(err)) from err
            for name, text in zip(batch, reports):
                if out is None:
                    tqdm.write(f"{name}\t{text}", file=sys.stdout)  # above the bars, which are on stderr
                else:
                    out.append({"image": name, "report": text})
            written += len(batch)
            bar.update(len(batch))
        bar.close()
    finally:
        if out is not None:
            out.close()
    if failed > 1:
        print(f"{failed} of {len(todo)} images could not be read (see above)", file=sys.stderr)
    if out is not None and written:
        print(f"wrote {written} reports to {args.output}", file=sys.stderr)
    return 1 if failed else 0
