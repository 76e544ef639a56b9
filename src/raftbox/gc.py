"""Garbage collection of blocks: delete what no kept revision references, never what an upload
may still commit, and never under an upload's feet.

Where it lives: a job of the meta role (the leader runs it; `raftbox admin gc` asks for a run),
which reads the metadata (`raftbox.meta`) and deletes from a `BlockStore`; so it sits above both,
and `raftbox.blocks` stays a storage layer that imports nothing above it.

Theory of operation
-------------------
A run (`GarbageCollector.run`, on a meta member: the leader every `interval_s`, or on demand
with `raftbox admin gc`) has four phases.

1. **Mark**, from a metadata snapshot: one read transaction on the member's SQLite replica
   (WAL: the member keeps applying meanwhile), taken after a ReadIndex, at raft index
   `mark_index`. Live = the blocks of every kept revision of every namespace, of every piece
   of a live upload session (sessions live 7 days), every block some namespace uploaded or
   referenced less than `upload_keep_s` ago (default 7 days: a `blocks/put` upload may be
   committed that long after), and every block condemned by a run not yet finished.
2. **Sweep listing**: list the store; candidates = listed − live. The GC state file
   (`DATA/gc-state.msgpack`, written atomically) keeps each candidate's first-seen time, so the
   grace period is measured from the first run that saw a block unreferenced; a block that is
   live again drops out (a later return to garbage starts a new grace period). A block written
   moments ago by an upload that has not recorded it yet is a candidate too — the grace period
   (default 6 hours, and always longer than the block cache's `present_ttl_s`) is what keeps it.
3. **Condemn** (replicated, `GcCondemn`), in batches: the candidates past their grace period.
   Each batch takes or renews the cluster's GC lease (one run at a time). The state machine
   refuses any block touched — uploaded, or referenced by a commit — after `mark_index` (the
   snapshot is old news for it), revokes every namespace's right to reference the others
   (so `blocks/has` stops reporting them and no commit can link them), and from then on fails
   any command that records them as uploaded with `gc_retry`.
4. **Delete, then release** (`GcRelease`): delete the condemned blocks from the store, then
   release them; the GC generation goes up by one.

Why an upload never loses a block to a concurrent run. A blockserver reads the GC generation
`g` before it stores a request's blocks, and the command that records them carries `g`. A
block it found already present (a dedup hit, or a cached presence fact) may be deleted right
after. The state machine accepts the command only if none of its blocks is condemned now and
none was released (deleted) by a generation after `g`: if the deletion's release came first,
`g` was read after it, so the blockserver stored (or saw stored) the block after it was
deleted; if the condemnation came after the command, the command's touch made the condemnation
refuse the block. A refused command is answered 503 (`gc_retry`), the client retries, and the
retry stores the block again. Presence facts in the block cache are keyed by the generation the
blockserver believes (`raftbox.blocks.cache.GenerationKeyedCache`), so a fact learned before a
deletion is never used after the blockserver has moved past it.

A run is safe to interrupt anywhere: before condemning it changed nothing but the state file
(replaced atomically); a batch condemned but not yet released stays condemned (those uploads
get `gc_retry`) until a later run finishes it: a re-run on the same member resumes with the
same run id (kept in the state file), another member's run once the lease expired; either way
`GcCondemn` returns the batch as `adopted`, and the run deletes what is left (deleting twice is
harmless) and releases it. A
run stops deleting at three quarters of its lease, measured on its own clock from before it
asked for the lease, so that it cannot delete after another run took over (assumed: clock rates
of meta members agree to within a quarter of the lease).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from raftbox import atomic
from raftbox.blocks.store import BlockStore
from raftbox.meta import commands as C
from raftbox.meta.fsm import gc_mark_db

if TYPE_CHECKING:
    from raftbox.meta.service import MetaService

log = logging.getLogger(__name__)

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S


@dataclass(frozen=True)
class GcConfig:
    grace_s: float = 6 * HOUR_S
    upload_keep_s: float = 7 * DAY_S
    lease_s: float = 600.0
    batch_blocks: int = 1000
    interval_s: float = HOUR_S  # the leader's periodic runs; 0 = never
    present_ttl_s: float = 3600.0  # of the block cache in front of the store (must be < grace)

    def __post_init__(self) -> None:
        if self.grace_s <= self.present_ttl_s:
            raise ValueError(
                f"the GC grace period ({self.grace_s}s) must be longer than the block cache's "
                f"present_ttl_s ({self.present_ttl_s}s)"
            )
        if not 1 <= self.batch_blocks <= 10_000 or self.lease_s <= 0 or self.upload_keep_s < 0:
            raise ValueError(f"bad GC settings: {self}")


@dataclass
class GcReport:
    run_id: str
    mark_index: int = 0
    listed: int = 0
    live: int = 0
    candidates: int = 0
    due: int = 0
    deleted: int = 0
    adopted: int = 0
    refused: int = 0  # touched since the mark: kept
    deferred: int = 0  # left condemned for a later run (lease running out)
    busy: bool = False  # another run holds the lease
    deleted_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        d = asdict(self)
        d["deleted_ids"] = d["deleted_ids"][:100]
        return d


class GcState:
    """The collector's local state, in a file replaced atomically: candidate first-seen times
    (ms) and the id of a run that has not finished (a re-run on this member resumes it)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.first_seen: dict[str, int] = {}
        self.run_id: str | None = None
        if path and os.path.exists(path):
            with open(path, "rb") as f:
                raw = f.read()
            try:
                st = msgspec.msgpack.decode(raw, type=_StateFile)
                self.first_seen, self.run_id = st.first_seen, st.run_id
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("GC state %s is unreadable: starting afresh (deletions wait)", path)

    def save(self) -> None:
        if not self.path:
            return
        atomic.replace(self.path, msgspec.msgpack.encode(_StateFile(self.first_seen, self.run_id)))


class _StateFile(msgspec.Struct):
    first_seen: dict[str, int]
    run_id: str | None = None


class GarbageCollector:
    """Runs garbage collection for the cluster from one meta member (see the module docstring).
    `clock` is wall time in seconds (tests inject it); `monotonic` times the lease."""

    def __init__(
        self,
        meta: MetaService,
        store: BlockStore,
        cfg: GcConfig | None = None,
        *,
        state_path: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meta = meta
        self.store = store
        self.cfg = cfg or GcConfig()
        self.state_path = state_path
        self.clock = clock
        self.monotonic = monotonic
        self._lock = asyncio.Lock()
        self.runs = 0
        # tests: called between phases with the phase's name; raise to interrupt the run
        self.on_phase: Callable[[str], None] = lambda phase: None

    async def _mark(self, now_ms: int) -> tuple[int, set[str]]:
        await self.meta.node.read_index(timeout_s=self.meta.write_timeout_s)
        keep_ms = int(self.cfg.upload_keep_s * 1000)
        ms = self.meta.store
        if ms.path is None:  # an in-memory store (tests): read on the loop
            return ms.gc_mark(now_ms, keep_ms)

        def snapshot() -> tuple[int, set[str]]:
            db = sqlite3.connect(f"file:{ms.path}?mode=ro", uri=True, isolation_level=None)
            try:
                return gc_mark_db(db, now_ms, keep_ms, ms.upload_session_ttl_ms)
            finally:
                db.close()

        return await asyncio.to_thread(snapshot)

    async def _write(self, cmd: Any) -> Any:
        r = await self.meta.write(cmd)
        if isinstance(r, C.MetaError) and r.tags != ["gc_busy"]:
            raise RuntimeError(f"GC command failed: {r.summary} {r.extra}")
        return r

    async def run(self) -> GcReport:
        async with self._lock:
            return await self._run()

    async def _run(self) -> GcReport:
        cfg = self.cfg
        state = GcState(self.state_path)
        if state.run_id is None:
            state.run_id = secrets.token_hex(8)
            state.save()
        rep = GcReport(run_id=state.run_id)
        now_ms = int(self.clock() * 1000)
        rep.mark_index, live = await self._mark(now_ms)
        rep.live = len(live)
        self.on_phase("marked")
        listed: list[str] = []
        async for bid in self.store.list():
            listed.append(bid)
        rep.listed = len(listed)
        candidates = sorted(set(listed) - live)
        rep.candidates = len(candidates)
        state.first_seen = {b: state.first_seen.get(b, now_ms) for b in candidates}
        state.save()
        self.on_phase("listed")
        grace_ms = int(cfg.grace_s * 1000)
        due = [b for b in candidates if now_ms - state.first_seen[b] >= grace_ms]
        rep.due = len(due)
        lease_ms = int(cfg.lease_s * 1000)
        # At least one condemn, even with nothing due: it adopts an interrupted run's batch.
        batches = [due[i : i + cfg.batch_blocks] for i in range(0, len(due), cfg.batch_blocks)]
        try:
            for batch in batches or [[]]:
                # Forget the batch's first-seen times first: a block of it that survives this
                # run (refused, or re-uploaded after its deletion) starts a new grace period.
                for bid in batch:
                    state.first_seen.pop(bid, None)
                state.save()
                t0 = self.monotonic()
                r = await self._write(C.GcCondemn(rep.run_id, rep.mark_index, batch, lease_ms))
                if isinstance(r, C.MetaError):  # gc_busy
                    rep.busy = True
                    log.info("GC: another run holds the lease (%s)", r.extra)
                    return rep
                rep.refused += len(batch) - len(r.condemned)
                rep.adopted += len(r.adopted)
                self.on_phase("condemned")
                doomed = sorted(set(r.condemned) | set(r.adopted))
                gone: list[str] = []
                for bid in doomed:
                    if self.monotonic() - t0 > 0.75 * cfg.lease_s:
                        rep.deferred += len(doomed) - len(gone)
                        log.warning("GC: lease running out; %d blocks left", rep.deferred)
                        break
                    await self.store.delete(bid)
                    gone.append(bid)
                    self.on_phase("deleted_one")
                if gone:
                    await self._write(C.GcRelease(rep.run_id, gone))
                rep.deleted += len(gone)
                rep.deleted_ids.extend(gone)
                if rep.deferred:
                    break
        finally:
            self.runs += 1
        await self._write(C.GcRelease(rep.run_id, [], done=True))
        state.run_id = None
        state.save()
        log.info(
            "GC run %s: %d listed, %d live, %d candidates, %d due, %d deleted (%d adopted), "
            "%d refused, %d deferred",
            rep.run_id,
            rep.listed,
            rep.live,
            rep.candidates,
            rep.due,
            rep.deleted,
            rep.adopted,
            rep.refused,
            rep.deferred,
        )
        return rep

    async def run_periodically(self) -> None:
        """Run every `interval_s` while this member leads (cancel to stop)."""
        if self.cfg.interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.interval_s)  # the interval between runs
            if self.meta.node.role.name != "LEADER":
                continue
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("GC run failed; the next one retries")
