"""Files written atomically: a reader (or a restart after a crash) sees the old content or the
new, never a part of the new.

Contract. `replace(path, data, mode=...)` writes `data` (bytes, or text as UTF-8) to a new temp
file in the same directory, fsyncs it, renames it over `path`, and fsyncs the directory, so that
once it returns the new content survives a crash. `create(path, data)` does the same for a file
that is written once and never changed (a content-addressed block): it gives the temp file its
name only if the name is free (a hard link, which fails when the name is taken, so "create if
absent" holds across threads and processes), and says whether it did. Either way, the temp file
is gone when the call returns or raises. `create(..., durable=False)` skips both fsyncs: the
name still appears only with the whole content (a reader never sees a part), but a crash of the
machine (not of the process) before the caller syncs the file system may leave the name with
lost content; the caller must make it durable (`syncfs`) before relying on it.

The temp file is `NAME.<random>.tmp`, made with O_EXCL (a new file, so `mode` is what it gets,
less the umask, and two writers never share one); a crash may leave one behind, which a reader
of NAME ignores and an owner may delete (`DiskLog` deletes `*.tmp` at open). `fsync_dir(path)`
is the last step on its own, for callers that create or rename files themselves; `syncfs(path)`
makes everything written to a file system durable at once (`HAVE_SYNCFS` says whether the
system has it).

Why one module: this sequence (restic's "temp, fsync, rename, fsync dir") was copied in seven
places with small differences (a missing directory fsync, a shared temp name, a mode applied
after the fact); here it is said once. It imports nothing from raftbox, so every layer may use it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets

__all__ = ["HAVE_SYNCFS", "create", "fsync_dir", "replace", "syncfs"]


def replace(path: str | os.PathLike[str], data: bytes | bytearray | str, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically and durably (see the module docstring)."""
    path = os.fspath(path)
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def create(
    path: str | os.PathLike[str],
    data: bytes | bytearray | str,
    mode: int = 0o644,
    *,
    durable: bool = True,
) -> bool:
    """Write `data` as `path` unless `path` exists: True if this call made it.

    A file system without hard links falls back to a rename (still atomic); a racing writer
    may then replace the file with its own bytes, which is harmless for write-once content.
    """
    path = os.fspath(path)
    tmp = _write_temp(path, data, mode, durable)
    try:
        written = _publish(tmp, path)
    finally:
        _unlink(tmp)
    if written and durable:
        fsync_dir(os.path.dirname(path) or ".")
    return written


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename, a new file or an unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs():
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


_syncfs = _load_syncfs()
HAVE_SYNCFS = _syncfs is not None


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush everything written to the file system holding `path`, by any process (Linux
    `syncfs`): new files, their content and their directory entries. OSError if it fails."""
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available here")
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)


def _write_temp(path: str, data: bytes | bytearray | str, mode: int, durable: bool = True) -> str:
    """A new temp file beside `path` holding `data`, fsynced if `durable`; its name."""
    if isinstance(data, str):
        data = data.encode()
    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _publish(tmp: str, path: str) -> bool:
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    if os.path.exists(path):
        return False
    os.replace(tmp, path)
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
