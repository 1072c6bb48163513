"""The batch tool: JSONL / CSV in, JSONL out; every record exactly once, resumable after a kill,
bad records and bad endpoints never stop a run, the API key never reaches the output or the logs."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cleaning_llm import INVENTED, SECRET, ChatServer, Reply, client_for, faithful, inventing
from unixcxr.cli import CliError
from unixcxr.cli import clean as clean_cli
from unixcxr.data.cleaning.batch import FAILED, LLM, RULES, PipelineConfig, run
from unixcxr.data.cleaning.records import ResumableWriter, read_records
from unixcxr.data.cleaning.rewrite import LLMStage
from unixcxr.data.reports import DataError

REPORTS = [
    "FINDINGS: Stable moderate cardiomegaly. No pneumothorax. IMPRESSION: Cardiomegaly, unchanged from ___.",
    "FINDINGS: PA and lateral views of the chest were obtained. The lungs are clear. IMPRESSION: Normal chest.",
    "FINDINGS: Small left pleural effusion is again seen. IMPRESSION: Findings discussed with Dr. ___ at 8:45.",
    "FINDINGS: The heart size is normal. The lungs are clear. IMPRESSION: No acute cardiopulmonary process.",
]
QUIET = PipelineConfig(workers=2, progress=False)


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def reports_file(path: Path, count: int) -> Path:
    return write_jsonl(path, [{"id": f"r{i}", "report": REPORTS[i % len(REPORTS)]} for i in range(count)])


def output(path: Path) -> dict[str, dict]:
    """Output records by id, asserting every line is complete JSON and no id appears twice."""
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)), "an id was written twice"
    return {record["id"]: record for record in records}


def test_every_record_is_written_once_with_its_cleaned_text_and_stage(tmp_path: Path):
    summary = run(reports_file(tmp_path / "in.jsonl", 8), tmp_path / "out.jsonl", QUIET)
    records = output(tmp_path / "out.jsonl")
    assert sorted(records) == sorted(f"r{i}" for i in range(8))
    first = records["r0"]
    assert first["original"] == REPORTS[0] and first["stage"] == RULES and first["changed"]
    assert first["cleaned"] == "FINDINGS: Moderate cardiomegaly. No pneumothorax. IMPRESSION: Cardiomegaly."
    assert records["r3"]["changed"] is False
    assert (summary.cleaned, summary.rewritten, summary.unchanged, summary.failed) == (8, 6, 2, 0)


def test_csv_input_with_named_columns(tmp_path: Path):
    path = tmp_path / "in.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_id", "text"])
        writer.writerows([[f"s{i}", report] for i, report in enumerate(REPORTS)])
    run(path, tmp_path / "out.jsonl", PipelineConfig(id_column="study_id", text_column="text", progress=False))
    assert sorted(output(tmp_path / "out.jsonl")) == ["s0", "s1", "s2", "s3"]
    with pytest.raises(DataError, match=r"no column \['id', 'report'\].*--id-column"):
        list(read_records(path))


def test_unreadable_records_become_failed_lines_and_the_run_goes_on(tmp_path: Path):
    rows = [{"id": "good", "report": REPORTS[0]}, '{"id": "broken", "report": "FINDINGS: cut', "[1, 2]",
            {"id": "number", "report": 42}, {"id": "missing"}, {"id": "empty", "report": "   "},
            {"id": "noise", "report": "IMPRESSION: Dr. ___ was paged."}, {"report": REPORTS[3]}]  # fmt: skip
    summary = run(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", QUIET)
    records = output(tmp_path / "out.jsonl")
    assert set(records) == {"good", "line 2", "line 3", "number", "missing", "empty", "noise", "line 8"}
    for failed in ("line 2", "line 3", "number", "missing", "empty"):
        assert records[failed]["stage"] == FAILED and records[failed]["flags"], failed
    assert "malformed JSON" in records["line 2"]["flags"][0]
    assert records["noise"]["cleaned"] == "" and records["noise"]["flags"] == [
        "empty_after_cleaning: every sentence was noise"]
    assert records["line 8"]["stage"] == RULES and summary.failed == 5


def test_a_partial_last_line_is_dropped_and_done_ids_skipped_on_restart(tmp_path: Path):
    source, out = reports_file(tmp_path / "in.jsonl", 10), tmp_path / "out.jsonl"
    run(source, out, PipelineConfig(workers=1, limit=4, progress=False))
    with out.open("a") as handle:  # what a kill in the middle of a write would leave
        handle.write('{"id": "r7", "original": "FINDINGS: trunc')
    assert len(ResumableWriter(out).done) == 4
    summary = run(source, out, QUIET)
    assert sorted(output(out)) == sorted(f"r{i}" for i in range(10))
    assert (summary.resumed, summary.cleaned) == (4, 6)


def test_duplicate_ids_are_cleaned_once(tmp_path: Path):
    rows = [{"id": "a", "report": REPORTS[0]}, {"id": "a", "report": REPORTS[1]}, {"id": "b", "report": REPORTS[2]}]
    summary = run(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", QUIET)
    assert output(tmp_path / "out.jsonl")["a"]["original"] == REPORTS[0] and summary.duplicates == 1


def llm_stage(server: ChatServer, **overrides: object) -> LLMStage:
    return LLMStage(client_for(server, **overrides), rounds=2)


def test_concurrent_llm_rewrites_are_all_written_and_counted(tmp_path: Path):
    slow_faithful = lambda request, n: Reply(**{**faithful(request, n).__dict__, "delay_s": 0.05})  # noqa: E731
    with ChatServer(slow_faithful) as server:
        start = time.monotonic()
        summary = run(reports_file(tmp_path / "in.jsonl", 16), tmp_path / "out.jsonl",
                      PipelineConfig(workers=8, progress=False), llm=llm_stage(server))  # fmt: skip
        elapsed = time.monotonic() - start
    records = output(tmp_path / "out.jsonl")
    assert len(records) == 16 and all(record["stage"] == LLM for record in records.values())
    assert summary.by_stage == {LLM: 16} and len(server.requests) == 32
    assert elapsed < 32 * 0.05  # requests overlapped: serial would take 1.6 s


def test_invented_findings_fall_back_to_rule_text_and_are_flagged(tmp_path: Path):
    with ChatServer(inventing) as server:
        summary = run(reports_file(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl", QUIET,
                      llm=llm_stage(server))  # fmt: skip
    for record in output(tmp_path / "out.jsonl").values():
        assert record["stage"] == RULES and INVENTED not in record["cleaned"]
        assert any(flag.startswith("guard_labels_changed") for flag in record["flags"])
    assert summary.flagged == 4


def test_an_endpoint_returning_garbage_never_loses_a_record(tmp_path: Path):
    with ChatServer(lambda request, n: Reply(body="}{ not json")) as server:
        summary = run(reports_file(tmp_path / "in.jsonl", 6), tmp_path / "out.jsonl", QUIET,
                      llm=llm_stage(server, max_retries=1))  # fmt: skip
    records = output(tmp_path / "out.jsonl")
    assert len(records) == 6 and all(record["stage"] == RULES for record in records.values())
    assert all(record["flags"][-1].startswith("llm_failed: malformed") for record in records.values())
    assert summary.flagged == 6 and summary.failed == 0


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="unixcxr")
    clean_cli.register(parser.add_subparsers())
    return parser.parse_args(["clean", *argv])


@pytest.mark.parametrize("argv, message", [
    (["--llm-url", "http://127.0.0.1:9/v1"], "--llm-url needs --llm-model"),
    (["--llm-model", "m"], "need --llm-url"),
    (["--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m", "--llm-key-env", "UNIXCXR_TEST_UNSET_KEY"],
     "UNIXCXR_TEST_UNSET_KEY is empty or unset"),
])  # fmt: skip
def test_cli_explains_an_incomplete_llm_setup(tmp_path: Path, argv: list[str], message: str):
    args = cli_args(str(reports_file(tmp_path / "in.jsonl", 1)), str(tmp_path / "out.jsonl"), *argv)
    with pytest.raises(CliError, match=message):
        args.func(args)


def test_cli_names_a_missing_input_file(tmp_path: Path):
    args = cli_args(str(tmp_path / "nope.jsonl"), str(tmp_path / "out.jsonl"))
    with pytest.raises(CliError, match="nope.jsonl: no such input file or folder"):
        args.func(args)


def start_cli(source: Path, out: Path, server: ChatServer) -> subprocess.Popen:
    command = [sys.executable, "-m", "unixcxr", "clean", str(source), str(out), "--workers", "2",
               "--llm-url", server.url, "--llm-model", "test-model", "--llm-key-env", "UNIXCXR_TEST_KEY",
               "--backoff-base", "0.01", "--llm-timeout", "5"]  # fmt: skip
    env = os.environ | {"UNIXCXR_TEST_KEY": SECRET}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_with_every_record_exactly_once(tmp_path: Path):
    def slow_and_flaky(request: dict, n: int) -> Reply:  # 429s and 500s along the way, all retried
        if n % 7 == 0:
            return Reply(status=429, body="rate limited", headers={"Retry-After": "0"})
        if n % 11 == 0:
            return Reply(status=500, body=f"echo: Bearer {SECRET}")
        return Reply(**{**faithful(request, n).__dict__, "delay_s": 0.1})

    source, out, count = reports_file(tmp_path / "in.jsonl", 40), tmp_path / "out.jsonl", 40
    with ChatServer(slow_and_flaky) as server:
        first = start_cli(source, out, server)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
            time.sleep(0.05)
        first.kill()
        first_out, first_err = first.communicate()
        written_before = len(output(out))
        assert 5 <= written_before < count, "the kill should land mid-run"
        second = start_cli(source, out, server)
        second_out, second_err = second.communicate(timeout=300)
    assert second.returncode == 0, second_err
    records = output(out)
    assert sorted(records) == sorted(f"r{i}" for i in range(count))
    assert all(record["stage"] == LLM for record in records.values())
    assert f"skipped {written_before} already done" in second_out
    assert f"cleaned {count - written_before} records" in second_out
    for text in (first_out, first_err, second_out, second_err, out.read_text()):
        assert SECRET not in text
