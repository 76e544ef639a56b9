"""A tiny driver: feed MetaCommands to a MetaStore as a Raft node would."""

from __future__ import annotations

import hashlib
import sqlite3

from raftbox.meta.commands import (
    BlockRef,
    CommitFile,
    CreateAccount,
    InitCluster,
    MetaCommand,
    encode_command,
)
from raftbox.meta.fsm import MetaStore
from raftbox.raft.sessions import Command

T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
SECRET = b"0123456789abcdef0123456789abcdef"


def block(data: bytes) -> BlockRef:
    return BlockRef(hashlib.sha256(data).hexdigest(), len(data))


def content_hash(data: bytes) -> str:
    w = 4 * 1024 * 1024
    digests = b"".join(hashlib.sha256(data[i : i + w]).digest() for i in range(0, len(data), w))
    return hashlib.sha256(digests).hexdigest()


class Driver:
    """Applies commands with increasing raft indexes and stamps; client 7 (exactly-once)."""

    def __init__(self, store: MetaStore | None = None, *, client_id: int = 7) -> None:
        self.store = store if store is not None else MetaStore()
        self.index = self.store.applied_index()
        self.now_ms = T0_MS
        self.client_id = client_id
        self.seq = 0
        self.log: list[tuple[int, Command]] = []

    def apply(self, cmd: MetaCommand, *, advance_ms: int = 1000):
        self.seq += 1
        self.now_ms += advance_ms
        return self.apply_raw(
            Command(self.client_id, self.seq, self.seq, self.now_ms, encode_command(cmd))
        )

    def advance(self, ms: int) -> None:
        """Jump stamped time; a fresh client session (the old one would expire)."""
        self.now_ms += ms
        self.client_id += 1
        self.seq = 0

    def apply_raw(self, c: Command):
        self.index += 1
        self.log.append((self.index, c))
        return self.store.apply(self.index, c)

    def setup(self) -> int:
        """Init the cluster and create one account; return its home namespace."""
        assert self.apply(InitCluster(SECRET)) is True
        acct = self.apply(CreateAccount("a@example.com", "Alice", b"tok-a"))
        return acct.home_ns

    def put(self, ns: int, path: str, data: bytes = b"x", **kw):
        blocks = [block(data)] if data else []
        kw.setdefault("uploaded", True)
        return self.apply(CommitFile(ns, path, blocks, len(data), content_hash(data), **kw))


def content_dump(store: MetaStore) -> dict:
    """Everything but the bookkeeping that any applied command changes."""
    d = store.dump()
    for t in ("kv", "client_sessions", "client_results"):
        d.pop(t)
    return d


class SqliteWork:
    """Counts the work SQLite does inside a `with` block, without a clock.

    SQLite calls a progress handler every `ops` virtual-machine instructions; every row a
    statement visits costs instructions, so `units` grows with the rows scanned, and is the
    same on every run and every machine. Tests compare it at n and 2n to show that work grows
    linearly (or stays flat), which a wall-clock limit cannot show reliably.
    """

    def __init__(self, store: MetaStore, ops: int = 16) -> None:
        self._db: sqlite3.Connection = store.db
        self._ops = ops
        self.units = 0
        self._seen = 0  # units at the last delta()

    def _tick(self) -> int:
        self.units += 1
        return 0  # non-zero would abort the statement

    def __enter__(self) -> SqliteWork:
        self._db.set_progress_handler(self._tick, self._ops)
        return self

    def __exit__(self, *exc) -> None:
        self._db.set_progress_handler(None, 0)

    def delta(self) -> int:
        """The units since the last call (per-page work in a loop)."""
        seen, self._seen = self._seen, self.units
        return self.units - seen
