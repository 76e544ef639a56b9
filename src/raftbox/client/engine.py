"""One sync folder kept in step with the server: passes and the pass loop.

A **pass** (`SyncEngine.one_pass`) is: bring the remote tree up to date from the stored cursor
(`remote.refresh_remote`); settle what a killed process left in flight (`reconcile`: the
index's write-ahead `pending` rows) and delete its temporary files; scan the folder
(`scanner.scan`, incremental: unchanged files are not read); plan (`planner.plan`, pure; skipped
when the three trees agree everywhere, `planner.settled`, as they do on a no-op pass; when they
agreed at the end of the last pass and neither tree was written since, `Index.agreed`, the
remote tree is not even loaded unless the scan finds a change); carry the plan out
(`executor.Executor`). `sync` repeats passes until one finds nothing to do or
carries out its whole plan with nothing deferred (a conflict, a twin rename, or a file that
changed while it was read is taken up by the next pass), at most `max_passes`, and stops early
if the plan is refused by the max-delete check or the server is unreachable. With
`Options.unavailable_retry_s` > 0 (`raftbox sync` sets 60 s, `--retry-s`), an unreachable or
overloaded server (no connection, 5xx, 429) does not end `sync` at once: the pass is run again
after a jittered back-off (1 s doubling to 15 s) until a pass reaches the server or that long
has passed since the first failure (a failed pass that got some work done restarts the clock); a pass that failed re-plans from fresh trees, so nothing
needs undoing, and failed passes do not count against `max_passes`. Running passes whenever the
folder or the account changes is `watch.watch`'s concern (it has its own retry).

Entries of the server's tree this client cannot represent here (a name or path too long for
this file system, nested too deep, a name or metadata no client could hold: `limits`,
`remote.Held`) are held out of the plan on every side and reported once per run beside the
local entries that cannot be synced; everything else keeps syncing.

Safety around the pass:
- one process per folder: `DIR/.raftbox/lock` is held (flock) for the engine's lifetime; a
  second `raftbox sync` on the same folder fails at once with a clear message;
- a folder is bound to one server and account on its first sync (stored in the index); syncing
  it with another account is refused (it would upload one account's files into another's);
- the max-delete check: a pass that would delete more than `max_delete_share` of the synced
  entries (and more than `max_delete_floor`) is refused, with the reason, before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from raftbox.backoff import Backoff
from raftbox.blocks.chunker import CDC, Chunking

from .config import Config
from .executor import Counters, Executor, Progress, clean_tmp
from .index import STATE_DIR, Index
from .limits import held_entries
from .localfs import local_limits
from .planner import OpKind, Plan, plan, settled
from .reconcile import reconcile
from .remote import (
    Remote,
    RemoteError,
    ServerUnavailable,
    follow_remote,
    printable,
    refresh_remote,
)
from .scanner import ScanResult, load_rules, scan
from .trees import Tree

LOCK_FILE = "lock"


class SyncError(Exception):
    """Why a folder cannot be synced at all (one line for the user)."""


@dataclass
class Options:
    max_delete_share: float = 0.5
    max_delete_floor: int = 10
    max_passes: int = 10
    unavailable_retry_s: float = 0.0  # keep retrying an unreachable server this long (0: don't)
    host: str = field(
        default_factory=lambda: os.environ.get("RAFTBOX_DEVICE_NAME") or socket.gethostname()
    )


@dataclass
class PassReport:
    plan: Plan
    scan: ScanResult
    ops_done: int = 0
    stopped: str | None = None
    unavailable: str | None = None
    settled: bool = False  # every op done, nothing deferred: no need for another pass


@dataclass
class Summary:
    """What a `sync` (or one round of `watch`) did."""

    counters: Counters = field(default_factory=Counters)
    passes: int = 0
    seconds: float = 0.0
    refused: str | None = None
    unavailable: str | None = None
    pending: int = 0  # operations still planned when the pass limit was reached
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def did_something(self) -> bool:
        c = self.counters
        return any((c.uploaded_files, c.downloaded_files, c.deleted_local, c.deleted_remote,
                    c.moved, c.folders, c.conflicts, c.messages))  # fmt: skip

    @property
    def ok(self) -> bool:
        return (
            self.refused is None
            and self.unavailable is None
            and not self.counters.errors
            and not self.pending
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "passes": self.passes,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            **asdict(self.counters),
            "refused": self.refused,
            "unavailable": self.unavailable,
            "pending": self.pending,
        }


def ssl_context(cfg: Config) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cfg.ca) if cfg.ca else ssl.create_default_context()


class _Throttled:
    """Sums (files, bytes) reports and passes them on at most every 100 ms (a progress bar
    update costs microseconds; a rescan makes one report per file)."""

    def __init__(self, fn: Callable[[int, int], None]) -> None:
        self.fn = fn
        self.files = self.nbytes = 0
        self.next = 0.0

    def __call__(self, files: int, nbytes: int) -> None:
        self.files += files
        self.nbytes += nbytes
        now = time.monotonic()
        if now >= self.next:
            self.next = now + 0.1
            self.flush()

    def flush(self) -> None:
        if self.files or self.nbytes:
            self.fn(self.files, self.nbytes)
            self.files = self.nbytes = 0


class SyncEngine:
    """Syncs `root` with the account of `cfg`. Use as `async with SyncEngine(...) as e:`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        cfg: Config,
        options: Options | None = None,
        progress: Progress | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.rng = rng if rng is not None else random.Random()  # jitter for `watch.watch`'s retries
        self.cfg = cfg
        self.opt = options or Options()
        self.progress = progress or Progress()
        self.index: Index | None = None
        self.remote: Remote | None = None
        self.chunking: Chunking = CDC
        self.cursor: str | None = None
        self.scan_started_ns: int | None = None
        self.remote_tree = Tree()  # as the last plan saw it
        self.rules = load_rules(self.root)
        self._told: set[tuple[str, str]] = set()  # skipped entries already reported
        self.limits = local_limits(self.root)
        self._lock_fd: int | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def __aenter__(self) -> SyncEngine:
        if not os.path.isdir(self.root):
            raise SyncError(f"{self.root}: not a folder")
        state = os.path.join(self.root, STATE_DIR)
        os.makedirs(state, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(os.path.join(state, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SyncError(
                f"{self.root}: another raftbox sync is running on this folder"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        try:
            self.index = Index(self.root)
            self.remote = Remote(self.cfg.server, self.cfg.token, ssl_context=ssl_context(self.cfg))
            await self._bind()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.remote is not None:
            await self.remote.aclose()
            self.remote = None
        if self.index is not None:
            self.index.close()
            self.index = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _bind(self) -> None:
        """Check (or, the first time, record) which server and account this folder syncs with,
        and learn the server's chunking (the scan cache is per chunking)."""
        assert self.index is not None and self.remote is not None
        try:
            acct = await self.remote.account()
            conf = await self.remote.native(self.remote.config)
        except ServerUnavailable as e:
            raise SyncError(f"cannot reach the server: {e}") from None
        except RemoteError as e:
            raise SyncError(str(e)) from None
        who = {"server": self.cfg.server, "account_id": acct.get("account_id")}
        bound = self.index.get_state("bound_to")
        if bound is None:
            self.index.set_state("bound_to", json.dumps(who))
        elif json.loads(bound).get("account_id") != who["account_id"]:
            was = json.loads(bound)
            raise SyncError(
                f"{self.root} is synced with account {was.get('account_id')} on "
                f"{was.get('server')}, not with {who['account_id']} (the account logged in "
                f"now); use another folder, or remove {STATE_DIR}/ to start it afresh"
            )
        ch = conf.get("chunking") or {}
        with contextlib.suppress(TypeError, ValueError):
            self.chunking = Chunking(ch["mode"], ch["min_bytes"], ch["avg_bytes"], ch["max_bytes"])
        tag = json.dumps([self.chunking.mode, self.chunking.min_bytes, self.chunking.avg_bytes,
                          self.chunking.max_bytes])  # fmt: skip
        if self.index.get_state("chunking") != tag:
            with self.index.batch():
                self.index.db.execute("DELETE FROM scan_cache")
                self.index.set_state("chunking", tag)

    # -- passes --------------------------------------------------------------------------------

    async def plan_pass(self) -> tuple[Plan, ScanResult]:
        """Refresh both sides and plan, without changing anything."""
        assert self.index is not None and self.remote is not None
        got, self.cursor = await follow_remote(self.index, self.remote)
        # Nothing left in flight and the trees agreed when the last pass ended, with neither
        # written since: the remote tree is not needed unless the scan finds a change.
        agreed = self.index.agreed() and not self.index.pending_any()
        remote_tree = None if agreed else got if got is not None else self.index.load_remote()
        if remote_tree is not None:
            await reconcile(self.root, self.index, self.remote, remote_tree)
        clean_tmp(self.root)  # after the reconciliation, which looks at them
        synced = self.index.load_synced()
        rules = load_rules(self.root)
        self.progress.start("scan", 0, 0)
        self.scan_started_ns = time.time_ns()
        tick = _Throttled(lambda f, b: self.progress.advance("scan", f, b))
        result = await asyncio.to_thread(
            scan, self.root, self.index, chunking=self.chunking, rules=rules, prefer=synced,
            progress=tick,
        )  # fmt: skip
        tick.flush()
        if "/" in result.unknown:
            why = dict(result.skipped).get("/", "cannot list it")
            raise SyncError(f"{self.root}: {why}; nothing was synced")
        if remote_tree is None:  # the remote tree is the synced one (`Index.agreed`)
            if (
                not result.unknown
                and not self.held(synced)
                and settled(result.tree, synced, synced)
            ):
                self.remote_tree, self.rules = synced, rules
                return Plan((), entries=len(synced)), result
            remote_tree = got if got is not None else self.index.load_remote()
        self.remote_tree = remote_tree
        held = self.held(remote_tree)
        result.skipped.extend((printable(path), why) for path, why, _ in held)
        if not held and not result.unknown and settled(result.tree, remote_tree, synced):
            # Nothing changed on either side since the trees last agreed (a no-op pass, or
            # the one that reads back its own uploads): the plan is empty, skip making it.
            self.index.set_agreed()
            self.rules = rules
            return Plan((), entries=len(synced)), result
        p = plan(
            result.tree,
            remote_tree,
            synced,
            host=self.opt.host,
            today=time.strftime("%Y-%m-%d"),
            max_delete_share=self.opt.max_delete_share,
            max_delete_floor=self.opt.max_delete_floor,
            ignore=rules,
            hold=[*result.unknown, *(path for path, _, valid in held if valid)],
        )
        self.rules = rules
        return p, result

    def held(self, remote_tree: Tree) -> list[tuple[str, str, bool]]:
        """(path, reason, valid) of the server's entries this client cannot represent here
        (see `limits`): held out of the plan, with whatever this side has at their paths
        (`valid`: the path is one this side could have; otherwise it is only reported)."""
        assert self.index is not None
        here = held_entries(remote_tree.nodes(), self.limits)
        return [*self.index.held_all(), *((p, why, True) for p, why in here)]

    async def _refresh(self) -> Tree:
        assert self.index is not None and self.remote is not None
        tree, self.cursor = await refresh_remote(self.index, self.remote)
        return tree

    async def one_pass(self, counters: Counters) -> PassReport:
        assert self.index is not None and self.remote is not None
        p, result = await self.plan_pass()
        rep = PassReport(p, result)
        for msg in p.messages:
            self.progress.message(msg)
        for rel, why in result.skipped:  # once per path and reason, not every pass
            if (rel, why) not in self._told:
                self._told.add((rel, why))
                counters.messages.append(f"not synced: {rel} ({why})")
                self.progress.message(f"not synced: {rel} ({why})")
        if p.refused is not None or not p.ops:
            return rep
        ex = Executor(
            self.root,
            self.index,
            self.remote,
            host=self.opt.host,
            today=time.strftime("%Y-%m-%d"),
            chunking=self.chunking,
            blocklists=result.blocklists,
            progress=self.progress,
            counters=counters,
            scan_started_ns=self.scan_started_ns,
            rules=self.rules,
            remote_before=self.remote_tree,
            refresh=self._refresh,
        )
        before = (counters.conflicts, counters.skipped, len(counters.errors))
        out = await ex.run(p.ops)
        rep.ops_done, rep.stopped, rep.unavailable = out.ops_done, out.stopped, out.unavailable
        after = (counters.conflicts, counters.skipped, len(counters.errors))
        # Twin renames and conflicted copies are uploaded by the next pass; anything skipped
        # or failed is retried by it. Otherwise this pass left nothing behind.
        rep.settled = (
            out.ops_done == len(p.ops)
            and before == after
            and not any(op.kind is OpKind.RENAME_TWIN for op in p.ops)
        )
        if out.stopped:
            self.progress.message(f"note: {out.stopped}; the next pass takes it up")
        return rep

    async def sync(self) -> Summary:
        """Passes until nothing is left to do (see the module doc)."""
        assert self.remote is not None
        s = Summary()
        t0 = time.monotonic()
        sent0, recv0 = self.remote.bytes_sent, self.remote.bytes_received
        retry = Backoff(random.Random(), 1.0, 15.0)
        first_failure: float | None = None
        try:
            passes = 0
            while passes < self.opt.max_passes:
                try:
                    rep = await self.one_pass(s.counters)
                    unavailable = rep.unavailable
                except ServerUnavailable as e:
                    rep, unavailable = None, str(e)
                if unavailable is not None:
                    now = time.monotonic()
                    if first_failure is None or (rep is not None and rep.ops_done):
                        first_failure = now  # the first failure, or one after some progress
                    if now - first_failure >= self.opt.unavailable_retry_s:
                        s.unavailable = unavailable
                        if rep is not None:
                            s.passes += 1
                        break
                    delay_s = retry.next_delay_s()
                    self.progress.message(
                        f"server unavailable ({unavailable}); trying again in {delay_s:.1f} s"
                    )
                    await asyncio.sleep(delay_s)  # back-off before the next attempt
                    continue
                first_failure = None
                retry.reset()
                passes += 1
                s.passes += 1
                s.pending = 0
                if rep.plan.refused is not None:
                    s.refused = rep.plan.refused
                    break
                if not rep.plan.ops or rep.settled:
                    break
                s.pending = len(rep.plan.ops) - rep.ops_done
        finally:
            s.seconds = time.monotonic() - t0
            s.bytes_sent = self.remote.bytes_sent - sent0
            s.bytes_received = self.remote.bytes_received - recv0
            if self.index is not None:
                self.index.set_state("last_sync", json.dumps({"at": time.time(), **s.as_json()}))
        return s
