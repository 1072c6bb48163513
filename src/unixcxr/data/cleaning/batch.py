"""The batch tool: a file of raw reports in, a JSONL of cleaned reports out (`unixcxr clean`).

Each output line holds the id, the original text, the cleaned text, the stage that produced it
("rules", "llm" or "failed") and flags: "rule_labels_changed: ..." when the rule stage changed the
labeler's reading, and the LLM stage's flags (guard, judge, endpoint failures). Records are
cleaned by a bounded thread pool (the LLM stage waits on the network; the rule stage is quick)
and written by the main thread as they finish, one fsynced line each, so a killed run resumes
where it stopped. A bad record or a bad answer is a flagged or failed line, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from unixcxr.data.cleaning.records import InputRecord, ResumableWriter, count_records, read_records
from unixcxr.data.cleaning.rewrite import Labeler, LLMStage, default_labeler, label_diff
from unixcxr.data.cleaning.rules import clean_report

log = logging.getLogger(__name__)

RULES, LLM, FAILED = "rules", "llm", "failed"
IN_FLIGHT_PER_WORKER = 2  # queued futures per worker: keeps workers busy without reading the whole file


@dataclass(frozen=True)
class PipelineConfig:
    id_column: str = "id"
    text_column: str = "report"
    workers: int = 4
    limit: int | None = None  # clean at most this many new records (for a trial run)
    progress: bool = True


@dataclass
class Summary:
    """Counts for the end-of-run report. `rewritten` + `unchanged` + `failed` = `cleaned`."""

    cleaned: int = 0  # records written by this run
    resumed: int = 0  # records skipped because a previous run wrote them
    duplicates: int = 0  # input rows whose id was already seen in this input
    rewritten: int = 0  # cleaned text differs from the original sections
    unchanged: int = 0
    flagged: int = 0  # written with at least one flag
    failed: int = 0  # no cleaned text (unreadable record, empty report, error)
    by_stage: dict[str, int] = field(default_factory=dict)

    def add(self, record: dict) -> None:
        self.cleaned += 1
        self.by_stage[record["stage"]] = self.by_stage.get(record["stage"], 0) + 1
        self.flagged += bool(record["flags"])
        if record["stage"] == FAILED:
            self.failed += 1
        elif record["changed"]:
            self.rewritten += 1
        else:
            self.unchanged += 1

    def lines(self) -> list[str]:
        stages = ", ".join(f"{stage} {count}" for stage, count in sorted(self.by_stage.items()))
        return [f"cleaned {self.cleaned} records ({stages or 'none'}); skipped {self.resumed} already done"
                f" and {self.duplicates} duplicate ids",
                f"rewritten {self.rewritten}, unchanged {self.unchanged}, flagged {self.flagged}, "
                f"failed {self.failed}"]  # fmt: skip


def _failed(record: InputRecord, reason: str) -> dict:
    return {"id": record.id, "original": record.text, "cleaned": "", "stage": FAILED, "changed": False,
            "flags": [reason]}  # fmt: skip


def clean_record(record: InputRecord, llm: LLMStage | None = None,
                 labeler: Labeler = default_labeler) -> dict:  # fmt: skip
    """One output record for one input record: rule stage, label check, optional LLM stage."""
    if record.error:
        return _failed(record, f"unreadable_input: {record.error}")
    rules = clean_report(record.text or "")
    if rules.original.is_empty():
        return _failed(record, "no_report_text: no FINDINGS or IMPRESSION text")
    original = rules.original.as_text()
    original_labels = labeler(original)
    flags = []
    if not rules.text:
        flags.append("empty_after_cleaning: every sentence was noise")
    elif changed := label_diff(original_labels, labeler(rules.text)):
        flags.append("rule_labels_changed: " + ", ".join(changed))
    cleaned, stage = rules.text, RULES
    if llm is not None and rules.text:  # a report that was all noise has nothing to rewrite
        outcome = llm.run(original, rules.text, original_labels)
        if outcome.text is not None:  # it passed the label guard, so the rule-stage flag no longer applies
            cleaned, stage, flags = outcome.text, LLM, []
        flags.extend(outcome.flags)
    return {"id": record.id, "original": record.text, "cleaned": cleaned, "stage": stage,
            "changed": cleaned != original, "flags": flags}  # fmt: skip


def _safe_clean(record: InputRecord, llm: LLMStage | None, labeler: Labeler) -> dict:
    """clean_record that turns any exception into a failed record: one bad report must not stop
    a run of 200,000, and its id must still reach the output."""
    try:
        return clean_record(record, llm, labeler)
    except Exception as err:  # noqa: BLE001 - deliberately broad, see docstring
        log.exception("record %s failed", record.id)
        return _failed(record, f"error: {type(err).__name__}: {err}")


def _pending(records: Iterator[InputRecord], writer: ResumableWriter, summary: Summary,
             limit: int | None) -> Iterator[InputRecord]:  # fmt: skip
    """Records still to clean: ids done by an earlier run and repeated ids are skipped."""
    seen: set[str] = set()
    taken = 0
    for record in records:
        if record.id in writer.done:
            summary.resumed += 1
        elif record.id in seen:
            summary.duplicates += 1
            log.warning("duplicate id %s: only its first row is cleaned", record.id)
        elif limit is None or taken < limit:
            seen.add(record.id)
            taken += 1
            yield record


def run(input_path: str | Path, output_path: str | Path, config: PipelineConfig = PipelineConfig(),
        llm: LLMStage | None = None, labeler: Labeler = default_labeler) -> Summary:  # fmt: skip
    """Clean every record of `input_path` not yet in `output_path`, appending to it."""
    summary = Summary()
    records = read_records(input_path, config.id_column, config.text_column)
    total = count_records(input_path, config.id_column, config.text_column) if config.progress else None
    redact = llm.client.redact if llm is not None else None
    with ResumableWriter(output_path, redact=redact) as writer, \
            ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool, \
            tqdm(total=total, desc="clean", unit="report", disable=not config.progress) as bar:  # fmt: skip
        bar.update(len(writer.done) if total else 0)
        in_flight: set[Future] = set()
        bound = max(1, config.workers) * IN_FLIGHT_PER_WORKER
        try:
            for record in _pending(records, writer, summary, config.limit):
                in_flight.add(pool.submit(_safe_clean, record, llm, labeler))
                if len(in_flight) >= bound:
                    in_flight = _drain(in_flight, writer, summary, bar, FIRST_COMPLETED)
            _drain(in_flight, writer, summary, bar, None)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    return summary


def _drain(in_flight: set[Future], writer: ResumableWriter, summary: Summary, bar: tqdm,
           until: str | None) -> set[Future]:  # fmt: skip
    """Write finished records; wait for one (FIRST_COMPLETED) or for all (None)."""
    done, not_done = wait(in_flight, return_when=until or "ALL_COMPLETED")
    for future in done:
        record = future.result()
        writer.append(record)
        summary.add(record)
        bar.update(1)
    return not_done
