"""Downloads: blocks fetched or reused from local files, temporary files, install, record.

Contract
--------
`Downloads._download_small(ops)` downloads a group of small files with one batched
`blocks/list` and one `blocks/get` of the blocks no local file holds (rule 4: a block some
local file held at the scan is read from it and verified by its hash instead); each file is
written to a temporary file in `DIR/.raftbox/tmp/` with its mtime and mode, made durable (one
`syncfs` for the group where the system has it), then renamed into place. A small file whose
bytes do not hash to the content hash the server gave is not installed.

Big files (`_download_big(op)`): the new version is built in a temp file from three sources at
once, each written at its offset: ranges of the file it replaces that the new blocklist keeps
(`plan_rebuild`) are copied inside the kernel (`localfs.copy_range`, `copy_file_range`) without
being read or hashed again — only when that file is the planned overwrite (`op.expect`), its
stat is still the scan's and it was not racily clean at the scan (the scan's blocklist then is
its content; the stat is checked again on the opened file before and after the copy, and a
change skips the download for the next pass); blocks other local files held at the scan are
read and verified by their hash (one that no longer matches is fetched instead); the rest is
fetched (`blocks/get` verifies each block by its id), `STREAM_BYTES` per write, the write of
one group overlapping the receiving of the next. Then one fsync and a size check; the content
hash is not computed again: every byte is a verified block of the server's blocklist.

Installing (`_install_all`) is written ahead in the index (`pending`: temp name and node) and
re-checks the path first: a file changed since the scan is renamed aside as a conflicted copy
(rule 3: never lose data), the planned overwrite of an unchanged file replaces it, identical
content is only recorded. Renames are made durable (`fsync` of the folders, or `syncfs`)
before they are recorded. `clean_tmp` deletes what a killed pass left in the temp folder.
Each returns how many files were installed and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import uuid
from typing import Any

from raftbox.blocks.hashing import ContentHasher

from .. import localfs
from ..index import CacheEntry
from ..planner import Download
from ..remote import RemoteError
from ..scanner import racy, remembered
from ..trees import Kind, Node, agreed
from .base import SMALL_BYTES, STREAM_BYTES, TMP_DIR, PassBase


class Downloads(PassBase):
    """Fetching, writing and installing downloads (see the module docstring)."""

    def _local_index(self) -> dict[str, tuple[str, int, int]]:
        """Where a local file held each block at scan time: id -> (path, offset, size)."""
        if self._local_blocks is None:
            idx: dict[str, tuple[str, int, int]] = {}
            for rel, blocks in self.blocklists.items():
                off = 0
                for b, size in blocks:
                    idx.setdefault(b, (rel, off, size))
                    off += size
            self._local_blocks = idx
        return self._local_blocks

    def _local_block(self, bid: str) -> bytes | None:
        """Block `bid` read from a local file that held it at scan time (verified), or None."""
        hit = self._local_index().get(bid)
        if hit is None:
            return None
        rel, off, size = hit
        try:
            with open(self.abs(rel), "rb") as f:
                f.seek(off)
                data = f.read(size)
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == bid else None

    async def _blocklists(self, ops: list[Download]) -> list[list[tuple[str, int]] | None]:
        files = [op for op in ops if op.node.kind is Kind.FILE]
        lists = await self.remote.native(
            self.remote.blocklists, [f"rev:{op.node.rev}" for op in files]
        )
        by_op: dict[int, list[tuple[str, int]] | None] = {}
        for op, got in zip(files, lists, strict=True):
            by_op[id(op)] = None if got is None else list(got[1])
        return [by_op.get(id(op), []) for op in ops]

    async def _download_small(self, ops: list[Download]) -> int:
        lists = await self._blocklists(ops)
        wanted = {b for bl in lists if bl for b, _ in bl}
        have: dict[str, bytes] = {}

        def local_all() -> None:
            for b in wanted:
                d = self._local_block(b)
                if d is not None:
                    have[b] = d

        await asyncio.to_thread(local_all)
        self.c.reused_bytes += sum(len(d) for d in have.values())
        fetch = [b for b in wanted if b not in have]
        if fetch:
            async for bid, data in self.remote.get(fetch):
                have[bid] = data

        def write_temps() -> list[tuple[str, Node] | None]:
            # Temp files first, made durable together (one syncfs instead of an fsync per
            # file: the disk's flushes are the cost of many small files), then the renames.
            tmps = [
                None if bl is None else self._write_temp(op, [(b, have[b]) for b, _ in bl],
                                                         fsync=not localfs.HAVE_SYNCFS)
                for op, bl in zip(ops, lists, strict=True)
            ]  # fmt: skip
            if localfs.HAVE_SYNCFS:
                localfs.syncfs(self.tmp)
            return tmps

        return await self._install_all(ops, await asyncio.to_thread(write_temps), lists)

    async def _install_all(
        self,
        ops: list[Download],
        tmps: list[tuple[str, Node] | None],
        lists: list[list[tuple[str, int]] | None],
    ) -> int:
        """Rename finished temp files into place and record them.

        Write-ahead: before any rename, `pending` holds each file's temp name and the synced
        node to record; a process killed after a rename and before its record leaves the row
        behind, and the next start sees the temp file gone and records the node (so a file the
        user deletes right after is a delete to propagate, not a download to redo)."""
        staged = [(op, t) for op, t in zip(ops, tmps, strict=True) if t is not None]
        self.index.pending_put(
            "download", [(os.path.basename(t), agreed(n, op.node)) for op, (t, n) in staged]
        )

        def install_all() -> list[Node | None]:
            out = [None if t is None else self._install(op, t[0])
                   for op, t in zip(ops, tmps, strict=True)]  # fmt: skip
            self._sync_dirs()
            return out

        # On any failure the rows stay: the next pass settles them (`reconcile`).
        results = await asyncio.to_thread(install_all)
        done = self._record_downloads(ops, results, lists, drop=[op.node.key for op, _ in staged])
        for _, (t, _n) in staged:  # the ones not renamed (skipped, or already there)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(t)
        return done

    def _sync_dirs(self) -> None:
        """Make the renames of finished downloads durable before they are recorded."""
        if len(self._dirty_dirs) > 1 and localfs.HAVE_SYNCFS:
            localfs.syncfs(self.root)
            self._dirty_dirs.clear()
        while self._dirty_dirs:
            localfs.fsync_dir(self._dirty_dirs.pop())

    async def _download_big(self, op: Download) -> int:
        """Download a big file into a temp file (see the module docstring: "Big files")."""
        (bl,) = await self._blocklists([op])
        if bl is None:
            self.c.skipped += 1
            return 0
        copies, rest = plan_rebuild(bl, self._old_blocks(op))
        local_idx = self._local_index()
        local = [r for r in rest if r[0] in local_idx]
        fetch = [r for r in rest if r[0] not in local_idx]
        os.makedirs(self.tmp, exist_ok=True)
        tmp = os.path.join(self.tmp, uuid.uuid4().hex)
        stop = threading.Event()
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            disk = asyncio.ensure_future(
                asyncio.to_thread(self._fill_from_disk, op, tmp, copies, local, stop)
            )
            fetching = asyncio.ensure_future(self._fetch_into(tmp, fetch))
            try:
                await asyncio.wait({disk, fetching}, return_when=asyncio.FIRST_EXCEPTION)
                for t in (disk, fetching):
                    if t.done() and (err := t.exception()) is not None:
                        raise err
                reused, failed = disk.result()
            finally:
                # Both are owned here: neither outlives this call (the disk thread stops at
                # its next piece; a fetch's write in flight is waited for).
                stop.set()
                fetching.cancel()
                await asyncio.wait({disk, fetching})
                for t in (disk, fetching):
                    if not t.cancelled():
                        t.exception()  # retrieved: the first one was raised above
            self.c.reused_bytes += reused
            self.progress.advance("download", 0, reused)
            if failed:  # local blocks that no longer matched their ids: fetched after all
                await self._fetch_into(tmp, failed)
            size = await asyncio.to_thread(_fsync_size, tmp)
            if size != op.node.size:
                raise RemoteError("blocks/get", 200, f"{op.path}: size mismatch")
            node = await asyncio.to_thread(self._finish_temp, op, tmp)
        except _Changed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            self.c.skipped += 1  # the file it replaces changed meanwhile: the next pass
            return 0
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return await self._install_all([op], [(tmp, node)], [bl])

    def _old_blocks(self, op: Download) -> list[tuple[str, int]]:
        """The scan's blocklist of the file `op` replaces, if its bytes may be copied without
        being read again: `op` is the planned overwrite of a file (`op.expect`) that is still
        as the scan saw it and was not racily clean at the scan (so no write since can have
        left its stat as it was). [] otherwise (then every block is read and verified, or
        fetched). `_fill_from_disk` checks the stat again on the file it opens."""
        e = op.expect
        bl = self.blocklists.get(op.path)
        if (
            e is None
            or e.kind is not Kind.FILE
            or not bl
            or e.mtime_ns is None
            or self.scan_started_ns is None
            or racy(e.mtime_ns, self.scan_started_ns)
            or sum(n for _, n in bl) != e.size
            or not self._safe_parent(op.path)
        ):
            return []
        st = localfs.lstat_or_none(self.abs(op.path))
        if st is None or (st.st_ino, st.st_size, st.st_mtime_ns) != (e.inode, e.size, e.mtime_ns):
            return []
        return list(bl)

    def _fill_from_disk(
        self,
        op: Download,
        tmp: str,
        copies: list[tuple[int, int, int]],
        local: list[tuple[str, int, int]],
        stop: threading.Event,
    ) -> tuple[int, list[tuple[str, int, int]]]:
        """Worker thread: copy the `copies` ranges (src, dst, size) of the file `op` replaces
        into `tmp` in the kernel, then write each `local` block (id, dst, size) read from a
        local file and verified. Returns (bytes written, the `local` blocks not found intact).
        Raises `_Changed` if the file `op` replaces is not (or no longer) as the scan saw it."""
        done = 0
        failed: list[tuple[str, int, int]] = []
        dst = os.open(tmp, os.O_WRONLY)
        try:
            if copies:
                e = op.expect
                assert e is not None
                try:
                    src = os.open(self.abs(op.path), os.O_RDONLY | os.O_NOFOLLOW)
                except OSError as err:
                    raise _Changed(op.path) from err
                try:
                    want = (e.inode, e.size, e.mtime_ns)
                    if _ident(os.fstat(src)) != want:
                        raise _Changed(op.path)
                    for s_off, d_off, n in copies:
                        for k in range(0, n, _COPY_PIECE_BYTES):
                            if stop.is_set():
                                return done, failed
                            m = min(_COPY_PIECE_BYTES, n - k)
                            try:
                                localfs.copy_range(src, dst, s_off + k, d_off + k, m)
                            except EOFError as err:
                                raise _Changed(op.path) from err
                            done += m
                    if _ident(os.fstat(src)) != want:
                        raise _Changed(op.path)  # written to while copied
                finally:
                    os.close(src)
            for item in local:
                if stop.is_set():
                    break
                bid, d_off, _n = item
                data = self._local_block(bid)
                if data is None:
                    failed.append(item)
                    continue
                _pwrite_all(dst, data, d_off)
                done += len(data)
        finally:
            os.close(dst)
        return done, failed

    async def _fetch_into(self, tmp: str, items: list[tuple[str, int, int]]) -> None:
        """Fetch the blocks of `items` (id, dst, size; each id once, verified by `blocks/get`)
        and write them at their offsets in `tmp`, `STREAM_BYTES` at a time: the write of one
        group (a worker thread) overlaps the receiving of the next, never more than one."""
        if not items:
            return
        at: dict[str, list[int]] = {}
        for bid, d_off, _n in items:
            at.setdefault(bid, []).append(d_off)

        def write(group: list[tuple[bytes, list[int]]]) -> None:
            fd = os.open(tmp, os.O_WRONLY)
            try:
                for data, offs in group:
                    for o in offs:
                        _pwrite_all(fd, data, o)
            finally:
                os.close(fd)

        group: list[tuple[bytes, list[int]]] = []
        n = 0
        writing: asyncio.Future | None = None
        try:
            async for bid, data in self.remote.get(list(at)):
                group.append((data, at[bid]))
                n += len(data) * len(at[bid])
                if n >= STREAM_BYTES:
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(asyncio.to_thread(write, group))
                    self.progress.advance("download", 0, n)
                    group, n = [], 0
            if writing is not None:
                await writing
                writing = None
            if group:
                await asyncio.to_thread(write, group)
                self.progress.advance("download", 0, n)
        finally:
            if writing is not None:  # leaving with an error: the write in flight ends first
                await asyncio.wait({writing})
                if not writing.cancelled():
                    writing.exception()

    def _write_temp(
        self, op: Download, blocks: list[tuple[str, bytes]], fsync: bool
    ) -> tuple[str, Node] | None:
        """Write a small download to a new temp file with its mtime and mode (worker thread):
        (its path, the local node it will be at `op.path`), or None if the bytes do not hash
        to the file's content hash."""
        os.makedirs(self.tmp, exist_ok=True)
        tmp = os.path.join(self.tmp, uuid.uuid4().hex)
        if op.node.kind is Kind.SYMLINK:
            assert op.node.link_target is not None
            os.symlink(op.node.link_target, tmp)
            return tmp, self._finish_temp(op, tmp)
        hasher = ContentHasher()
        with open(tmp, "wb") as f:
            for _b, data in blocks:
                _write_piece(f, hasher, data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if hasher.hexdigest() != op.node.content_hash:
            os.unlink(tmp)
            self.c.errors.append(f"download {op.path}: content hash mismatch")
            return None
        return tmp, self._finish_temp(op, tmp)

    def _finish_temp(self, op: Download, tmp: str) -> Node:
        """Give a temp file the remote's mtime and executable bit; the local node it will be
        once renamed to `op.path` (a rename keeps inode, size and mtime)."""
        node = op.node
        if node.kind is Kind.SYMLINK:
            return localfs.local_node(op.path, os.lstat(tmp), link_target=node.link_target)
        if node.mtime_ns is not None:
            os.utime(tmp, ns=(node.mtime_ns, node.mtime_ns))
        localfs.set_executable(tmp, bool(node.executable))
        return localfs.local_node(op.path, os.lstat(tmp), content_hash=node.content_hash)

    def _install(self, op: Download, tmp: str) -> Node | None:
        """Put a finished temp file in place (worker thread): re-check, then rename.

        Returns the local node now at `op.path`, or None if the download was skipped (the
        temp file is then left for the caller to delete)."""
        node = op.node
        parent = op.path.rsplit("/", 1)[0]
        if not self._safe_parent(op.path):
            return None
        dest = self.abs(op.path)
        cur = localfs.lstat_or_none(dest)
        try:
            if cur is None:
                localfs.rename_noreplace(tmp, dest)
            elif op.expect is not None and localfs.unchanged(dest, op.expect, self.chunking):
                os.replace(tmp, dest)  # the planned overwrite of an unchanged file
            elif self._same_as(dest, cur, node):
                pass  # already there (a killed pass, or the same edit on both sides)
            else:  # changed since the scan: keep it as a conflicted copy, then install
                self._conflict_aside(op.path, localfs.kind_of(cur) is Kind.FOLDER)
                localfs.rename_noreplace(tmp, dest)
        except FileExistsError:
            return None  # created again just now: the next pass sorts it out
        self._dirty_dirs.add(self.root + parent)
        st = os.lstat(dest)
        if node.kind is Kind.SYMLINK:
            return localfs.local_node(op.path, st, link_target=os.readlink(dest))
        return localfs.local_node(op.path, st, content_hash=node.content_hash)

    def _same_as(self, dest: str, st: os.stat_result, node: Node) -> bool:
        kind = localfs.kind_of(st)
        if kind is not node.kind:
            return False
        if kind is Kind.SYMLINK:
            with contextlib.suppress(OSError):
                return os.readlink(dest) == node.link_target
            return False
        return st.st_size == node.size and localfs.file_hash(dest, self.chunking) == (
            node.content_hash
        )

    def _record_downloads(
        self,
        ops: list[Download],
        results: list[Node | None],
        lists: list[list[tuple[str, int]] | None],
        drop: list[str],
    ) -> int:
        puts: list[Node] = []
        keys: list[str] = []
        cache: list[CacheEntry] = []
        for op, loc, bl in zip(ops, results, lists, strict=True):
            if loc is None:
                self.c.skipped += 1
                continue
            puts.append(agreed(loc, op.node))
            keys.append(loc.key)
            self.c.downloaded_files += 1
            self.c.downloaded_bytes += op.node.size
            if loc.kind is Kind.FILE and loc.inode is not None and loc.mtime_ns is not None:
                if bl is not None:
                    cache.append(remembered(loc.inode, loc.size, loc.mtime_ns,
                                            loc.content_hash or "", bl, time.time_ns()))  # fmt: skip
        with self.index.batch():
            self.index.apply(put=puts, delete=keys)
            self.index.cache_put_many(cache)
            self.index.pending_drop(drop)
        small = [op for op in ops if op.node.size <= SMALL_BYTES]
        self.progress.advance("download", len(ops), sum(op.node.size for op in small))
        return len(puts)


_COPY_PIECE_BYTES = 64 * 1024 * 1024  # a copy stops between pieces when the download ends


class _Changed(Exception):
    """The file a download replaces changed after the scan: its bytes cannot be reused."""


def plan_rebuild(
    new: list[tuple[str, int]], old: list[tuple[str, int]]
) -> tuple[list[tuple[int, int, int]], list[tuple[str, int, int]]]:
    """How to build a file with blocklist `new` from a file with blocklist `old`: the ranges
    to copy, `(old offset, new offset, size)`, adjacent ones merged (one `copy_file_range`
    each), and the blocks `old` does not have, `(id, new offset, size)`, in order."""
    at: dict[str, tuple[int, int]] = {}
    off = 0
    for b, size in old:
        at.setdefault(b, (off, size))
        off += size
    copies: list[tuple[int, int, int]] = []
    rest: list[tuple[str, int, int]] = []
    dst = 0
    for b, size in new:
        hit = at.get(b)
        if hit is None or hit[1] != size:
            rest.append((b, dst, size))
        elif (
            copies
            and copies[-1][0] + copies[-1][2] == hit[0]
            and (copies[-1][1] + copies[-1][2] == dst)
        ):
            s_off, d_off, n = copies[-1]
            copies[-1] = (s_off, d_off, n + size)
        else:
            copies.append((hit[0], dst, size))
        dst += size
    return copies, rest


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _pwrite_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while view:
        k = os.pwrite(fd, view, off)
        view = view[k:]
        off += k


def _fsync_size(path: str) -> int:
    """fsync the file at `path` (a finished temp file: one flush for all its bytes); its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _write_piece(f: Any, hasher: ContentHasher, data: bytes) -> None:
    f.write(data)
    hasher.update(data)


def clean_tmp(root: str) -> int:
    """Delete the temporary files a killed pass left behind; how many."""
    d = os.path.join(os.path.abspath(root), ".raftbox", TMP_DIR)
    n = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(d):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(d, name))
                n += 1
    return n
