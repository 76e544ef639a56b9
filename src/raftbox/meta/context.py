"""`ApplyContext`: what one raft entry's command may know while it is applied, and the savepoint
that makes a failed command change nothing.

Contract: the apply dispatcher (`fsm.MetaStore.apply`) makes one `ApplyContext` per entry and
passes it to the write functions (`writes`, `sessions`, `accounts`, `gcstate`); they read time,
ids and revisions from it and nothing else — no clock, no randomness, no instance state — so
every replica applying the same entry writes the same rows. The context is frozen: its index,
stamp, secret and retention limits cannot change while the entry runs. Two things in it do
advance within the entry, each owned by the context and changed only through its methods:

- the position counter: every item an entry writes takes the next `pos` (0, 1, …);
  rev = f"{index:012x}{pos:04x}", id = "id:" + b64url(HMAC(secret, f"{index}:{pos}")[:16]).
  An entry writes at most `MAX_POS` + 1 items (`TooMany` past it);
- the namespaces known to exist (`check_ns`), a cache for this entry only (`RemoveAccount`
  forgets the namespace it removes);
- while a `CommitBatch` runs, its `BatchMemo` (`ctx.batch`, else None): what the batch's items
  share, so that each item does not ask SQLite again (`raftbox.meta.writes.commit_batch`).

`atomic(ctx, fn)` runs one command (or one item of a batch) under a SAVEPOINT and rolls it back
if it fails: a `Fail`, a `TooMany`, or a bug (logged; every replica fails it the same way). A
local SQLite failure (disk, I/O) is not the command's: it propagates and stops the process, so
that replicas cannot diverge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .commands import MetaError
from .rows import Fail, format_ts, ns_exists

log = logging.getLogger(__name__)

MAX_POS = 0xFFFF
MAX_BATCH_ENTRIES = 10_000


class TooMany(Exception):
    """The entry ran out of positions (revs/ids) — too many items in one raft entry."""


class BatchMemo:
    """What the items of one `CommitBatch` share (`writes.commit_batch` owns it). Only facts
    that no item of a CommitBatch can undo are kept, so every item gets the answer it would
    have read from SQLite itself, and every replica writes the same rows:

    - `folders`: (ns, key) -> display of a folder an item read as existing (commits only
      create folders; a folder an item created is not kept: the item may still roll back);
    - `has`: ns -> block ids the namespace already referenced when the batch began (commits
      only add ns_blocks rows); an id not in it is asked of SQLite as before;
    - `quota`: ns -> its owner's quota row (commits do not change quotas or owners);
    - `journal`: the journal rows of the items so far, written together when the batch ends
      (an item that fails drops its own); nothing in a commit reads the journal;
    - `grants`: likewise the block rights the items so far gave (`gcstate.grant`), and
      `granted` (ns -> ids) those of the items that succeeded, which the block-rights check of
      the later items counts as SQLite would have.
    """

    __slots__ = ("folders", "granted", "grants", "has", "journal", "quota")

    def __init__(self) -> None:
        self.folders: dict[tuple[int, str], str] = {}
        self.has: dict[int, set[str]] = {}
        self.quota: dict[int, Any] = {}
        self.journal: list[tuple[int, str, str, str, int]] = []
        self.grants: list[tuple[int, str, int]] = []
        self.granted: dict[int, set[str]] = {}


class _Counters:
    """The per-entry state that advances: the next position, the savepoint depth, the batch
    memo of a running `CommitBatch`."""

    __slots__ = ("batch", "depth", "pos")

    def __init__(self) -> None:
        self.pos = 0
        self.depth = 0
        self.batch: BatchMemo | None = None


@dataclass(frozen=True)
class ApplyContext:
    """One raft entry being applied (see the module docstring)."""

    db: sqlite3.Connection
    index: int  # the entry's raft index
    now_ms: int  # the leader's stamp (`Command.stamp_ms`): the only time a command sees
    secret: bytes  # the cluster secret (ids, account ids); empty before InitCluster
    revisions_keep: int
    revisions_keep_ms: int
    upload_session_ttl_ms: int
    known_ns: set[int] = field(default_factory=set)
    _counters: _Counters = field(default_factory=_Counters)

    @cached_property
    def now(self) -> str:
        """`now_ms` as a Dropbox timestamp (server_modified of what this entry writes)."""
        return format_ts(self.now_ms)

    @property
    def batch(self) -> BatchMemo | None:
        """The running `CommitBatch`'s memo, else None (see `BatchMemo`)."""
        return self._counters.batch

    def next_pos(self) -> int:
        c = self._counters
        if c.pos > MAX_POS:
            raise TooMany()
        p = c.pos
        c.pos += 1
        return p

    def rev(self, pos: int) -> str:
        return f"{self.index:012x}{pos:04x}"

    def new_id(self, pos: int) -> str:
        mac = hmac.new(self.secret, f"{self.index}:{pos}".encode(), hashlib.sha256).digest()
        return "id:" + b64(mac[:16])


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def check_ns(ctx: ApplyContext, ns: int) -> None:
    """Fail with invalid_command unless namespace `ns` exists."""
    if ns in ctx.known_ns:
        return
    if not ns_exists(ctx.db, ns):
        raise Fail("invalid_command", reason=f"unknown namespace {ns}")
    ctx.known_ns.add(ns)  # for this entry (RemoveAccount forgets it)


def atomic(
    ctx: ApplyContext, fn: Callable[[], Any], too_many: str = "too_many_write_operations"
) -> Any:
    """Run `fn` under a savepoint; roll it back if it fails. Returns its result or error."""
    c = ctx._counters
    sp = f"sp{c.depth}"
    ctx.db.execute(f"SAVEPOINT {sp}")
    c.depth += 1
    try:
        result = fn()
    except Fail as f:
        result = f.error
    except TooMany:
        result = MetaError([too_many])
    except Exception as e:
        if isinstance(e, sqlite3.Error) and not isinstance(
            e, sqlite3.IntegrityError | sqlite3.ProgrammingError
        ):
            raise  # a local failure (disk, I/O), not the command's: replicas would diverge
        # A bug, caught so that one bad command cannot stop the cluster: every replica
        # fails it the same way and rolls it back.
        log.exception("command failed at index %d", ctx.index)
        result = MetaError(["internal_error"], {"reason": type(e).__name__})
    finally:
        c.depth -= 1
    if isinstance(result, MetaError):
        ctx.db.execute(f"ROLLBACK TO {sp}")
    ctx.db.execute(f"RELEASE {sp}")
    return result
