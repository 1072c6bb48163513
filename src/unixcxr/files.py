"""Writing files whole or not at all: a reader (another process, a resumed run, a crash's survivor)
sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o644  # what a plain open() would give under the usual umask (mkstemp gives 0o600)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on failure
    it is removed. The temporary is named .NAME.XXXX.tmp: writers that pick a format from the
    extension must be told the format. fsync: flush the bytes to the disk before the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes owner-only files
        if fsync:
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """A UTF-8 text file, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """A binary file, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
