"""Clean raw radiology reports into "FINDINGS: ... IMPRESSION: ..." (rules, optionally an LLM)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.data.cleaning.llm import DEFAULT_KEY_ENV, LLMConfig

DEFAULTS = LLMConfig(url="", model="")
DEFAULT_WORKERS = 4
DEFAULT_ROUNDS = 3

EXAMPLES = f"""\
examples:
  unixcxr clean reports.jsonl cleaned.jsonl
  unixcxr clean mimic_reports.csv cleaned.jsonl --id-column study_id --text-column text
  unixcxr clean /data/mimic-cxr-reports/files cleaned.jsonl        # one .txt per study, id = file stem
  unixcxr synth data/synth --n 1000 --raw-noise && unixcxr clean data/synth/reports cleaned.jsonl
  export {DEFAULT_KEY_ENV}=sk-...
  unixcxr clean reports.jsonl cleaned.jsonl --llm-url https://api.deepseek.com/v1 \\
      --llm-model deepseek-chat --workers 16
  unixcxr clean reports.jsonl cleaned.jsonl --llm-url http://localhost:8000/v1 --llm-model qwen2.5-7b

Input: JSONL (one object per line) or CSV with an id column and a report column, or a folder
searched recursively for .txt reports (MIMIC-CXR layout; the id is the file name). Output: JSONL,
one line per record: {{"id", "original", "cleaned", "stage": "rules"|"llm"|"failed", "changed",
"flags": [...]}}. The rule stage always runs (offline). With --llm-url every report is also
rewritten by the model, checked by a judge call and by the labeler guard (the 14 CheXpert labels
of the rewrite must equal the original's); a rewrite that fails keeps the rule text and is flagged.
Rerunning the same command resumes: ids already in OUT are skipped, a partial last line is dropped.
The API key is read from the environment variable named by --llm-key-env and never printed."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clean", help=__doc__.splitlines()[0], description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", metavar="IN", type=Path,
                        help="raw reports: .jsonl, .csv, or a folder of .txt report files")
    parser.add_argument("output", metavar="OUT", type=Path, help="cleaned reports (.jsonl), appended to")
    parser.add_argument("--id-column", default="id", help="id field / column (default id)")
    parser.add_argument("--text-column", default="report", help="report field / column (default report)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"reports cleaned at once (default {DEFAULT_WORKERS}; raise for a remote LLM)")
    parser.add_argument("--limit", type=int, help="clean at most this many new records (a trial run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    llm = parser.add_argument_group("LLM stage (optional; any OpenAI-compatible chat-completions endpoint)")
    llm.add_argument("--llm-url", help="base URL, e.g. https://api.openai.com/v1 (off when absent)")
    llm.add_argument("--llm-model", help="model name the endpoint serves (required with --llm-url)")
    llm.add_argument("--llm-key-env", default=None,
                     help=f"environment variable holding the API key (default {DEFAULT_KEY_ENV}; "
                          "no key is sent when it is unset)")  # fmt: skip
    llm.add_argument("--llm-rounds", type=int, default=DEFAULT_ROUNDS,
                     help=f"rewrite attempts per report when the judge rejects one "
                          f"(default {DEFAULT_ROUNDS})")  # fmt: skip
    llm.add_argument("--llm-retries", type=int, default=DEFAULTS.max_retries,
                     help=f"retries per request on 429 / 5xx / timeouts (default {DEFAULTS.max_retries})")
    llm.add_argument("--llm-timeout", type=float, default=DEFAULTS.timeout_s,
                     help=f"seconds per request (default {DEFAULTS.timeout_s:g})")
    llm.add_argument("--backoff-base", type=float, default=DEFAULTS.backoff_base_s,
                     help=f"first retry wait in seconds, doubled each retry, plus jitter "
                          f"(default {DEFAULTS.backoff_base_s:g})")  # fmt: skip
    llm.add_argument("--backoff-max", type=float, default=DEFAULTS.backoff_max_s,
                     help=f"longest single wait, Retry-After included (default {DEFAULTS.backoff_max_s:g})")
    parser.set_defaults(func=run)


def _llm_stage(args: argparse.Namespace):
    """The LLM stage the flags ask for, or None; CliError for an incomplete or unusable setup."""
    from unixcxr.data.cleaning.llm import ChatClient
    from unixcxr.data.cleaning.rewrite import LLMStage

    if not args.llm_url:
        if args.llm_model or args.llm_key_env:
            raise CliError("--llm-model / --llm-key-env need --llm-url (the endpoint to call)")
        return None
    if not args.llm_model:
        raise CliError("--llm-url needs --llm-model (the model name the endpoint serves)")
    key_env = args.llm_key_env or DEFAULT_KEY_ENV
    if args.llm_key_env and not os.environ.get(key_env):
        raise CliError(f"environment variable {key_env} is empty or unset; export {key_env}=<your API key> "
                       "or leave out --llm-key-env for an endpoint without authentication")  # fmt: skip
    if min(args.llm_rounds, args.llm_retries + 1) < 1 or min(args.llm_timeout, args.backoff_base) <= 0:
        raise CliError("--llm-rounds, --llm-timeout and --backoff-base must be positive, --llm-retries >= 0")
    config = LLMConfig(url=args.llm_url, model=args.llm_model, key_env=key_env, timeout_s=args.llm_timeout,
                       max_retries=args.llm_retries, backoff_base_s=args.backoff_base,
                       backoff_max_s=args.backoff_max)  # fmt: skip
    print(f"LLM stage: {config.endpoint} model {config.model}, key from ${key_env}"
          f"{'' if os.environ.get(key_env) else ' (unset: no key sent)'}", file=sys.stderr)  # fmt: skip
    return LLMStage(ChatClient(config), rounds=args.llm_rounds)


def run(args: argparse.Namespace) -> int:
    from unixcxr.data.cleaning.batch import PipelineConfig
    from unixcxr.data.cleaning.batch import run as run_pipeline
    from unixcxr.data.reports import DataError

    if args.workers < 1 or (args.limit is not None and args.limit < 0):
        raise CliError("--workers must be positive and --limit not negative")
    if args.output.resolve() == args.input.resolve():
        raise CliError(f"{args.output}: OUT must differ from IN (OUT is appended to)")
    logging.basicConfig(level=logging.WARNING, format="unixcxr clean: %(levelname)s: %(message)s")
    llm = _llm_stage(args)
    config = PipelineConfig(id_column=args.id_column, text_column=args.text_column, workers=args.workers,
                            limit=args.limit, progress=not args.no_progress)  # fmt: skip
    try:
        summary = run_pipeline(args.input, args.output, config, llm=llm)
    except DataError as err:
        raise CliError(str(err)) from err
    except OSError as err:
        raise CliError(f"{err.filename or args.output}: {err.strerror or err}") from err
    for line in summary.lines():
        print(line)
    if llm is not None:
        print(f"LLM requests retried {llm.client.retries} times, {llm.client.failures} gave up")
    print(f"wrote {args.output}")
    return 0
