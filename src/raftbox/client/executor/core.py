"""Running a plan: the order of the parts, and what is skipped when.

Contract
--------
`Executor` is the three parts of a pass (`structural`, `uploads`, `downloads`) over one shared
state (`base.PassBase`). `Executor.run(ops)` carries out a plan's operations in the order the
package docstring gives: the structural ones first, one at a time, in plan order (a run of
consecutive folder creations on the server is sent ahead as one `files/create_folder_batch`,
`Structural.mkdir_ahead`, and each answer is then handled in turn as its own); when one is
skipped, every later operation on its subtree or an ancestor's waits for the next pass (counted
in `Outcome.deferred`; the first reason in `Outcome.stopped`). Then the transfers, concurrently
(`TRANSFERS_IN_FLIGHT` jobs at once; small files in groups of `GROUP_FILES` / `GROUP_BYTES`),
each job's `RemoteError` or `OSError` reported for that job only. A `ServerUnavailable` from any
part ends the run with `Outcome.unavailable` set: the caller retries the pass later. Uploads into
a subtree this pass moved on the server are first re-based on the revs the move gave them
(`_revs_after_moves`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from raftbox.meta.paths import is_in_subtree

from ..planner import (
    ConflictCopy,
    Download,
    MkdirRemote,
    MoveLocal,
    MoveRemote,
    Op,
    OpKind,
    RenameTwin,
    Upload,
)
from ..remote import RemoteError, ServerUnavailable
from ..trees import path_key, rebase_path, same_content
from .base import GROUP_BYTES, GROUP_FILES, SMALL_BYTES, TRANSFERS_IN_FLIGHT
from .downloads import Downloads
from .structural import Structural
from .uploads import Uploads

MKDIR_BATCH_MAX = 1000  # folder creations per `files/create_folder_batch` (the route takes 10,000)


@dataclass
class Outcome:
    ops_done: int = 0
    stopped: str | None = None  # the first structural operation skipped, and why
    deferred: int = 0  # skipped operations, and those in their subtrees, left to the next pass
    unavailable: str | None = None  # the server could not be reached: retry later


class Executor(Structural, Uploads, Downloads):
    """Carries out one pass's plan: `run(ops)` (see the module docstring)."""

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
            for i, op in enumerate(structural):
                if waits(op):
                    out.deferred += 1
                    continue
                if isinstance(op, MkdirRemote) and id(op) not in self._premade:
                    await self.mkdir_ahead(_mkdir_run(structural, i, waits))
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


def _keys(op: Op) -> list[str]:
    """The path keys an operation touches."""
    if isinstance(op, RenameTwin | MoveLocal | MoveRemote):
        return [path_key(op.src), path_key(op.dst)]
    if isinstance(op, ConflictCopy):
        return [path_key(op.path), path_key(op.new_path)]
    return [path_key(op.path)]


def _mkdir_run(ops: list[Op], i: int, waits: Callable[[Op], bool]) -> list[MkdirRemote]:
    """The run of consecutive `MkdirRemote`s from `ops[i]` (at most `MKDIR_BATCH_MAX`), less
    those already waiting on a skipped operation."""
    out: list[MkdirRemote] = []
    for op in ops[i : i + MKDIR_BATCH_MAX]:
        if not isinstance(op, MkdirRemote):
            break
        if not waits(op):
            out.append(op)
    return out


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
