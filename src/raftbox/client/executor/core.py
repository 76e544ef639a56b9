"""Carrying out a `planner.Plan`: the disk and server side of one sync pass.

Theory of operation
-------------------
The planner is pure and decides; this module touches the disk and the server, and records in
the index (the synced tree) what both sides now agree on. It follows the contract each operation
type states in `planner` (what to re-check first, what to record on success), with these rules:

1. **Structural operations run first, one at a time, in plan order** (renames, moves, mkdirs,
   deletes, synced-tree updates). If one is skipped — its re-check failed, or the server or
   the disk refused — every later operation on the same subtree or on one of its ancestors is
   skipped too (they may depend on it: a child's upload on its folder's mkdir, a folder's
   delete on its children's); the rest goes on, so one stuck path never holds up the others.
   `Outcome.stopped` says why the first was skipped. Nothing needs undoing: the next pass
   re-plans from fresh trees.
2. **Transfers run next, concurrently** (`TRANSFERS_IN_FLIGHT` groups at once). Small files
   (`SMALL_BYTES`) travel in groups of up to `GROUP_FILES` / `GROUP_BYTES`: one `blocks/has`,
   one `blocks/put` of the missing blocks, one `commit_batch` (one Raft entry) per group; for
   downloads one batched `blocks/list` and one `blocks/get` of the blocks not found locally.
   Big files stream in `STREAM_BYTES` pieces so memory stays bounded. A failed transfer affects
   no other.
3. **Never lose data.** A local file is re-checked (`localfs.unchanged`: stat, re-hash when in
   doubt) just before it is deleted or replaced. A download is written to a temporary file in
   `DIR/.raftbox/tmp/`, fsynced, given its mtime and mode, and renamed into place only then (so
   no half-written file ever sits under its real name); if the file there changed since the
   scan, it is first renamed aside as a conflicted copy (uploaded by the next pass). A changed
   file planned for deletion is kept where it is (the next pass uploads it: an edit wins over a
   delete). An upload is read (cut and hashed) from disk at upload time, and skipped if it
   changed while being read. A server conflict (`update(parent_rev)` or `add` refused) renames
   the local file aside as a conflicted copy; the next pass uploads the copy and downloads the
   server's version. Identical content is never a conflict (the server answers success).
4. **Downloads reuse local blocks.** Every block of a file to download that some local file
   holds (the scan's blocklists) is read from disk and verified by its hash instead of fetched.
5. **Resumable after a kill at any point.** Each step's record is one SQLite transaction made
   after the step succeeded; killed in between, the next pass finds both sides already agreeing
   (same content) and records it, or finds the step undone and does it again. Temporary files of
   a killed pass are deleted at the start of the next.

Local paths are the planner's display paths below the sync root; before writing into a folder
the executor checks that no component of it is a symlink (`localfs.safe_dir`), so a folder
swapped for a link after the scan cannot make it write outside the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from raftbox.blocks.chunker import CDC, Chunker, Chunking
from raftbox.blocks.hashing import ContentHasher
from raftbox.meta.paths import MalformedPath, is_in_subtree

from .. import localfs
from ..ignore import IgnoreRules
from ..index import CacheEntry, Index
from ..planner import (
    ConflictCopy,
    DeleteLocal,
    DeleteRemote,
    Download,
    MkdirLocal,
    MkdirRemote,
    MoveLocal,
    MoveRemote,
    Op,
    OpKind,
    RenameTwin,
    UpdateSynced,
    Upload,
)
from ..remote import Remote, RemoteError, ServerUnavailable, format_ts, remote_node
from ..scanner import as_hint, racy, remembered, same_stat
from ..trees import Kind, Node, Tree, agreed, path_key, rebase_path, same_content

MiB = 1024 * 1024
SMALL_BYTES = 4 * MiB
GROUP_FILES = 1000
GROUP_BYTES = 32 * MiB
STREAM_BYTES = 16 * MiB
TRANSFERS_IN_FLIGHT = 4
TMP_DIR = "tmp"


@dataclass
class Counters:
    """What passes did (summed over a `sync` run)."""

    uploaded_files: int = 0
    uploaded_bytes: int = 0
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    reused_bytes: int = 0  # of downloads, taken from local files instead of the network
    deleted_local: int = 0
    deleted_remote: int = 0
    moved: int = 0
    folders: int = 0
    conflicts: int = 0
    skipped: int = 0  # operations whose re-check failed: the next pass takes them up
    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, other: Counters) -> None:
        for k, v in vars(other).items():
            if isinstance(v, list):
                getattr(self, k).extend(v)
            else:
                setattr(self, k, getattr(self, k) + v)


@dataclass
class Outcome:
    ops_done: int = 0
    stopped: str | None = None  # the first structural operation skipped, and why
    deferred: int = 0  # skipped operations, and those in their subtrees, left to the next pass
    unavailable: str | None = None  # the server could not be reached: retry later


class Progress:
    """What the executor reports as it goes (the command line shows it as progress bars)."""

    def start(self, what: str, files: int, nbytes: int) -> None: ...
    def advance(self, what: str, files: int, nbytes: int) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class _Prepared:
    """An upload read from disk: what to commit, and what to record if the commit succeeds."""

    op: Upload
    node: Node  # the local node as read (stat before and after the read matched)
    blocks: list[tuple[str, int]]
    data: dict[str, bytes]  # small files: the bytes of each block
    cache: CacheEntry | None


class Executor:
    def __init__(
        self,
        root: str,
        index: Index,
        remote: Remote,
        *,
        host: str,
        today: str,
        chunking: Chunking = CDC,
        blocklists: dict[str, tuple[tuple[str, int], ...]] | None = None,
        progress: Progress | None = None,
        counters: Counters | None = None,
        scan_started_ns: int | None = None,
        rules: IgnoreRules | None = None,
        remote_before: Tree | None = None,
        refresh: Callable[[], Awaitable[Tree]] | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        self.scan_started_ns = scan_started_ns  # when the scan behind `blocklists` began
        self.rules = rules if rules is not None else IgnoreRules()
        self.remote_before = remote_before if remote_before is not None else Tree()  # planned
        self.refresh = refresh  # the server's tree now (after this pass's own moves)
        self._moved_remote: list[tuple[str, str]] = []  # (src, dst) of this pass's server moves
        self.index = index
        self.remote = remote
        self.host, self.today = host, today
        self.chunking = chunking
        self.blocklists = blocklists or {}
        self.progress = progress or Progress()
        self.c = counters if counters is not None else Counters()
        self.tmp = os.path.join(self.root, ".raftbox", TMP_DIR)
        self._local_blocks: dict[str, tuple[str, int, int]] | None = None
        self._dirty_dirs: set[str] = set()  # folders renamed into: fsynced once per group

    # -- entry point ---------------------------------------------------------------------------

    async def run(self, ops: Iterable[Op]) -> Outcome:
        out = Outcome()
        ops = list(ops)
        structural = [op for op in ops if op.kind not in (OpKind.UPLOAD, OpKind.DOWNLOAD)]
        uploads = [op for op in ops if isinstance(op, Upload)]
        downloads = [op for op in ops if isinstance(op, Download)]
        blocked: list[str] = []  # keys of skipped operations: their subtrees wait

        def waits(op: Op) -> bool:
            return any(
                is_in_subtree(k, b) or is_in_subtree(b, k) for k in _keys(op) for b in blocked
            )

        try:
            for op in structural:
                if waits(op):
                    out.deferred += 1
                    continue
                try:
                    why = await self._structural(op)
                except OSError as e:
                    why = f"{_keys(op)[0] or '/'}: {e.strerror or e}"
                    self.c.errors.append(why)
                if why is not None:
                    out.stopped = out.stopped or why
                    out.deferred += 1
                    self.c.skipped += 1
                    blocked.extend(_keys(op))
                    continue
                out.ops_done += 1
            go_up = [op for op in uploads if not waits(op)]
            if self._moved_remote and self.refresh is not None:
                go_up = await self._revs_after_moves(go_up)
            go_down = [op for op in downloads if not waits(op)]
            out.deferred += len(uploads) + len(downloads) - len(go_up) - len(go_down)
            out.ops_done += await self._transfers(go_up, go_down)
        except ServerUnavailable as e:
            out.unavailable = str(e)
        return out

    async def _revs_after_moves(self, uploads: list[Upload]) -> list[Upload]:
        """A server move gives the files it moves new revs, so an upload planned with
        update(rev before the move) would be refused as a conflict with ourselves. For each
        upload into a subtree this pass moved, if the server's file there now is the one the
        plan saw (same id, same content) under a new rev, update from that rev instead."""
        assert self.refresh is not None
        if not any(op.parent_rev for op in uploads):
            return uploads
        now = await self.refresh()
        out = []
        for op in uploads:
            cur = now.get(path_key(op.path))
            if op.parent_rev is None or cur is None or cur.rev == op.parent_rev:
                out.append(op)
                continue
            old_path = op.path
            for src, dst in reversed(self._moved_remote):
                if is_in_subtree(path_key(old_path), path_key(dst)):
                    old_path = rebase_path(old_path, dst, src)
            old = self.remote_before.get(path_key(old_path))
            if (
                old is not None
                and old.rev == op.parent_rev
                and old.remote_id == cur.remote_id
                and same_content(old, cur)
            ):
                op = replace(op, parent_rev=cur.rev)
            out.append(op)
        return out

    def abs(self, rel: str) -> str:
        return self.root + rel

    # -- structural ----------------------------------------------------------------------------

    async def _structural(self, op: Op) -> str | None:
        """Carry out one structural op; None on success, else why it was skipped."""
        if isinstance(op, RenameTwin | ConflictCopy | MoveLocal):
            src, dst = (op.path, op.new_path) if isinstance(op, ConflictCopy) else (op.src, op.dst)
            for p in (src, dst):
                if not self._safe_parent(p):
                    return f"{p}: its folder is gone or is not a folder (or became a link)"
            ahead = isinstance(op, MoveLocal) and self._move_ahead("move_local", src, dst)
            try:
                localfs.rename_noreplace(self.abs(src), self.abs(dst))
            except (FileNotFoundError, FileExistsError) as e:
                if ahead:
                    self.index.pending_drop([path_key(src)])
                if isinstance(e, FileNotFoundError):
                    return f"{src}: gone since the scan"
                return f"{dst}: taken since the scan"
            if isinstance(op, RenameTwin):
                self.progress.message(op.message)
                self.c.messages.append(op.message)
            elif isinstance(op, ConflictCopy):
                self._conflict_noted(src, dst)
            else:
                self._moved(src, dst, ahead)
            return None
        if isinstance(op, MkdirLocal):
            p = self.abs(op.path)
            if not localfs.safe_dir(self.root, op.path.rsplit("/", 1)[0]):
                return f"{op.path}: its folder is gone or is not a folder"
            with contextlib.suppress(FileExistsError):
                os.mkdir(p)
            st = localfs.lstat_or_none(p)
            if st is None or not stat.S_ISDIR(st.st_mode):
                return f"{op.path}: not a folder on disk"
            self.index.apply(put=[agreed(localfs.local_node(op.path, st), op.node)])
            self.c.folders += 1
            return None
        if isinstance(op, MkdirRemote):
            try:
                meta = (await self.remote.api("files/create_folder_v2", {"path": op.path}))[
                    "metadata"
                ]
                meta[".tag"] = "folder"
            except RemoteError as e:
                if not e.is_tag("path/conflict/folder"):
                    return f"create folder {op.path}: {e.summary}"
                meta = await self.remote.api("files/get_metadata", {"path": op.path})
            rem = remote_node(meta)
            if rem is None or not rem.is_folder:
                return f"{op.path}: not a folder on the server"
            self.index.apply(put=[agreed(op.node, rem)])
            self.c.folders += 1
            return None
        if isinstance(op, MoveRemote):
            ahead = self._move_ahead("move_remote", op.src, op.dst)
            try:
                await self.remote.api("files/move_v2", {"from_path": op.src, "to_path": op.dst})
            except RemoteError as e:
                if ahead:
                    self.index.pending_drop([path_key(op.src)])
                return f"move {op.src} -> {op.dst}: {e.summary}"
            self._moved(op.src, op.dst, ahead)
            self._moved_remote.append((op.src, op.dst))
            return None
        if isinstance(op, DeleteLocal):
            return self._delete_local(op)
        if isinstance(op, DeleteRemote):
            return await self._delete_remote(op)
        if isinstance(op, UpdateSynced):
            key = path_key(op.path)
            if op.node is None:
                self.index.apply(delete=[key])
            else:
                self.index.apply(put=[op.node], delete=[] if op.node.is_folder else [key])
            return None
        raise AssertionError(f"not a structural op: {op!r}")

    def _move_ahead(self, op: str, src: str, dst: str) -> bool:
        """Write-ahead for a move of a synced entry: if the process dies after the move and
        before `_moved` records it, the next start finds the row and checks which happened
        (`engine._reconcile`), so the entry is not taken for one deleted at `src` and new at
        `dst`. False if `src` is not in the synced tree (nothing to record then)."""
        node = self.index.synced_node(path_key(src))
        if node is None:
            return False
        self.index.pending_put(op, [(dst, replace(node, path=src))])  # (same key)
        return True

    def _moved(self, src: str, dst: str, ahead: bool) -> None:
        with self.index.batch():
            self.index.move(path_key(src), dst)
            if ahead:
                self.index.pending_drop([path_key(src)])
        self.c.moved += 1

    def _safe_parent(self, rel: str) -> bool:
        """Is every folder above `rel` a real folder below the root (no symlink on the way,
        which a folder swapped for a link after the scan would be)?"""
        return localfs.safe_dir(self.root, rel.rsplit("/", 1)[0])

    def _delete_local(self, op: DeleteLocal) -> str | None:
        p = self.abs(op.path)
        key = path_key(op.path)
        if not self._safe_parent(op.path):
            return f"{op.path}: its folder is gone or is not a folder (or became a link)"
        st = localfs.lstat_or_none(p)
        if st is None:
            self.index.apply(delete=[key])  # already gone: both sides agree
            return None
        if not localfs.unchanged(p, op.expect, self.chunking):
            return f"{op.path}: changed since the scan, kept (the next pass uploads it)"
        try:
            if op.expect.is_folder:
                self._rmdir(op.path)
            else:
                os.unlink(p)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if any(self._would_sync(op.path, n) for n in os.listdir(p)):
                return f"{op.path}: the folder is not empty any more, kept"
            # Only entries that are never synced (ignored, or not files) keep it: they are the
            # user's, so the folder stays (and is created again on the server, empty).
            msg = (
                f"{op.path} was deleted on the server but holds files here that are not "
                f"synced (ignored, or not regular files): kept"
            )
            self.c.messages.append(msg)
            self.progress.message(msg)
        self.index.apply(delete=[key])
        self.c.deleted_local += 1
        return None

    def _would_sync(self, folder: str, name: str) -> bool:
        """Would the scanner sync the entry `name` of local folder `folder` (not ignored, a
        file, folder or symlink, a name the server accepts)?"""
        rel = f"{folder}/{name}"
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            return False
        st = localfs.lstat_or_none(self.abs(rel))
        if st is None or localfs.kind_of(st) is None:
            return False
        try:
            path_key(rel)
        except MalformedPath:
            return False
        return not self.rules.is_ignored(rel, is_folder=localfs.kind_of(st) is Kind.FOLDER)

    def _rmdir(self, rel: str) -> None:
        """Remove an empty folder; OS clutter (`.DS_Store`, `Thumbs.db`, ...) does not count."""
        p = self.abs(rel)
        try:
            os.rmdir(p)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        for name in os.listdir(p):
            if name in _CLUTTER or name.startswith("._"):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(os.path.join(p, name))
        os.rmdir(p)

    async def _delete_remote(self, op: DeleteRemote) -> str | None:
        key = path_key(op.path)
        arg: dict[str, Any] = {"path": op.path}
        if op.rev is not None:
            arg["parent_rev"] = op.rev
        else:  # a folder: only if nothing is left in it on the server
            try:
                res = await self.remote.api("files/list_folder", {"path": op.path, "limit": 100})
            except RemoteError as e:
                if e.is_tag("path/not_found"):
                    self.index.apply(delete=[key])
                    return None
                return f"delete {op.path}: {e.summary}"
            # Entries this client ignores (synced before a rule was added) do not keep the
            # folder: the user deleted it here, and the server keeps their revisions.
            if res.get("has_more") or any(
                not self.rules.is_ignored(e["path_display"], is_folder=e.get(".tag") == "folder")
                for e in res["entries"]
            ):
                return f"delete {op.path}: the server folder has new entries, kept"
        try:
            await self.remote.api("files/delete_v2", arg)
        except RemoteError as e:
            if e.is_tag("path_lookup/not_found") or e.is_tag("path/not_found"):
                self.index.apply(delete=[key])
                return None
            return f"delete {op.path}: {e.summary}"
        self.index.apply(delete=[key])
        self.c.deleted_remote += 1
        return None

    def _conflict_noted(self, path: str, copy: str) -> None:
        msg = f"conflict: {path!r} changed on both sides; this side's version is kept as {copy!r}"
        self.c.conflicts += 1
        self.c.messages.append(msg)
        self.progress.message(msg)

    def _conflict_aside(self, rel: str, is_folder: bool = False) -> str | None:
        """Rename local `rel` to a free conflicted-copy name; the new name (None if gone)."""
        new = localfs.free_conflict_name(
            self.root, rel, host=self.host, today=self.today, is_folder=is_folder
        )
        try:
            localfs.rename_noreplace(self.abs(rel), self.abs(new))
        except FileNotFoundError:
            return None
        self._conflict_noted(rel, new)
        return new

    # -- transfers -----------------------------------------------------------------------------

    async def _transfers(self, uploads: list[Upload], downloads: list[Download]) -> int:
        if not uploads and not downloads:
            return 0
        self.progress.start("upload", len(uploads), sum(op.node.size for op in uploads))
        self.progress.start("download", len(downloads), sum(op.node.size for op in downloads))
        jobs: list[Callable[[], Any]] = []
        for group in _groups([op for op in uploads if op.node.size <= SMALL_BYTES]):
            jobs.append(lambda g=group: self._upload_small(g))
        for op in (op for op in uploads if op.node.size > SMALL_BYTES):
            jobs.append(lambda op=op: self._upload_big(op))
        for group in _groups([op for op in downloads if op.node.size <= SMALL_BYTES]):
            jobs.append(lambda g=group: self._download_small(g))
        for op in (op for op in downloads if op.node.size > SMALL_BYTES):
            jobs.append(lambda op=op: self._download_big(op))
        slots = asyncio.Semaphore(TRANSFERS_IN_FLIGHT)
        done = 0

        unavailable: list[str] = []

        async def one(job: Callable[[], Any]) -> None:
            nonlocal done
            async with slots:
                if unavailable:
                    return
                try:
                    n = await job()  # (not `done += await ...`: that reads `done` first)
                    done += n
                except ServerUnavailable as e:
                    unavailable.append(str(e))
                except (RemoteError, OSError) as e:  # this transfer only; the others go on
                    self.c.errors.append(str(e))
                    self.progress.message(f"error: {e}")

        async with asyncio.TaskGroup() as tg:
            for job in jobs:
                tg.create_task(one(job))
        if unavailable:
            raise ServerUnavailable(unavailable[0])
        return done

    # -- uploads -------------------------------------------------------------------------------

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

    async def _send_missing(self, blocks: dict[str, bytes]) -> None:
        if not blocks:
            return
        have = await self.remote.native(self.remote.has, list(blocks))
        todo = [(b, d) for b, d in blocks.items() if b not in have]
        if todo:
            await self.remote.native(self.remote.put, todo)

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
        only the blocks the server lacks are read and sent. If the file was racily clean at
        the scan (its stat cannot prove it unchanged since), every block is read and checked
        against its id on the way (hashing only, no cutting). If a block does not match, the
        file changed: it is cut again (`_upload_big_recut`)."""
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
                for b, o, size, send in batch:
                    f.seek(o)
                    data = f.read(size)
                    if hashlib.sha256(data).hexdigest() != b:
                        return None  # changed since the scan
                    if send:
                        out[b] = data
            return out

        sending: asyncio.Task | None = None
        i = 0
        try:
            while i < len(todo):
                batch, n = [], 0
                while i < len(todo) and n < STREAM_BYTES:
                    batch.append(todo[i])
                    n += todo[i][2]
                    i += 1
                blocks = await asyncio.to_thread(read, batch)
                if sending is not None:
                    await sending
                    sending = None
                if blocks is None:
                    return await self._upload_big_recut(op)
                if blocks:
                    sending = asyncio.create_task(self._send_missing_known(blocks))
                self.progress.advance("upload", 0, n)
        except FileNotFoundError:
            self.c.skipped += 1
            return 0
        finally:
            if sending is not None:
                await sending
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

    def _racy(self, st: os.stat_result) -> bool:
        """Could the file have changed after the scan read it without changing its stat?"""
        started = self.scan_started_ns if self.scan_started_ns is not None else time.time_ns()
        return racy(st.st_mtime_ns, started)

    async def _send_missing_known(self, blocks: dict[str, bytes]) -> None:
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
                    batch, done = await asyncio.to_thread(cut)
                    if sending is not None:
                        await sending
                    sending = asyncio.create_task(self._send_missing(batch))
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

    # -- downloads -----------------------------------------------------------------------------

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

        # On any failure the rows stay: the next pass settles them (`engine._reconcile`).
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


_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


async def _abandon(task: asyncio.Task | None) -> None:
    """Cancel `task` if it still runs and wait until it has ended. Its outcome is dropped: the
    caller is already leaving with an error of its own (or was cancelled)."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: not reported later as "never retrieved"


def _keys(op: Op) -> list[str]:
    """The path keys an operation touches."""
    if isinstance(op, RenameTwin | MoveLocal | MoveRemote):
        return [path_key(op.src), path_key(op.dst)]
    if isinstance(op, ConflictCopy):
        return [path_key(op.path), path_key(op.new_path)]
    return [path_key(op.path)]


def _write_piece(f: Any, hasher: ContentHasher, data: bytes) -> None:
    f.write(data)
    hasher.update(data)


def _groups(ops: list[Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    cur: list[Any] = []
    size = 0
    for op in ops:
        if cur and (len(cur) >= GROUP_FILES or size + op.node.size > GROUP_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(op)
        size += op.node.size
    if cur:
        out.append(cur)
    return out


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
