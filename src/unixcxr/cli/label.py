"""Label reports with the 14 CheXpert observations (rule-based offline, or CheXbert)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unixcxr.cli import CliError, check_options
from unixcxr.cli.outputs import check_output_file
from unixcxr.labels import OBSERVATIONS

EPILOG = """\
REPORTS is a CSV (or TSV) file with a report column, a JSONL file with a report field, or a
folder of .txt files (one report each). The output CSV keeps every other column (for a folder:
the file name) and adds the 14 observation columns, each holding 1 (positive), 0 (negative),
-1 (uncertain) or nothing (not mentioned).

examples:
  unixcxr label reports.csv -o labels.csv
  unixcxr label generated.jsonl --column text -o labels.csv
  unixcxr label reports_folder/ -o labels.csv
  unixcxr label reports.csv -o labels.csv --backend chexbert \\
      --chexbert weights/chexbert.pth --bert weights/bert-base-uncased
"""


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend / --chexbert / --bert / --device / --batch-size, shared with eval-reports."""
    parser.add_argument("--backend", choices=("rules", "chexbert"), default="rules",
                        help="rules: built-in offline CheXpert-style labeler (default); chexbert: the neural "
                        "CheXbert labeler from your own weights")
    parser.add_argument("--chexbert", type=Path, metavar="PATH",
                        help="CheXbert checkpoint (chexbert.pth) for --backend chexbert")
    parser.add_argument("--bert", type=Path, metavar="DIR",
                        help="bert-base-uncased folder (config.json + vocab.txt) for --backend chexbert")
    parser.add_argument("--device", default="cpu", help="torch device for --backend chexbert (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=16, help="reports per CheXbert batch (default: 16)")


def make_labeler(args: argparse.Namespace):
    """A callable texts -> list of label dicts for the chosen backend; CliError on bad arguments."""
    check_options(args, "batch_size")
    if args.backend == "rules":
        from unixcxr.labeler import label_reports

        return lambda texts: label_reports(texts, progress=True)
    from unixcxr.evaluate.chexbert import CheXbertError, CheXbertLabeler

    if args.chexbert is None or args.bert is None:
        raise CliError("--backend chexbert needs --chexbert PATH/chexbert.pth and --bert PATH/bert-folder")
    try:
        labeler = CheXbertLabeler(args.chexbert, args.bert, device=args.device)
    except CheXbertError as err:
        raise CliError(str(err)) from err
    return lambda texts: labeler.label_reports(texts, batch_size=args.batch_size, progress=True)


def _cell(value) -> str:
    """A CSV cell for any input value: JSON for nested JSONL values, "" for missing ones."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "label", help=__doc__.splitlines()[0], description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reports", type=Path, metavar="REPORTS", help="CSV / TSV / JSONL file or folder of .txt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output CSV (written atomically)")
    parser.add_argument("--column", default="report", help="name of the report column / field (default: report)")
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unixcxr.evaluate.report_io import (
        ReportInputError,
        labels_to_cells,
        read_table,
        report_texts,
        write_csv,
    )

    check_output_file(args.output, example="labels.csv")
    if args.output.resolve() == args.reports.resolve():
        raise CliError(f"-o {args.output}: is the input itself; name a new file for the labels")
    labeler = make_labeler(args)
    try:
        rows, columns = read_table(args.reports)
        texts = report_texts(rows, args.column, args.reports, columns)
    except ReportInputError as err:
        raise CliError(str(err)) from err
    labels = labeler(texts)
    kept = [c for c in columns if c not in OBSERVATIONS]
    if len(kept) < len(columns):
        print(f"note: {args.reports} already has observation columns; they are replaced by the new labels")
    out_rows = [{**{c: _cell(row.get(c)) for c in kept}, **labels_to_cells(lab)} for row, lab in zip(rows, labels)]
    write_csv(args.output, out_rows, [*kept, *OBSERVATIONS])
    positives = sum(lab[name] == 1 for lab in labels for name in OBSERVATIONS[:-1])
    print(f"labelled {len(rows)} reports ({positives} positive findings) -> {args.output}")
    return 0
