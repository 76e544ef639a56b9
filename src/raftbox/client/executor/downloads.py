"""Downloads: blocks fetched or reused from local files, temporary files, install, record.

Contract
--------
`Downloads._download_small(ops)` downloads a group of small files with one batched
`blocks/list` and one `blocks/get` of the blocks no local file holds (rule 4: a block some
local file held at the scan is read from it and verified by its hash instead); each file is
written to a temporary file in `DIR/.raftbox/tmp/` with its mtime and mode, made durable (one
`syncfs` for the group where the system has it), then renamed into place. `_download_big(op)`
does the same for one big file in `STREAM_BYTES` pieces. A file whose bytes do not hash to the
content hash the server gave is not installed.

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
import time
import uuid
from typing import Any

from raftbox.blocks.hashing import ContentHasher

from .. import localfs
from ..index import CacheEntry
from ..planner import Download
from ..remote import RemoteError
from ..scanner import remembered
from ..trees import Kind, Node, agreed
from .base import SMALL_BYTES, STREAM_BYTES, TMP_DIR, PassBase


class Downloads(PassBase):
    """Fetching, writing and installing downloads (see the module docstring)."""

    def _local_block(self, bid: str) -> bytes | None:
        """Block `bid` read from a local file that held it at scan time (verified), or None."""
        if self._local_blocks is None:
            idx: dict[str, tuple[str, int, int]] = {}
            for rel, blocks in self.blocklists.items():
                off = 0
                for b, size in blocks:
                    idx.setdefault(b, (rel, off, size))
                    off += size
            self._local_blocks = idx
        hit = self._local_blocks.get(bid)
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
        (bl,) = await self._blocklists([op])
        if bl is None:
            self.c.skipped += 1
            return 0
        os.makedirs(self.tmp, exist_ok=True)
        tmp = os.path.join(self.tmp, uuid.uuid4().hex)
        hasher = ContentHasher()
        try:
            with open(tmp, "wb") as f:

                def copy_local(start: int) -> tuple[int, int]:
                    """Copy the blocks from `start` on that local files hold (verified), up
                    to `STREAM_BYTES`, in one worker-thread call: (next index, bytes)."""
                    j, n = start, 0
                    while j < len(bl) and n < STREAM_BYTES:
                        data = self._local_block(bl[j][0])
                        if data is None:
                            break
                        _write_piece(f, hasher, data)
                        n += len(data)
                        j += 1
                    return j, n

                i = 0
                while i < len(bl):
                    j, n = await asyncio.to_thread(copy_local, i)
                    if j > i:
                        self.c.reused_bytes += n
                        self.progress.advance("download", 0, n)
                        i = j
                        continue
                    run: list[str] = []
                    while i < len(bl) and len(run) < 256:
                        run.append(bl[i][0])
                        i += 1
                    async for _bid, data in self.remote.get(run):
                        await asyncio.to_thread(_write_piece, f, hasher, data)
                        self.progress.advance("download", 0, len(data))
                await asyncio.to_thread(os.fsync, f.fileno())
            if hasher.hexdigest() != op.node.content_hash:
                raise RemoteError("blocks/get", 200, f"{op.path}: content hash mismatch")
            node = await asyncio.to_thread(self._finish_temp, op, tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return await self._install_all([op], [(tmp, node)], [bl])

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
