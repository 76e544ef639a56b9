"""`raftbox.atomic`: the old content or the new, never part of it, and no temp file left."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from raftbox import atomic


def mode_of(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_replace_writes_bytes_or_text_with_the_mode_given(tmp_path: Path) -> None:
    p = tmp_path / "token"
    atomic.replace(p, "secret\n", 0o600)
    assert p.read_text() == "secret\n"
    assert mode_of(p) == 0o600
    atomic.replace(str(p), b"other")
    assert p.read_bytes() == b"other"
    assert mode_of(p) == 0o644 & ~_umask()
    assert sorted(os.listdir(tmp_path)) == ["token"]


def test_the_file_is_synced_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(a, b) -> None:
        steps.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.replace(tmp_path / "f", b"x")
    assert steps == ["fsync file", "rename", "fsync dir"]


def test_a_failed_write_leaves_the_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "state"
    atomic.replace(p, b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic.replace(p, b"new")
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_create_writes_once_and_never_changes_an_existing_file(tmp_path: Path) -> None:
    p = tmp_path / "block"
    assert atomic.create(p, b"first") is True
    assert atomic.create(p, b"second") is False
    assert p.read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path)) == ["block"]


def test_create_falls_back_to_a_rename_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(a, b) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    p = tmp_path / "block"
    assert atomic.create(p, b"data") is True
    assert atomic.create(p, b"data") is False
    assert p.read_bytes() == b"data"
    assert sorted(os.listdir(tmp_path)) == ["block"]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
