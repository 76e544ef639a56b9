"""Uploads: reading a file at upload time, sending the blocks the server lacks, committing.

Contract
--------
`Uploads._upload_small(ops)` uploads a group of small files (`SMALL_BYTES` at most): each is
cut and hashed from disk now (a file that changed while it was read is skipped: the next pass
takes it up), then one `blocks/has`, one `blocks/put` of the missing blocks and one
`commit_batch` (one Raft entry) for the group. `Uploads._upload_big(op)` uploads one big file
with memory bounded by `STREAM_BYTES` pieces: with the scan's blocklist while the file's stat
still matches the scan (only blocks the server lacks are read, not hashed again — the stat,
checked before and after each piece, proves them the scan's bytes, and the server verifies
each block by its id; a file racily clean at the scan has each block checked against its id;
up to `sends_in_flight` pieces are sent while the next is read), else cut again while sending (`_upload_big_recut`: the send of one piece overlaps the cut of the
next, and a send in flight is always ended before the upload returns or raises — it owns it).
A big file that replaces a known version (`parent_rev`) sends its missing blocks as deltas
against the blocks they replace where that pays (`raftbox.blocks.delta`; one `blocks/list` of
the previous revision gives its blocklist): a 100-byte insertion then costs a few KB, not the
~1 MiB block it lands in.

Every commit is written ahead in the index (`pending`) and recorded in one transaction after
the server answers: a success records both sides as agreeing (and the scan cache entry for the
content read); a conflict (`update(parent_rev)` or `add` refused) renames the local file aside
as a conflicted copy, which the next pass uploads while it downloads the server's version.
A read-only refusal (`no_write_permission`: the file is in a folder shared with this account
as a viewer) moves the local file to a conflicted copy at the top of the sync folder (the
account's own space) and forgets the path, so the next pass restores the shared version and
uploads the copy: the edit is kept, never uploaded into the shared folder; one message.
Each returns how many files were committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass, replace
from typing import Any

from raftbox.blocks.chunker import Chunker
from raftbox.blocks.delta import pick_bases

from .. import localfs
from ..index import CacheEntry
from ..planner import Upload
from ..remote import RemoteError, format_ts, remote_node
from ..scanner import as_hint, racy, remembered, same_stat
from ..trees import Kind, Node, agreed
from .base import STREAM_BYTES, MiB, PassBase


@dataclass
class _Prepared:
    """An upload read from disk: what to commit, and what to record if the commit succeeds."""

    op: Upload
    node: Node  # the local node as read (stat before and after the read matched)
    blocks: list[tuple[str, int]]
    data: dict[str, bytes]  # small files: the bytes of each block
    cache: CacheEntry | None


class Uploads(PassBase):
    """Reading, sending and committing uploads (see the module docstring)."""

    def _read_only_aside(self, rel: str) -> bool:
        """A file the server refused as read-only (a viewer's edit in a shared folder): move
        it to a conflicted-copy name at the top of the sync folder — the account's own space,
        which the next pass uploads — and say so once. Returns whether it was moved (then the
        caller forgets `rel` in the index, so the next pass downloads the shared version)."""
        name = rel.rsplit("/", 1)[-1]
        new = localfs.free_conflict_name(
            self.root, "/" + name, host=self.host, today=self.today, is_folder=False
        )
        try:
            localfs.rename_noreplace(self.abs(rel), self.abs(new))
        except FileNotFoundError:
            return False
        msg = _read_only_note(rel, new)
        self.c.conflicts += 1
        self.c.messages.append(msg)
        self.progress.message(msg)
        return True

    def _read(self, op: Upload, keep_data: bool) -> _Prepared | None:
        """Cut and hash `op`'s file as it is now (worker thread); None if it changed or went."""
        p = self.abs(op.path)
        if not self._safe_parent(op.path):
            return None
        try:
            st = os.lstat(p)
            kind = localfs.kind_of(st)
            if kind is not op.node.kind:
                return None
            if kind is Kind.SYMLINK:
                target = os.readlink(p)
                raw = os.fsencode(target)
                bid = hashlib.sha256(raw).hexdigest()
                node = localfs.local_node(op.path, st, link_target=target)
                blocks = [(bid, len(raw))] if raw else []
                return _Prepared(op, node, blocks, {bid: raw} if keep_data else {}, None)
            ch = Chunker(self.chunking)
            blocks, data = [], {}
            read_started = time.time_ns()
            with open(p, "rb") as f:
                if os.fstat(f.fileno()).st_ino != st.st_ino:
                    return None
                while piece := f.read(4 * MiB):
                    for c in ch.feed(piece):
                        blocks.append((c.id, c.size))
                        if keep_data:
                            data[c.id] = c.data
                for c in ch.finish():
                    blocks.append((c.id, c.size))
                    if keep_data:
                        data[c.id] = c.data
            after = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not same_stat(st, after) or ch.size != st.st_size:
            return None  # being written: the next pass takes it up
        node = localfs.local_node(op.path, st, content_hash=ch.content_hash())
        cache = remembered(st.st_ino, st.st_size, st.st_mtime_ns, node.content_hash or "",
                           blocks, read_started)  # fmt: skip
        return _Prepared(op, node, blocks, data, cache)

    def _entry(self, pr: _Prepared) -> dict[str, Any]:
        op, node = pr.op, pr.node
        e: dict[str, Any] = {
            "path": op.path,
            "blocks": [[b, s] for b, s in pr.blocks],
            "size": node.size,
            "mode": "add" if op.parent_rev is None else {".tag": "update", "update": op.parent_rev},
            "autorename": False,
            "client_modified": format_ts(node.mtime_ns),
        }
        if node.kind is Kind.SYMLINK:
            e["symlink_target"] = node.link_target
        else:
            e["content_hash"] = node.content_hash
            e["executable"] = bool(node.executable)
        return e

    async def _send_missing(
        self, blocks: dict[str, bytes], bases: dict[str, str] | None = None
    ) -> None:
        if not blocks:
            return
        have = await self.remote.native(self.remote.has, list(blocks))
        todo = {b: d for b, d in blocks.items() if b not in have}
        if todo:
            await self._send_missing_known(todo, bases)

    async def _commit(self, prepared: list[_Prepared]) -> int:
        # Write-ahead: if the process dies after the server committed and before the record
        # below, the next start asks the server's revisions whether this content got there.
        # (The row keeps the parent rev the commit is based on, in its `rev`.)
        self.index.pending_put(
            "upload", [(None, replace(pr.node, rev=pr.op.parent_rev)) for pr in prepared]
        )
        results = await self.remote.native(
            self.remote.commit_batch, [self._entry(pr) for pr in prepared]
        )
        puts: list[Node] = []
        keys: list[str] = []
        cache: list[CacheEntry] = []
        done = 0
        for pr, res in zip(prepared, results, strict=True):
            tag = res.get(".tag")
            if tag == "success":
                rem = remote_node({**res, ".tag": "file"})
                assert rem is not None
                puts.append(agreed(pr.node, rem))
                keys.append(pr.node.key)
                if pr.cache is not None:
                    cache.append(pr.cache)
                self.c.uploaded_files += 1
                self.c.uploaded_bytes += pr.node.size
                done += 1
            elif tag == "failure" and "conflict" in _tags(res.get("failure")):
                self._conflict_aside(pr.op.path)  # the next pass uploads it and downloads theirs
            elif tag == "failure" and "no_write_permission" in _tags(res.get("failure")):
                if self._read_only_aside(pr.op.path):  # a viewer's edit: kept, but as its own
                    keys.append(pr.node.key)  # forgotten: the next pass restores the server's
            else:
                self.c.skipped += 1
                why = _tags(res.get("failure")) if tag == "failure" else [str(tag)]
                self.c.errors.append(f"upload {pr.op.path}: {'/'.join(why)}")
        with self.index.batch():
            self.index.apply(put=puts, delete=keys)
            self.index.cache_put_many(cache)
            self.index.pending_drop(pr.node.key for pr in prepared)
        return done

    async def _upload_small(self, ops: list[Upload]) -> int:
        prepared = await asyncio.to_thread(lambda: [self._read(op, True) for op in ops])
        ready = [pr for pr in prepared if pr is not None]
        self.c.skipped += len(prepared) - len(ready)
        if not ready:
            return 0
        await self._send_missing({b: d for pr in ready for b, d in pr.data.items()})
        done = await self._commit(ready)
        self.progress.advance("upload", len(ops), sum(op.node.size for op in ops))
        return done

    async def _upload_big(self, op: Upload) -> int:
        """Upload a big file with the scan's blocklist while its stat still matches the scan:
        only the blocks the server lacks are read and sent (the stat, checked before and after
        each piece, says they are the bytes the scan hashed). If the file was racily clean at
        the scan (its stat cannot prove it unchanged since), every block is read and checked
        against its id on the way (hashing only, no cutting). If the stat changes or a block
        does not match, the file changed: it is cut again (`_upload_big_recut`)."""
        p = self.abs(op.path)
        if not self._safe_parent(op.path):
            self.c.skipped += 1
            return 0
        scanned = self.blocklists.get(op.path)
        st = localfs.lstat_or_none(p)
        if (
            scanned is None
            or st is None
            or (st.st_ino, st.st_size, st.st_mtime_ns)
            != (op.node.inode, op.node.size, op.node.mtime_ns)  # fmt: skip
        ):
            return await self._upload_big_recut(op)
        verify_all = self._racy(st)
        first: dict[str, int] = {}  # block id -> its first index
        for k, (b, _size) in enumerate(scanned):
            first.setdefault(b, k)
        have = await self.remote.native(self.remote.has, list(first))
        missing = [b for b in first if b not in have]
        bases = pick_bases(await self._previous_blocks(op), scanned, missing) if missing else {}
        todo: list[tuple[str, int, int, bool]] = []  # (id, offset, size, send)
        off = 0
        for k, (b, size) in enumerate(scanned):
            send = b not in have and first[b] == k
            if send or verify_all:
                todo.append((b, off, size, send))
            off += size

        def read(batch: list[tuple[str, int, int, bool]]) -> dict[str, bytes] | None:
            out: dict[str, bytes] = {}
            with open(p, "rb") as f:
                if not same_stat(st, os.fstat(f.fileno())):
                    return None  # changed since the scan
                for b, o, size, send in batch:
                    data = os.pread(f.fileno(), size, o)
                    if verify_all and hashlib.sha256(data).hexdigest() != b:
                        return None  # changed since the scan
                    if send:
                        out[b] = data
                if not same_stat(st, os.fstat(f.fileno())):
                    return None  # written to while read
            return out

        sending: list[asyncio.Task] = []  # oldest first, at most `sends_in_flight`
        i = 0
        try:
            while i < len(todo):
                batch, n = [], 0
                while i < len(todo) and n < STREAM_BYTES:
                    batch.append(todo[i])
                    n += todo[i][2]
                    i += 1
                blocks = await asyncio.to_thread(read, batch)
                if blocks is None:
                    while sending:
                        await sending[0]
                        sending.pop(0)
                    return await self._upload_big_recut(op)
                while len(sending) >= max(1, self.remote.sends_in_flight):
                    await sending[0]
                    sending.pop(0)
                if blocks:
                    sending.append(asyncio.create_task(self._send_missing_known(blocks, bases)))
                self.progress.advance("upload", 0, n)
            while sending:
                await sending[0]
                sending.pop(0)
        except FileNotFoundError:
            self.c.skipped += 1
            return 0
        finally:
            # A read error or the caller's cancellation left sends running: this function
            # owns them, so it ends them before leaving.
            for t in sending:
                await _abandon(t)
        after = localfs.lstat_or_none(p)
        if after is None or not same_stat(st, after):
            self.c.skipped += 1
            return 0
        node = localfs.local_node(op.path, after, content_hash=op.node.content_hash)
        # The scan cached it, unless it was racily clean: then keep its blocks as a hint.
        hint = None
        if verify_all:
            hint = as_hint(CacheEntry(st.st_ino, st.st_size, st.st_mtime_ns,
                                      op.node.content_hash or "", tuple(scanned)))  # fmt: skip
        done = await self._commit([_Prepared(op, node, list(scanned), {}, hint)])
        self.progress.advance("upload", 1, 0)
        return done

    async def _previous_blocks(self, op: Upload) -> list[tuple[str, int]]:
        """The blocklist of the version `op` replaces ([] if none, or it cannot be listed):
        the bases of block deltas. Only a hint: a wrong one costs a bigger delta, not data."""
        if op.parent_rev is None or not self.remote.deltas:
            return []
        try:
            _meta, blocks = await self.remote.native(self.remote.blocks_of, f"rev:{op.parent_rev}")
        except RemoteError:
            return []
        return blocks

    def _racy(self, st: os.stat_result) -> bool:
        """Could the file have changed after the scan read it without changing its stat?"""
        started = self.scan_started_ns if self.scan_started_ns is not None else time.time_ns()
        return racy(st.st_mtime_ns, started)

    async def _send_missing_known(
        self, blocks: dict[str, bytes], bases: dict[str, str] | None = None
    ) -> None:
        if bases:
            await self.remote.native(self.remote.put_with_bases, list(blocks.items()), bases)
        else:
            await self.remote.native(self.remote.put, list(blocks.items()))

    async def _upload_big_recut(self, op: Upload) -> int:
        """Stream a big file: cut `STREAM_BYTES`, send its missing blocks while cutting the
        next, then commit; memory is two pieces whatever the size."""
        p = self.abs(op.path)
        read_started = time.time_ns()
        if not self._safe_parent(op.path):
            self.c.skipped += 1
            return 0
        try:
            f = open(p, "rb")  # noqa: SIM115 (closed below, across awaits)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self.c.skipped += 1
            return 0
        try:
            st = os.fstat(f.fileno())
            ch = Chunker(self.chunking)
            blocks: list[tuple[str, int]] = []
            sent: set[str] = set()
            previous = await self._previous_blocks(op)
            cut_bytes = 0  # the bytes of `blocks` whose bases were picked

            def cut() -> tuple[dict[str, bytes], bool]:
                out: dict[str, bytes] = {}
                n = 0
                while n < STREAM_BYTES:
                    piece = f.read(4 * MiB)
                    cs = ch.feed(piece) if piece else ch.finish()
                    for c in cs:
                        blocks.append((c.id, c.size))
                        if c.id not in sent:
                            sent.add(c.id)
                            out[c.id] = c.data
                    if not piece:
                        return out, True
                    n += len(piece)
                return out, False

            sending: asyncio.Task | None = None
            done = False
            try:
                while not done:
                    k = len(blocks)
                    batch, done = await asyncio.to_thread(cut)
                    bases = pick_bases(previous, blocks[k:], batch, cut_bytes)
                    cut_bytes += sum(n for _, n in blocks[k:])
                    if sending is not None:
                        await sending
                    sending = asyncio.create_task(self._send_missing(batch, bases))
                    self.progress.advance("upload", 0, sum(len(d) for d in batch.values()))
                assert sending is not None  # the loop ran at least once
                await sending
                sending = None
            finally:
                # `cut()` (a read error) or the caller's cancellation left the send of the
                # previous piece running: this function owns it, so it ends it before leaving.
                await _abandon(sending)
        finally:
            f.close()
        after = localfs.lstat_or_none(p)
        if after is None or not same_stat(st, after) or ch.size != st.st_size:
            self.c.skipped += 1
            return 0
        node = localfs.local_node(op.path, after, content_hash=ch.content_hash())
        cache = remembered(st.st_ino, st.st_size, st.st_mtime_ns, node.content_hash or "",
                           blocks, read_started)  # fmt: skip
        done_n = await self._commit([_Prepared(op, node, blocks, {}, cache)])
        self.progress.advance("upload", 1, 0)
        return done_n


async def _abandon(task: asyncio.Task | None) -> None:
    """Cancel `task` if it still runs and wait until it has ended. Its outcome is dropped: the
    caller is already leaving with an error of its own (or was cancelled)."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: not reported later as "never retrieved"


def _read_only_note(path: str, copy: str) -> str:
    return (
        f"read-only: {path!r} is in a folder shared with you as a viewer; your version is "
        f"kept as {copy!r} and the shared one restored"
    )


def _tags(u: Any) -> list[str]:
    """The tags of a nested stone union (`{".tag": "path", "path": {...}}` → ["path", ...]);
    an `UploadWriteFailed`-style `reason` is followed too."""
    out: list[str] = []
    while isinstance(u, dict):
        tag = u.get(".tag")
        if not isinstance(tag, str):
            break
        out.append(tag)
        u = u.get(tag, u.get("reason"))
    return out
