"""The sync client's disk primitives: safe renames, re-checks before touching a file, free names.

Everything here is about never losing a byte the user wrote:

- `rename_noreplace(src, dst)`: rename that fails with `FileExistsError` instead of replacing
  `dst` (Linux `renameat2(RENAME_NOREPLACE)`; elsewhere, or on filesystems without it, a
  check-then-rename, whose window is the best a portable program can do).
- `unchanged(abs_path, expect)`: is the entry on disk still what the planner saw? Kind, size,
  mtime_ns and inode must match; if the stat matches but the file was modified within `RACY_NS`
  of now ("racily clean": a second write in the same mtime tick leaves the stat as it was), or
  the stat differs but the size does not, the file is re-hashed and its content hash decides.
  Identical content is never a conflict.
- `safe_dir(root, rel_dir)`: every component of a folder below the root is a real folder, not a
  symlink (a folder swapped for a link after the scan must not make a download write outside
  the sync root).
- `free_conflict_name(...)`: the conflicted-copy name of an entry, not yet taken in its folder.
- `syncfs(path)`: one flush for a batch of small downloads (Linux), instead of an fsync each;
- `copy_range(src_fd, dst_fd, src_off, dst_off, n)`: bytes copied from one file to another
  inside the kernel (`copy_file_range`: no pass through Python, an extent share where the
  filesystem can), with a `pread`/`pwrite` loop where the system cannot;
- `local_node(rel, st, ...)`: the local tree's node for an entry just written or read, built
  exactly as the scanner would build it (so a re-plan finds nothing to do);
- `local_limits(root)`: the file system's name and path length limits for the sync root
  (`limits.LocalLimits`: what the engine holds back from the server's tree).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import time
from typing import Any

from raftbox.blocks.chunker import CDC, Chunking, chunk_file
from raftbox.meta.paths import component_key

from .limits import LocalLimits
from .planner import conflicted_copy_name
from .scanner import RACY_NS
from .trees import Kind, Node

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _libc(name: str, argtypes: list) -> Any:
    """The C library's function `name` (None where it does not exist: not Linux, old libc)."""
    try:
        fn = getattr(
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name
        )
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc(
    "renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
)


def rename_noreplace(src: str, dst: str) -> None:
    """Rename `src` to `dst`; `FileExistsError` if `dst` exists (see the module doc)."""
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), dst)
    if os.path.lexists(dst) and not _same_entry(src, dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def _same_entry(a: str, b: str) -> bool:
    """Are `a` and `b` one directory entry (a case-only rename on a case-insensitive disk)?"""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def kind_of(st: os.stat_result) -> Kind | None:
    if stat.S_ISDIR(st.st_mode):
        return Kind.FOLDER
    if stat.S_ISLNK(st.st_mode):
        return Kind.SYMLINK
    if stat.S_ISREG(st.st_mode):
        return Kind.FILE
    return None


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def file_hash(abs_path: str, chunking: Chunking = CDC) -> str | None:
    """The content hash of a file as it is now (None if it cannot be read)."""
    try:
        cf = chunk_file(abs_path, chunking)
        for _ in cf:
            pass
    except OSError:
        return None
    return cf.content_hash


def unchanged(abs_path: str, expect: Node, chunking: Chunking = CDC) -> bool:
    """Is the entry at `abs_path` still `expect` (see the module doc)?"""
    st = lstat_or_none(abs_path)
    if st is None or kind_of(st) is not expect.kind:
        return False
    if expect.kind is Kind.FOLDER:
        return True
    if expect.kind is Kind.SYMLINK:
        try:
            return os.readlink(abs_path) == expect.link_target
        except OSError:
            return False
    if st.st_size != expect.size:
        return False
    same_stat = st.st_mtime_ns == expect.mtime_ns and st.st_ino == expect.inode
    if same_stat and time.time_ns() - st.st_mtime_ns >= RACY_NS:
        return True
    return file_hash(abs_path, chunking) == expect.content_hash


def safe_dir(root: str, rel_dir: str) -> bool:
    """Is every component of `rel_dir` ("/a/b", "" for the root) a real folder?"""
    path = root
    for part in filter(None, rel_dir.split("/")):
        path = os.path.join(path, part)
        st = lstat_or_none(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return False
    return True


def free_conflict_name(root: str, rel: str, *, host: str, today: str, is_folder: bool) -> str:
    """The display path of a conflicted copy of `rel`, in the same folder, free on disk."""
    parent, name = rel.rsplit("/", 1)
    try:
        taken = {component_key(n) for n in os.listdir(root + parent)}
    except OSError:
        taken = set()
    new = conflicted_copy_name(
        name, host=host, today=today, is_folder=is_folder,
        taken=lambda nm: component_key(nm) in taken,
    )  # fmt: skip
    return f"{parent}/{new}"


def local_node(rel: str, st: os.stat_result, *, content_hash: str | None = None,
               link_target: str | None = None) -> Node:  # fmt: skip
    """The scanner's node for the entry `rel` with stat `st` (see `scanner.scan`)."""
    kind = kind_of(st)
    if kind is Kind.FOLDER:
        return Node(path=rel, kind=Kind.FOLDER, inode=st.st_ino)
    if kind is Kind.SYMLINK:
        assert link_target is not None
        return Node(path=rel, kind=Kind.SYMLINK, link_target=link_target,
                    size=len(os.fsencode(link_target)), mtime_ns=st.st_mtime_ns,
                    inode=st.st_ino)  # fmt: skip
    return Node(path=rel, kind=Kind.FILE, content_hash=content_hash, size=st.st_size,
                mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                executable=bool(st.st_mode & stat.S_IXUSR))  # fmt: skip


def local_limits(root: str) -> LocalLimits:
    """The limits of the file system holding `root` (`os.pathconf`; Linux's usual values where
    the system does not say, and never more than the server allows)."""

    def conf(name: str, default: int) -> int:
        try:
            v = os.pathconf(root, name)
        except (OSError, ValueError):
            return default
        return default if v is None or v <= 0 else v

    return LocalLimits(
        name_max_bytes=min(conf("PC_NAME_MAX", 255), 255),
        path_max_bytes=conf("PC_PATH_MAX", 4096),
        root_bytes=len(os.fsencode(root)),
    )


_syncfs = _libc("syncfs", [ctypes.c_int])
HAVE_SYNCFS = _syncfs is not None


def syncfs(path: str) -> None:
    """Flush everything written to the filesystem holding `path` (Linux `syncfs`): one flush
    for a batch of new files instead of an fsync each. Raises OSError if it fails."""
    assert _syncfs is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make renames in folder `path` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def set_executable(path: str, executable: bool) -> None:
    """Give or take the x bits (where r is set), like git does for a checked-out file."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if executable:
        mode |= (mode & 0o444) >> 2
    else:
        mode &= ~0o111
    os.chmod(path, mode)


_COPY_PIECE_BYTES = 8 * 1024 * 1024  # the pread/pwrite fallback's piece
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}
_copy_file_range_ok = hasattr(os, "copy_file_range")


def copy_range(src_fd: int, dst_fd: int, src_off: int, dst_off: int, n: int) -> None:
    """Copy `n` bytes at `src_off` of `src_fd` to `dst_off` of `dst_fd` (see the module doc).
    Raises `EOFError` if the source ends first (it changed: the caller gives up the copy)."""
    global _copy_file_range_ok
    while n > 0 and _copy_file_range_ok:
        try:
            k = os.copy_file_range(src_fd, dst_fd, n, src_off, dst_off)
        except OSError as e:
            if e.errno not in _NO_COPY_FILE_RANGE:
                raise
            _copy_file_range_ok = False  # this system or filesystem cannot: copy by hand
            break
        if k == 0:
            raise EOFError(f"source ended {n} bytes early")
        src_off += k
        dst_off += k
        n -= k
    while n > 0:
        data = os.pread(src_fd, min(n, _COPY_PIECE_BYTES), src_off)
        if not data:
            raise EOFError(f"source ended {n} bytes early")
        k = os.pwrite(dst_fd, data, dst_off)
        src_off += k
        dst_off += k
        n -= k
