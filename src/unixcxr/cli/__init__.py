"""The `unixcxr` command. Every module in this package that defines `register(subparsers)`
adds one subcommand; the module's docstring first line is its one-line help.

Every error a user can cause is ONE line on stderr, "unixcxr COMMAND: error: WHAT; FIX", with exit
status 2 (1 when some inputs were processed and others skipped): argparse's own errors too (no
usage block), and numbers refused by the shared validation layer (unixcxr.validation) under the
option's own name.

Subcommand modules import torch, the model and the training code inside their `run()`, not at the
top: building the parser imports every subcommand module, and `unixcxr --help` or a mistyped option
should answer in a fraction of a second. Everywhere else in the package imports sit at the top.
`tests/test_layering.py` checks that the parser loads without torch."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from unixcxr.validation import InvalidValue, check, check_interval


class CliError(Exception):
    """A user-facing error: printed as one clear line, without a stack trace."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (the usage block would bury the message)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def option_name(name: str) -> str:
    """The CLI's name for a validation-layer value: cfg_text -> --cfg-text."""
    return "--" + name.replace("_", "-")


def check_options(args: argparse.Namespace, *names: str) -> None:
    """The shared validation layer on the named options (those given), before any work is done."""
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            setattr(args, name, check_interval(name, value) if name == "cfg_interval" else check(name, value))
        except InvalidValue as err:
            raise CliError(err.named(option_name(name))) from None


def build_parser() -> argparse.ArgumentParser:
    from unixcxr import __version__

    parser = OneLineParser(
        prog="unixcxr",
        description="UniX for chest X-rays: report generation (image -> text) and image generation "
        "(text -> image) in one Mixture-of-Transformers model.",
    )
    parser.add_argument("--version", action="version", version=f"unixcxr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        print(f"unixcxr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except InvalidValue as err:  # found later than the options' check (e.g. against the model's capacity)
        shown = option_name(err.name) if hasattr(args, err.name) else err.name
        print(f"unixcxr {args.command}: error: {err.named(shown)}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk, not the input: full, read-only, gone
        where = f"{err.filename}: " if err.filename else ""
        print(f"unixcxr {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"unixcxr {args.command}: interrupted", file=sys.stderr)
        return 130
