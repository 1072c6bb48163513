"""Draw chest X-ray images from report text with a UniX model."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from unixcxr.cli import CliError, check_options
from unixcxr.cli.outputs import IMAGE_FORMATS, check_output_file, check_output_folder, write_image
from unixcxr.cli.report import add_model_arguments, load_pipeline
from unixcxr.flow.presets import preset_values
from unixcxr.model.config import SAMPLER_PRESETS
from unixcxr.validation import SEED_MAX, InvalidValue

RELEASED = preset_values("released")  # the numbers the help quotes
RELEASED_POINTS = RELEASED["num_points"]

TEXT_COLUMNS = ("report", "annotated_prompt")  # ours, and the CheXGenBench / LLaVA-Rad test CSV
ID_COLUMNS = ("id", "dicom_id", "image_id", "path")  # first present one names each output file
DEFAULT_BATCH, DEFAULT_SEED = 4, 0

EXAMPLES = """\
examples:
  unixcxr generate --model runs/small "FINDINGS: Small left pleural effusion." -o effusion.png
  unixcxr generate --model ~/weights/UniX --prompts test.csv --out-dir images/ --device cuda --dtype bf16
  unixcxr generate --model runs/small --settings demo --steps 30 --seed 7 "FINDINGS: Clear lungs." -o a.png

Sampling defaults are the model's own: for the authors' weights (release folder or converted) their
evaluation settings, `--settings released`: 50 steps (grid points), text CFG 2.0, image CFG 1.0,
CFG interval (0.4, 1.0], shift 3.0, renorm; for our models `--settings unixcxr` (the same with
shift 1.0, no renorm). --settings demo takes the authors' demo values (text 3.0, image 1.5: an
effective text scale of 4.0 with no input image, shift 3.0); any option given replaces its preset value.
--steps counts the sampler's grid points as the release does; --num-inference-steps counts Euler
steps as diffusers does (--steps 50 = --num-inference-steps 49); --guidance-scale is --cfg-text.
One image shows a bar of sampler steps; several, a bar of images.
--prompts reads a CSV or JSONL with a `report` or `annotated_prompt` column; each row becomes
OUT_DIR/ID.png, ID from an id / dicom_id / image_id / path column or the row number. --prompts
also takes a data set (a MIMIC-CXR-JPG layout folder or a shards folder): each study of --split
(default test) is drawn from its findings, as the evaluation does, into OUT_DIR/<study id>.png. Existing
PNGs are skipped, so an interrupted job resumes; row i always uses seed + i, so a resumed job
draws the same images. Files are written atomically; -o writes PNG or JPEG by its suffix (.png,
.jpg). Every option is checked before the model is loaded."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help=__doc__.splitlines()[0], description=__doc__, epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", metavar="REPORT", nargs="*", help="report text(s) to draw")
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, help="PNG (or .jpg: JPEG) file for a single REPORT")
    parser.add_argument("--prompts", type=Path,
                        help="CSV/JSONL with a report or annotated_prompt column, or a data folder / shards folder")
    parser.add_argument("--split", default="test", choices=("train", "validate", "test"),
                        help="with a data folder as --prompts: the split whose findings are drawn (default test)")
    parser.add_argument("--out-dir", type=Path, help="folder for the images of several reports (--prompts)")
    parser.add_argument("--settings", default=None, choices=SAMPLER_PRESETS,
                        help="sampler preset (default: the model's own, released for the authors' weights)")
    parser.add_argument("--steps", type=int,
                        help=f"sampling grid points (released: {RELEASED_POINTS} = {RELEASED_POINTS - 1} Euler steps)")
    parser.add_argument("--num-inference-steps", type=int,
                        help=f"Euler steps, as diffusers counts them (= --steps - 1; released: {RELEASED_POINTS - 1})")
    parser.add_argument("--cfg-text", type=float, help=f"text guidance scale (released: {RELEASED['cfg_text']})")
    parser.add_argument("--guidance-scale", type=float, help="diffusers' name for --cfg-text")
    parser.add_argument("--cfg-img", type=float, help=f"image guidance scale (released: {RELEASED['cfg_img']})")
    parser.add_argument("--cfg-interval", type=float, nargs=2, metavar=("LO", "HI"),
                        help="guidance applied while LO < t <= HI (released: {} {})".format(*RELEASED["cfg_interval"]))
    parser.add_argument("--shift", type=float, help=f"timestep shift (released: {RELEASED['shift']})")
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's, 512 for UniX)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"base seed (default {DEFAULT_SEED})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                        help=f"images per sampling batch (default {DEFAULT_BATCH})")
    parser.set_defaults(func=run)


def report_text(value: object) -> str:
    """A table cell as report text; a missing value ("", None, NaN written as text) is empty."""
    from unixcxr.evaluate.report_io import is_missing

    return "" if is_missing(value) else str(value)


def _file_id(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(value).stem if "/" in value else value).strip("._") or "image"


def read_jobs(args: argparse.Namespace) -> list[tuple[Path, str, int]]:
    """(output PNG, report text, seed) for every requested image."""
    if args.prompts is None:
        if len(args.reports) != 1 or args.output is None:
            raise CliError("give one REPORT with -o OUT.png, or --prompts FILE with --out-dir DIR")
        if not args.reports[0].strip():
            raise CliError("REPORT is empty; write the findings the image should show")
        check_output_file(args.output, suffixes=tuple(IMAGE_FORMATS), example="image.png")
        return [(args.output, args.reports[0], args.seed)]
    if args.reports or args.out_dir is None:
        raise CliError("--prompts needs --out-dir DIR and no REPORT arguments")
    check_output_folder(args.out_dir, "--out-dir")
    if args.prompts.is_dir():
        return data_set_jobs(args)
    from unixcxr.evaluate.report_io import ReportInputError, read_table

    try:
        rows, columns = read_table(args.prompts)
    except ReportInputError as err:
        raise CliError(str(err)) from err
    text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
    if text_column is None:
        raise CliError(f"{args.prompts}: no {' or '.join(TEXT_COLUMNS)} column (columns: {', '.join(columns)})")
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    width = len(str(len(rows)))
    jobs, seen = [], set()
    for i, row in enumerate(rows):
        name = _file_id(str(row[id_column])) if id_column else f"{i:0{width}d}"
        if name in seen:
            raise CliError(f"{args.prompts}: row {i} repeats the id {name!r}; ids must be unique")
        seen.add(name)
        jobs.append((args.out_dir / f"{name}.png", report_text(row.get(text_column)), args.seed + i))
    empty = [str(path.stem) for path, text, _ in jobs if not text.strip()]
    if empty:
        raise CliError(f"{args.prompts}: empty {text_column} for {', '.join(empty[:5])}; fill or remove those rows")
    return jobs


def data_set_jobs(args: argparse.Namespace) -> list[tuple[Path, str, int]]:
    """One job per study of a data set's split: its findings (the evaluation's prompt), seed + i."""
    from unixcxr.data.reports import DataError
    from unixcxr.data.sources import DataSource
    from unixcxr.evaluate.suite import first_per_study

    try:
        studies = first_per_study(DataSource(args.prompts).samples(args.split))
    except DataError as err:
        raise CliError(str(err)) from err
    if not studies:
        raise CliError(f"{args.prompts}: no studies with report text in split {args.split!r}")
    return [(args.out_dir / f"{s.study_id}.png", s.prompt, args.seed + i) for i, s in enumerate(studies)]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from unixcxr.inference.field_names import grid_points, text_guidance

    check_options(args, "steps", "num_inference_steps", "cfg_text", "guidance_scale", "cfg_img", "cfg_interval",
                  "shift", "size", "seed", "batch_size")
    args.steps = grid_points(args.steps, args.num_inference_steps)  # InvalidValue: named as its option by main()
    args.cfg_text = text_guidance(args.cfg_text, args.guidance_scale)
    jobs = read_jobs(args)
    if not jobs:
        raise CliError(f"{args.prompts}: no rows to draw")
    if jobs[-1][2] > SEED_MAX:
        raise CliError(f"--seed {args.seed} + {len(jobs) - 1} (one seed per image) is over 2**63 - 1; "
                       "choose a smaller --seed")
    todo = [job for job in jobs if not job[0].is_file()] if args.prompts else jobs
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} of {len(jobs)} images already in {args.out_dir}; resuming", file=sys.stderr)
    if not todo:
        return 0
    pipe = load_pipeline(args)
    sampling = dict(steps=args.steps, cfg_text=args.cfg_text, cfg_img=args.cfg_img, cfg_interval=args.cfg_interval,
                    shift=args.shift, size=args.size, settings=args.settings)
    try:
        pipe.sampler_settings(args.settings, steps=args.steps, cfg_text=args.cfg_text, cfg_img=args.cfg_img,
                              cfg_interval=args.cfg_interval, shift=args.shift)  # the preset + these: valid
        pipe.latent_grid(args.size)
    except InvalidValue:
        raise
    except ValueError as err:
        raise CliError(f"--size {args.size}: {err}" if "image size" in str(err) else str(err)) from err
    bar = tqdm(total=len(todo), unit="image", desc="images", disable=len(todo) == 1)
    for start in range(0, len(todo), args.batch_size):
        batch = todo[start:start + args.batch_size]
        try:
            images = pipe.generate([text for _, text, _ in batch], seed=[seed for *_, seed in batch], **sampling,
                                   batch_size=args.batch_size, progress=True)
        except InvalidValue:
            raise
        except ValueError as err:
            raise CliError(str(err)) from err
        for (path, _, _), image in zip(batch, images):
            write_image(path, image)
        bar.update(len(batch))
    bar.close()
    print(f"wrote {len(todo)} image(s) to {args.output or args.out_dir}", file=sys.stderr)
    return 0
