"""Reading report tables (CSV, JSONL, a folder of .txt files) and writing label tables.

Every user-facing error names the file and says how to fix it; callers turn `ReportInputError`
into the CLI's one-line error.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from unixcxr import files
from unixcxr.files import atomic_output
from unixcxr.labels import OBSERVATIONS

TEXT_SUFFIX = ".txt"
FILE_COLUMN = "file"  # the column naming each report of a folder input
# Cells that hold no report: what pandas and spreadsheets write for a missing value. Labelled as
# text they would read as a normal study (No Finding = 1); they are blank instead.
MISSING_TEXTS = frozenset({"", "nan", "none", "null", "n/a", "na"})


class ReportInputError(ValueError):
    """A report file the user gave cannot be read as asked; the message says why and what to do."""


def read_table(path: str | Path) -> tuple[list[dict[str, object]], list[str]]:
    """Rows and column names of a CSV file, a JSONL file or a folder of .txt reports.

    A folder becomes one row per .txt file (sorted by name) with columns `file` and `report`.
    """
    path = Path(path)
    if not path.exists():
        raise ReportInputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix in (".csv", ".tsv"):
            return _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as err:
        raise ReportInputError(f"{path}: not UTF-8 text ({err.reason}); re-save it as UTF-8") from err
    raise ReportInputError(f"{path}: unknown format; give a .csv, .tsv or .jsonl file, or a folder of .txt files")


def is_missing(value: object) -> bool:
    """No report in this cell: None, a float NaN, or a text such as "", "NaN", "null" (MISSING_TEXTS)."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_TEXTS


def report_texts(rows: Sequence[dict[str, object]], column: str, path: str | Path, columns: Sequence[str]) -> list[str]:
    """The report column as text; missing values (empty cells, JSON null, "NaN" and the like:
    is_missing) become "" and label as blank, and are counted on stderr."""
    if column not in columns:
        raise ReportInputError(
            f"{path}: no column {column!r} (columns: {', '.join(map(str, columns)) or 'none'}); "
            f"name the report column with --column"
        )
    texts = ["" if is_missing(row.get(column)) else str(row.get(column)) for row in rows]
    placeholders = sum(1 for row in rows if is_missing(row.get(column)) and str(row.get(column) or "").strip())
    if placeholders:
        print(f"note: {path}: {placeholders} {column} cell(s) hold a missing-value marker such as NaN; "
              "they are read as no report (blank labels)", file=sys.stderr)
    return texts


def labels_to_cells(labels: dict[str, int | None]) -> dict[str, str]:
    """One label dict as CSV cells: "1", "0", "-1" or "" (blank)."""
    return {name: "" if labels[name] is None else str(labels[name]) for name in OBSERVATIONS}


def write_csv(path: str | Path, rows: Iterable[dict[str, object]], columns: Sequence[str]) -> None:
    """Write a CSV atomically (unixcxr.files.atomic_output)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    files.write_text(path, text)


def _read_folder(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == TEXT_SUFFIX)
    if not files:
        raise ReportInputError(f"{path}: folder holds no {TEXT_SUFFIX} files; put one report per .txt file there")
    rows = []
    for file in files:
        try:
            rows.append({FILE_COLUMN: file.name, "report": file.read_text(encoding="utf-8")})
        except UnicodeDecodeError as err:
            raise ReportInputError(f"{file}: not UTF-8 text ({err.reason}); re-save it as UTF-8") from err
    return rows, [FILE_COLUMN, "report"]


def _read_jsonl(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    rows, columns = [], {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReportInputError(
                    f"{path}:{number}: not valid JSON ({err.msg}); write one JSON object per line"
                ) from err
            if not isinstance(row, dict):
                raise ReportInputError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
            columns.update(dict.fromkeys(row))
    if not rows:
        raise ReportInputError(f"{path}: no records; expected one JSON object per line")
    return rows, list(columns)


def _read_csv(path: Path, delimiter: str) -> tuple[list[dict[str, object]], list[str]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long reports are fine
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, strict=True)  # an unclosed quote fails, not eats the file
        try:
            rows = list(reader)
        except csv.Error as err:
            raise ReportInputError(f"{path}:{reader.line_num}: broken CSV ({err}); check its quoting "
                                   "(a quote opened and never closed?)") from err
        columns = list(reader.fieldnames or [])
    if not columns:
        raise ReportInputError(f"{path}: empty file; expected a header row with a report column")
    return rows, columns
