"""Batch input and resumable output for the cleaning pipeline.

Input: JSONL (one object per line) or CSV, an id column and a report column, names configurable;
or a folder of MIMIC-CXR report files (files/p10/p10000032/s50414267.txt, id = the file stem).
A line that cannot be read becomes an InputRecord with an `error`, so that it reaches the output as
a failed record instead of stopping the run or vanishing.

Output: JSONL, appended one complete line per write, flushed and fsynced, so a run killed at any
moment leaves every finished record on disk and at most one partial line at the end. On restart
the partial line is cut off and the ids already written are skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from unixcxr.data.reports import DataError

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")
REPORT_SUFFIX = ".txt"  # one report per file in a folder input (MIMIC-CXR reports, SynthCXR reports/)


@dataclass(frozen=True)
class InputRecord:
    """One input row: its id, its report text, or why it could not be read."""

    id: str
    text: str | None
    error: str | None = None


def _record(row: dict, where: str, id_column: str, text_column: str) -> InputRecord:
    record_id = row.get(id_column)
    record_id = where if record_id is None or str(record_id).strip() == "" else str(record_id)
    text = row.get(text_column)
    if not isinstance(text, str):
        found = "missing" if text is None else f"a {type(text).__name__}, not text"
        return InputRecord(record_id, None, f"{where}: report column {text_column!r} is {found}")
    return InputRecord(record_id, text)


def _read_jsonl(path: Path, id_column: str, text_column: str) -> Iterator[InputRecord]:
    with path.open("r", encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield InputRecord(where, None, f"{where}: malformed JSON ({err.msg})")
                continue
            if not isinstance(row, dict):
                yield InputRecord(where, None, f"{where}: expected a JSON object, got {type(row).__name__}")
                continue
            yield _record(row, where, id_column, text_column)


def _read_csv(path: Path, id_column: str, text_column: str) -> Iterator[InputRecord]:
    csv.field_size_limit(sys.maxsize // 2)  # MIMIC reports with long addenda exceed the 128 kB default
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, strict=True)  # an unclosed quote is an error
        missing = [c for c in (id_column, text_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: no column {missing} (columns: {reader.fieldnames}); "
                            "name the right ones with --id-column / --text-column")  # fmt: skip
        while True:
            where = f"row {reader.line_num + 1}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield InputRecord(where, None, f"{where}: unreadable CSV ({err})")
                continue
            yield _record(row, where, id_column, text_column)


def _read_folder(path: Path) -> Iterator[InputRecord]:
    for file in sorted(path.rglob(f"*{REPORT_SUFFIX}")):
        try:
            yield InputRecord(file.stem, file.read_text(encoding="utf-8", errors="replace"))
        except OSError as err:
            yield InputRecord(file.stem, None, f"{file}: unreadable ({err.strerror or err})")


def read_records(path: str | Path, id_column: str = "id",
                 text_column: str = "report") -> Iterator[InputRecord]:  # fmt: skip
    """Records of a JSONL or CSV file (chosen by suffix) or of a folder of report .txt files;
    DataError for a missing path or an unknown format."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise DataError(f"{path}: no such input file or folder")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, id_column, text_column)
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, id_column, text_column)
    raise DataError(f"{path}: unknown input format {suffix!r}; use .jsonl, .csv or a folder of "
                    f"{REPORT_SUFFIX} reports")


def count_records(path: str | Path, id_column: str = "id", text_column: str = "report") -> int:
    """How many records read_records will yield (for the progress bar)."""
    return sum(1 for _ in read_records(path, id_column, text_column))


class ResumableWriter:
    """Append-only JSONL output that survives being killed.

    Opening it repairs the file (a partial last line from a killed run is truncated away) and
    collects the ids (the `key` field) already written; `append` writes one whole line with a
    single write() on an O_APPEND descriptor, then fsyncs, so a line is either fully on disk or not
    at all. Only a file this writer could have written is resumed: every complete line a JSON
    object with `key`, a partial last line cut only when it opens like one of ours. Any other file
    (notes.txt, another tool's JSONL) is refused with DataError and left as it was: resuming it
    would mean cutting it. The file and its folder are created at the first append, so a run that
    writes nothing leaves nothing behind."""

    def __init__(self, path: str | Path, redact: Callable[[str], str] | None = None, key: str = "id"):
        self.path, self.key = Path(path), key
        self._redact = redact or (lambda text: text)
        self._fd = -1
        self.done = self._repair_and_collect()

    def _not_ours(self, where: str) -> DataError:
        return DataError(f"{self.path}: {where} is not a record this command writes (a JSON object with "
                         f"{self.key!r}); the file is left as it is: choose a new output file")

    def _repair_and_collect(self) -> set[str]:
        if not self.path.exists():
            return set()
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a file; name a .jsonl file for the output")
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        done = set()
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            try:
                record = json.loads(line)
                done.add(str(record[self.key]))
            except (ValueError, KeyError, TypeError):
                raise self._not_ours(f"line {number}") from None
        if complete < len(data):
            if not data[complete:].startswith(json.dumps({self.key: ""})[:-3].encode()):  # '{"id": '
                raise self._not_ours("its last line")
            log.warning("%s: dropping a partial last line (%d bytes) left by an interrupted run",
                        self.path, len(data) - complete)  # fmt: skip
            os.truncate(self.path, complete)
        return done

    def append(self, record: dict) -> None:
        line = (self._redact(json.dumps(record, ensure_ascii=False)) + "\n").encode("utf-8")
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.done.add(str(record[self.key]))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
