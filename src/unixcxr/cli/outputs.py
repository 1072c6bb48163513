"""Output paths, checked before any work: a command refuses, in one line, an output it could not
write (a folder where a file is named, a file where a folder is needed, a folder it may not write
into, a suffix it does not write) before it loads a model or reads a single input, and it creates
nothing (not even a missing folder) until it has something to write."""

from __future__ import annotations

import os
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.files import atomic_output

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # what `generate -o` writes, by suffix
JPEG_QUALITY = 95


def _existing_ancestor(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def _check_writable_folder(path: Path, option: str, folder: Path) -> None:
    """folder (or the folder it will be made in) can take new files."""
    ancestor = _existing_ancestor(folder / "x")
    if not ancestor.is_dir():
        raise CliError(f"{option} {path}: {ancestor} is a file, not a folder; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"{option} {path}: cannot write into {ancestor} (permission denied); choose another path")


def check_output_file(path: Path, option: str = "-o", suffixes: tuple[str, ...] = (), example: str = "out") -> Path:
    """A file path the command can write (created, or replaced atomically): not a folder, under a
    folder that exists or can be made, with one of `suffixes` when given."""
    if path.is_dir():
        raise CliError(f"{option} {path}: is a folder; name a file, e.g. {path / example}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise CliError(f"{option} {path}: unknown suffix {path.suffix or '(none)'!r}; name a "
                       f"{' or '.join(suffixes)} file")
    _check_writable_folder(path, option, path.absolute().parent)
    return path


def check_output_folder(path: Path, option: str) -> Path:
    """A folder the command can write files into (made when the first file is written)."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{option} {path}: is a file; name a folder")
    _check_writable_folder(path, option, path)
    return path


def write_image(path: Path, image) -> None:
    """A Pillow image written atomically in the format its suffix names (x.jpg holds JPEG bytes)."""

    fmt = IMAGE_FORMATS[path.suffix.lower()]
    with atomic_output(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {}))
