"""`MetaStore`: the metadata state machine, on SQLite — the apply dispatcher.

Theory of operation
-------------------
`apply(index, command)` runs one raft entry in ONE SQLite transaction that also records the
applied index and the exactly-once client session table, so after a crash a restart resumes at
`applied_index()` and the Raft log replays only what is missing (which is why
`synchronous=NORMAL` is enough: the Raft log is the durable record). Inside the transaction the
command itself runs under a SAVEPOINT (`context.atomic`): a command that fails (a `MetaError`
result) is rolled back and changes nothing but the session table (which remembers the error as
the request's answer) and the applied index. A batch (`CommitBatch`, `FinishBatch`) nests one
savepoint per item.

Determinism: apply reads no clock and no randomness. Each entry gets an `ApplyContext` (its raft
index, the leader's stamp `Command.stamp_ms`, the cluster secret, a position counter, the
namespaces it found to exist), and the command's function (`HANDLERS`) reads time, ids and
revs from it and writes through its connection only: see `context` for how ids and revs
derive from the index and the position of the item within the entry. An account's id and home
namespace derive from the index too (`accounts`).

Where each concern lives (`raftbox.meta`):

- `schema`: the tables, what each row means, migrations; `rows`: row types and lookups;
- `context`: the per-entry `ApplyContext` and the savepoint around a command;
- `writes`: commit, folders, delete, move/copy, restore; `sessions`: upload sessions;
  `accounts`: accounts and tokens; `gcstate`: block rights and the GC's replicated state;
  `jobs`: write batches and async jobs' kept results;
- `queries`: the read queries (`MetaQueries`, this class's base): listings, cursors, revisions;
- `snapshot`: snapshot images (the only files the store touches besides its database);
- `clients`: the exactly-once client session table, kept in the database;
- this module: the dispatcher — the transaction, the applied index.

Not thread-safe: use one thread at a time (the node's event loop).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from ..raft.sessions import Command, SessionExpired
from . import (
    accounts,
    clients,
    gcstate,
    jobs,
    links,
    oauth,
    quota,
    schema,
    sessions,
    sharing,
    snapshot,
    webcmds,
    webstate,
    writes,
)
from . import commands as C
from .commands import (
    SESSION_TTL_MS,
    AddToken,
    CommitBatch,
    CommitFile,
    Copy,
    CreateAccount,
    CreateFolder,
    Delete,
    FinishBatch,
    GcCondemn,
    GcRelease,
    InitCluster,
    MetaError,
    Move,
    RecordUpload,
    RemoveAccount,
    Restore,
    RevokeToken,
    RevokeTokens,
    RunJob,
    SessionAppend,
    SessionFinish,
    SessionStart,
    SetDisabled,
    SetQuota,
    SetStoreMarker,
    WriteBatch,
    decode_command,
)
from .context import ApplyContext, atomic
from .gcstate import gc_mark_db
from .queries import ListPage, MetaQueries, RevisionList
from .rows import format_ts
from .schema import get_kv, set_kv

__all__ = [
    "DAY_MS",
    "HANDLERS",
    "ListPage",
    "MetaStore",
    "RevisionList",
    "format_ts",
    "gc_mark_db",
]

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000

# The function that applies each command: (ApplyContext, command) -> result, or raises `Fail`.
HANDLERS: dict[type, Callable[[ApplyContext, Any], Any]] = {
    InitCluster: accounts.init_cluster,
    CreateAccount: accounts.create_account,
    AddToken: accounts.add_token,
    RevokeToken: accounts.revoke_token,
    RevokeTokens: accounts.revoke_tokens,
    SetDisabled: accounts.set_disabled,
    RemoveAccount: accounts.remove_account,
    SetQuota: quota.set_quota,
    SetStoreMarker: gcstate.set_store_marker,
    CommitFile: writes.commit,
    CommitBatch: writes.commit_batch,
    CreateFolder: writes.create_folder,
    Delete: writes.delete,
    Move: writes.relocate,
    Copy: writes.relocate,
    Restore: writes.restore,
    SessionStart: sessions.session_start,
    SessionAppend: sessions.session_append,
    SessionFinish: sessions.session_finish,
    FinishBatch: sessions.finish_batch,
    WriteBatch: jobs.write_batch,
    RecordUpload: gcstate.record_upload,
    GcCondemn: gcstate.gc_condemn,
    GcRelease: gcstate.gc_release,
    C.CreateLink: links.create_link,
    C.ModifyLink: links.modify_link,
    C.RevokeLink: links.revoke_link,
    **oauth.HANDLERS,
    webcmds.SetAuth: webstate.set_auth,
    webcmds.StartWebSession: webstate.start_session,
    webcmds.EndWebSession: webstate.end_session,
}
HANDLERS.update(sharing.HANDLERS)  # shared folders: `raftbox.meta.sharing`


class MetaStore(MetaQueries):
    """The state machine (`raft.node.StateMachine`) plus the read queries of the meta role
    (`queries.MetaQueries`)."""

    def __init__(
        self,
        path: str | None = None,
        *,
        session_ttl_ms: int = 3_600_000,
        revisions_keep: int = 100,
        revisions_keep_ms: int = 30 * DAY_MS,
        upload_session_ttl_ms: int = SESSION_TTL_MS,
    ) -> None:
        self.path = path
        self.revisions_keep = revisions_keep
        self.revisions_keep_ms = revisions_keep_ms
        self.upload_session_ttl_ms = upload_session_ttl_ms
        self._session_ttl_ms = session_ttl_ms
        self._db = sqlite3.connect(
            path or ":memory:",
            isolation_level=None,
            check_same_thread=False,
            cached_statements=512,
        )
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        schema.create(self._db)
        self._load()

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The store's SQLite connection, for tests and inspection tools: read it, never write
        (every write goes through `apply`)."""
        return self._db

    def secret(self) -> bytes:
        return self._secret

    # -- the StateMachine protocol -------------------------------------------------------------
    def applied_index(self) -> int:
        return self._applied

    def apply_noop(self, index: int) -> None:
        if index <= self._applied:
            return
        self._db.execute("BEGIN")
        try:
            set_kv(self._db, "applied", index)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._applied = index

    def apply(self, index: int, command: Command) -> Any:
        if index <= self._applied:
            log.warning("entry %d applied again (applied index %d): skipped", index, self._applied)
            return MetaError(["internal_error"], {"reason": "already applied"})
        ctx = ApplyContext(
            self._db,
            index,
            command.stamp_ms,
            self._secret,
            self.revisions_keep,
            self.revisions_keep_ms,
            self.upload_session_ttl_ms,
        )
        st = self.sessions
        cid = command.client_id
        had = cid in st.sessions
        n_before = len(st.sessions)
        ran = False

        def run(payload: bytes) -> Any:
            nonlocal ran
            ran = True
            return self._run(ctx, payload)

        self._db.execute("BEGIN")
        try:
            result = st.apply(command, run)
            if isinstance(result, SessionExpired):
                result = MetaError(["client_session_expired"], {"reason": str(result)})
            clients.persist(self._db, st, cid, command.seq, ran, result, had, n_before)
            set_kv(self._db, "applied", index)
            self._db.execute("COMMIT")
        except BaseException:
            # Only a bug or a broken disk gets here (commands return their errors): the
            # in-memory session table may now be ahead of the database, so stop.
            self._db.execute("ROLLBACK")
            raise
        self._applied = index
        if not self._secret:  # InitCluster wrote it: from the next entry on, ids use it
            self._secret = bytes(get_kv(self._db, "secret", b"") or b"")
        return result

    def snapshot(self) -> bytes:
        """The image of the store now, made on the caller's thread (see `begin_snapshot`)."""
        return snapshot.image(self._db)

    def begin_snapshot(self) -> Callable[[], bytes]:
        """Pin the state as it is now, at `applied_index()`; return a function that makes its
        image (what `restore` takes: the same rows `snapshot()` would have held now) later, in
        any ONE thread, once — while `apply` goes on in this one (raft.node: "Snapshots").
        A file-backed store reads it through a second connection (`snapshot.begin_image`). An
        in-memory store has no second connection that could see its data: it is serialized
        here, on the caller's thread (tests and small stores only)."""
        if self.path is None:
            data = self.snapshot()
            return lambda: data
        return snapshot.begin_image(self.path, self._applied)

    def restore(self, data: bytes) -> None:
        snapshot.load(self._db, data)
        schema.create(self._db)
        self._load()

    # -- loading the small state ------------------------------------------------------------
    def _load(self) -> None:
        self._applied = int(get_kv(self._db, "applied", 0))
        self._secret = bytes(get_kv(self._db, "secret", b"") or b"")
        self.sessions = clients.load(self._db, self._session_ttl_ms)

    # -- running one command ---------------------------------------------------------------
    def _run(self, ctx: ApplyContext, payload: bytes) -> Any:
        try:
            cmd = decode_command(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return MetaError(["invalid_command"], {"reason": str(e)})
        if not self._secret and not isinstance(cmd, InitCluster):
            return MetaError(["not_initialized"])
        return self._dispatch(ctx, cmd)

    def _dispatch(self, ctx: ApplyContext, cmd: Any) -> Any:
        if isinstance(cmd, RunJob):  # runs its inner command through here (`jobs`)
            return jobs.run_job(ctx, cmd, lambda inner: self._dispatch(ctx, inner))
        handler = HANDLERS[type(cmd)]
        if isinstance(cmd, CommitBatch | FinishBatch | WriteBatch):
            return handler(ctx, cmd)  # per-item savepoints inside
        return atomic(ctx, lambda: handler(ctx, cmd), too_many=_too_many_tag(cmd))


def _too_many_tag(cmd: Any) -> str:
    return (
        "too_many_files" if isinstance(cmd, Move | Copy | Delete) else "too_many_write_operations"
    )
