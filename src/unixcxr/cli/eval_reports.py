"""Score generated reports against references: label F1 (14 / top-5), BLEU, ROUGE-L, RadGraph."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.cli.label import add_backend_arguments, make_labeler
from unixcxr.cli.outputs import check_output_file

EPILOG = """\
--pred and --ref are CSV / TSV / JSONL files with an id column and a report column; reports are
matched by id (ids found in only one file are counted and left out). Both sides are labelled with
the same labeler, then scored as the UniX evaluation does (docs/metrics.md): Micro/Macro F1 over 14 and top-5
observations with uncertain counted as negative and as positive, per-class F1, example-based
P/R/F1, BLEU-1..4 and ROUGE-L. RadGraph F1 only with --radgraph (a local RadGraph model folder).

examples:
  unixcxr eval-reports --pred generated.csv --ref test_reports.csv -o results/reports.json
  unixcxr eval-reports --pred gen.jsonl --ref ref.jsonl --id-column study_id --column text
  unixcxr eval-reports --pred gen.csv --ref ref.csv --backend chexbert \\
      --chexbert weights/chexbert.pth --bert weights/bert-base-uncased -o results/reports.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-reports", help=__doc__.splitlines()[0], description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", type=Path, required=True, help="generated reports (CSV / TSV / JSONL)")
    parser.add_argument("--ref", type=Path, required=True, help="reference reports (CSV / TSV / JSONL)")
    parser.add_argument("-o", "--output", type=Path,
                        help="results JSON; a Markdown table is written next to it (.md). Default: print only")
    parser.add_argument("--id-column", default="id", help="column matching the two files (default: id)")
    parser.add_argument("--column", default="report", help="report column in both files (default: report)")
    parser.add_argument("--radgraph", type=Path, metavar="DIR",
                        help="folder holding an extracted RadGraph model, for RadGraph F1 (needs `radgraph`)")
    parser.add_argument("--radgraph-model", default="radgraph", choices=("radgraph", "radgraph-xl"),
                        help="which RadGraph model in --radgraph (default: radgraph)")
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def _read_by_id(path: Path, id_column: str, column: str) -> dict[str, str]:
    from unixcxr.evaluate.report_io import ReportInputError, read_table, report_texts

    try:
        rows, columns = read_table(path)
        if id_column not in columns:
            raise ReportInputError(f"{path}: no id column {id_column!r} (columns: {', '.join(columns)}); "
                                   f"name it with --id-column")
        texts = report_texts(rows, column, path, columns)
    except ReportInputError as err:
        raise CliError(str(err)) from err
    by_id: dict[str, str] = {}
    for row, text in zip(rows, texts):
        key = str(row.get(id_column))
        if key in by_id:
            raise CliError(f"{path}: id {key!r} appears twice; ids in --id-column must be unique")
        by_id[key] = text
    return by_id


def run(args: argparse.Namespace) -> int:
    from unixcxr.evaluate.report_io import write_text
    from unixcxr.evaluate.report_metrics import markdown_table, report_metrics

    if args.output is not None:
        check_output_file(args.output, suffixes=(".json",), example="reports.json")
    labeler = make_labeler(args)
    preds, refs = (_read_by_id(p, args.id_column, args.column) for p in (args.pred, args.ref))
    ids = sorted(preds.keys() & refs.keys())
    if not ids:
        raise CliError(f"no id appears in both {args.pred} and {args.ref}; check --id-column")
    radgraph = None
    if args.radgraph is not None:
        radgraph = (args.radgraph, args.radgraph_model)
    pred_texts, ref_texts = [preds[i] for i in ids], [refs[i] for i in ids]
    pred_labels, ref_labels = labeler(pred_texts), labeler(ref_texts)
    try:
        results = report_metrics(pred_texts, ref_texts, pred_labels, ref_labels, radgraph=radgraph)
    except (ImportError, FileNotFoundError) as err:
        raise CliError(str(err)) from err
    results["labeler"] = (f"CheXbert ({args.chexbert})" if args.backend == "chexbert"
                          else "unixcxr rule-based CheXpert-style labeler")
    results["inputs"] = {"pred": str(args.pred), "ref": str(args.ref), "matched": len(ids),
                         "only_in_pred": len(preds.keys() - refs.keys()),
                         "only_in_ref": len(refs.keys() - preds.keys())}
    table = markdown_table(results)
    print(table, end="")
    if args.output is not None:
        write_text(args.output, json.dumps(results, indent=2) + "\n")
        write_text(args.output.with_suffix(".md"), table)
        print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 0
