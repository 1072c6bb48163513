"""unixcxr.files: the one atomic writer every module uses. A reader sees the old file or the new one,
never half of one, and a failed write leaves no temporary behind."""

import os
import stat

import pytest

from unixcxr.files import FILE_MODE, atomic_output, write_bytes, write_text


def test_a_write_replaces_the_file_whole_with_the_usual_mode(tmp_path):
    path = tmp_path / "deep" / "out.json"
    write_text(path, "first")
    with atomic_output(path, fsync=True) as tmp:
        tmp.write_text("second")
        assert path.read_text() == "first" and tmp.parent == path.parent and tmp.name.endswith(".tmp")
    assert path.read_text() == "second"
    assert stat.S_IMODE(os.stat(path).st_mode) == FILE_MODE
    assert os.listdir(path.parent) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
