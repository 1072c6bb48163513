"""Cleaned report text (the JSONL that `unixcxr clean` writes) laid over a data set's raw reports.

The paper trains and scores on LLM-cleaned reports; `unixcxr clean` writes one line per report,
{"id", "original", "cleaned", "stage", ...}. Its ids are what the input named: for a folder of
MIMIC report files the file stem ("s50414267"), for a CSV / JSONL its id column (often the bare
study id "50414267"). Both forms are matched to a study. A record whose cleaning failed carries no
cleaned text; its study keeps the raw report and is counted."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from unixcxr.data.reports import DataError, StudyRecord, extract_findings_impression


@dataclass(frozen=True)
class CleanedReports:
    """study id -> (findings, impression) of its cleaned report; `failed` ids have no cleaned text."""

    path: Path
    sections: dict[str, tuple[str, str]]
    failed: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: str | Path) -> CleanedReports:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such cleaned-reports file; write it with `unixcxr clean REPORTS {path}`")
        sections, failed = {}, set()
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    study, text = study_key(str(row["id"])), row.get("cleaned") or ""
                except (ValueError, KeyError, TypeError):
                    if not line.endswith("\n"):  # the partial last line of a killed `clean` run
                        continue
                    raise DataError(f"{path} line {number}: not a `unixcxr clean` output record (needs \"id\" and "
                                    "\"cleaned\"); pass the JSONL that `unixcxr clean` wrote") from None
                if text.strip():
                    sections[study] = extract_findings_impression(text)
                else:
                    failed.add(study)
        if not sections and not failed:
            raise DataError(f"{path}: holds no cleaned reports; run `unixcxr clean` into it first")
        return cls(path, sections, frozenset(failed - set(sections)))

    def lookup(self, study_id: str) -> tuple[str, str] | None:
        return self.sections.get(study_key(study_id))

    def check_matches(self, study_ids: set[str]) -> int:
        """How many of `study_ids` have a cleaned text. No match at all is an error (the wrong
        file, or ids of another data set); a partial match warns with the count."""
        keys = {study_key(s) for s in study_ids}
        matched = len(keys & set(self.sections))
        if not study_ids:
            return 0
        if not matched and not keys & self.failed:
            example = next(iter(self.sections or self.failed))
            raise DataError(f"{self.path}: none of its {len(self.sections) + len(self.failed)} ids matches a study "
                            f"of the data (e.g. {example!r} vs {next(iter(keys))!r}); clean this data set's reports")
        if matched < len(keys):
            warnings.warn(f"{self.path}: {len(keys) - matched} of {len(keys)} studies have no cleaned text and keep "
                          "their raw report", stacklevel=2)
        return matched


def apply_cleaned(records: list[StudyRecord], cleaned: CleanedReports) -> tuple[list[StudyRecord], set[str]]:
    """The records with their cleaned findings / impression where there is one; and the ids of those."""
    cleaned.check_matches({r.study_id for r in records})
    out, done = [], set()
    for record in records:
        text = cleaned.lookup(record.study_id)
        if text is not None:
            record = replace(record, findings=text[0], impression=text[1])
            done.add(record.study_id)
        out.append(record)
    return out, done


def study_key(value: str) -> str:
    """"s50414267", "50414267" and "s50414267.txt" all name study 50414267."""
    value = value.strip()
    value = value[:-4] if value.endswith(".txt") else value
    return value[1:] if value[:1] == "s" and value[1:].isdigit() else value
