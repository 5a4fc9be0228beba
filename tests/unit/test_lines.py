"""Whole lines only: a partial line left by a crash is cut off at open; errors name the file and errno."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from wal2http.delivery.lines import LineFile
from wal2http.errors import FileUnwritable, TransientDeliveryError


def test_a_partial_last_line_is_removed_at_open(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id":"a"}\n{"id":"b"}\n{"id":"c","ne')
    lines = LineFile(str(path), "--file-path")
    lines.append(b'{"id":"c"}\n', "events")
    lines.close()
    assert path.read_bytes() == b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}\n'


def test_a_file_without_any_whole_line_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x" * 200_000)
    LineFile(str(path), "--file-path").close()
    assert path.read_bytes() == b""


def test_errors_say_which_heal(tmp_path: Path) -> None:
    lines = LineFile(str(tmp_path / "f"), "--file-path")
    full = lines._error(OSError(errno.ENOSPC, "No space left on device"), "events")
    assert isinstance(full, TransientDeliveryError)
    assert str(full) == f"cannot write events to {tmp_path / 'f'}: No space left on device (ENOSPC)"
    assert isinstance(lines._error(OSError(errno.EROFS, "Read-only file system"), "events"), FileUnwritable)
    lines.close()


def test_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(FileUnwritable, match=r"cannot open --file-path .*: No such file or directory \(ENOENT\)"):
        LineFile(str(tmp_path / "gone" / "f"), "--file-path")
