"""Train a byte-level BPE report tokenizer on a data folder, or inspect one."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.data.reports import DataError, StudyRecord, format_report
from unixcxr.model.tokenizer import (
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB_SIZE,
    SPECIAL_TOKEN_NAMES,
    TOKENIZER_FILE,
    ReportTokenizer,
    TokenizerError,
    check_vocab_size,
)

UNDERSTANDING_JSON = "understanding_{split}.json"

EXAMPLES = f"""\
examples:
  unixcxr tokenizer train data/synthcxr -o runs/tiny/tokenizer.json
  unixcxr tokenizer train /data/mimic-cxr-jpg -o tokenizer.json --vocab-size 16384
  unixcxr tokenizer encode runs/tiny/tokenizer.json "FINDINGS: The lungs are clear."

train reads the training split's reports (as "FINDINGS: ... IMPRESSION: ...", the text the
model learns) from DATA_DIR in the MIMIC-CXR-JPG layout, plus the instructions of
DATA_DIR/understanding_train.json when present. Special tokens get ids 0..4:
{", ".join(f"{role} {name}" for role, name in SPECIAL_TOKEN_NAMES.items())}.
Default vocabulary: {DEFAULT_VOCAB_SIZE} (CPU presets); the released model uses DeepSeek's."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tokenizer", help=__doc__.splitlines()[0], description=__doc__, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="learn a BPE vocabulary from DATA_DIR's training reports",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="data folder (MIMIC-CXR-JPG layout)")
    train.add_argument("-o", "--output", type=Path, default=Path(TOKENIZER_FILE),
                       help=f"file to write (default ./{TOKENIZER_FILE}; a folder gets one inside)")
    train.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                       help=f"vocabulary size including the 5 special tokens (default {DEFAULT_VOCAB_SIZE})")
    train.add_argument("--min-frequency", type=int, default=DEFAULT_MIN_FREQUENCY,
                       help=f"least count for a merge (default {DEFAULT_MIN_FREQUENCY})")
    train.set_defaults(func=run_train)
    encode = actions.add_parser("encode", help="print the token ids of a text and check it decodes back")
    encode.add_argument("tokenizer", type=Path, help="tokenizer.json (or its folder)")
    encode.add_argument("text", help="text to encode")
    encode.set_defaults(func=run_encode)


def training_texts(records: list[StudyRecord], data_dir: Path) -> Iterator[str]:
    """Report targets of the records, then the instructions of the LLaVA training file."""
    for r in records:
        text = format_report(r.findings, r.impression) or r.report
        if text.strip():
            yield text
    instructions = data_dir / UNDERSTANDING_JSON.format(split="train")
    if instructions.is_file():
        from unixcxr.data.llava import load_understanding_json

        records = load_understanding_json(instructions, split="train")
        yield from dict.fromkeys(r.instruction for r in records if r.instruction)  # unique, in order


def run_train(args: argparse.Namespace) -> int:
    from unixcxr.data.datasets import load_records  # torch import only when the command runs

    try:
        check_vocab_size(args.vocab_size)  # before the reports are read
        records = load_records(args.data_dir, splits=("train",))
        tokenizer = ReportTokenizer.train(training_texts(records, args.data_dir), vocab_size=args.vocab_size,
                                          min_frequency=args.min_frequency, show_progress=True)
        path = tokenizer.save(args.output)
    except (DataError, TokenizerError) as err:
        raise CliError(str(err)) from err
    texts = [format_report(r.findings, r.impression) or r.report for r in records[:1000]]
    tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    print(f"trained on {len(records)} reports: vocabulary {tokenizer.vocab_size}, "
          f"{tokens / max(1, len(texts)):.1f} tokens per report; wrote {path}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    try:
        tokenizer = ReportTokenizer.load(args.tokenizer)
    except TokenizerError as err:
        raise CliError(f"{err} (for the released DeepSeek tokenizer use the Python API with "
                       "special=RELEASED_SPECIAL_TOKENS)") from err
    ids = tokenizer.encode(args.text)
    print(" ".join(map(str, ids)))
    exact = tokenizer.decode(ids) == args.text
    print(f"{len(ids)} tokens; decodes back {'exactly' if exact else 'DIFFERENTLY'}")
    return 0
