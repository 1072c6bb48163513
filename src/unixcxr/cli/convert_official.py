"""Convert the authors' released UniX weights into a unixcxr model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from unixcxr.cli import CliError

EXAMPLES = """\
examples:
  unixcxr convert-official ~/weights/UniX models/unix
  unixcxr report --model models/unix cxr.png

SRC is the release folder as downloaded: config.json (Janus-style), model.safetensors,
tokenizer.json (+ tokenizer_config.json, special_tokens_map.json), vae/kl-f16d16.ckpt and
vae/config.yaml. Every tensor is mapped onto our modules and checked (a missing or mis-shaped
tensor is refused with its key named); the VAE's perceptual-loss entries (loss.*) are dropped
unread. DST gets our model folder (config.json, model.safetensors, vae/ in diffusers' layout, the
tokenizer with tokenizer_config.json and special_tokens_map.json, a README.md model card), in the
checkpoints' own dtypes, with a bar of tensors read. Conversion is optional: every command also
loads SRC directly."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("convert-official", help=__doc__.splitlines()[0], description=__doc__,
                                   epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="SRC", type=Path, help="the released UniX folder")
    parser.add_argument("dst", metavar="DST", type=Path, help="model folder to write (replaced atomically)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unixcxr.model.io import ModelFolderError
    from unixcxr.model.official import convert_official, is_official_folder

    if not is_official_folder(args.src):
        raise CliError(f"{args.src}: no Janus-style config.json (with \"language_config\"); pass the folder of the "
                       "released UniX weights")
    try:
        folder = convert_official(args.src, args.dst, progress=True)
    except ModelFolderError as err:
        raise CliError(str(err)) from err
    print(f"wrote {folder}")
    return 0
