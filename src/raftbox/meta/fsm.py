"""`MetaStore`: the metadata state machine, on SQLite.

Theory of operation
-------------------
`apply(index, command)` runs one raft entry in ONE SQLite transaction that also records the
applied index and the exactly-once client session table, so after a crash a restart resumes at
`applied_index()` and the Raft log replays only what is missing (which is why
`synchronous=NORMAL` is enough: the Raft log is the durable record). Inside the transaction the
command itself runs under a SAVEPOINT: a command that fails (a `MetaError` result) is rolled back
and changes nothing but the session table (which remembers the error as the request's answer) and
the applied index. A batch (`CommitBatch`, `FinishBatch`) nests one savepoint per item.

Determinism: apply reads no clock and no randomness. Time is `Command.stamp_ms` (stamped by the
leader); every item written by an entry takes the next `pos` (0, 1, …) within the entry:
rev = f"{index:012x}{pos:04x}", id = "id:" + b64url(HMAC(secret, f"{index}:{pos}")[:16]),
account id = "dbid:" + b64url(HMAC(secret, f"account:{index}"))[:35], home namespace = index.
An entry writes at most 65,536 items (a larger folder copy fails with `too_many_files`).

Tables (all keyed by namespace where relevant; `key` = `paths.Path.key`):

- kv(k, v): "applied", "secret", "sessions" (the client table's clock), "schema",
  "store_marker" (the id of the block store's marker block: `SetStoreMarker`).
- accounts(account_id, email_key, email, display_name, home_ns, created_ms, disabled);
  tokens(token_hash, account_id) — hashes only; namespaces(ns, owner, journal_end, last_index).
  `RemoveAccount` deletes the account, its tokens and its namespace with every row of it
  (entries, revisions, journal, ns_blocks, upload sessions): a namespace id is never reused
  (it is the raft index of its CreateAccount), so nothing can refer to it again by mistake.
- entries(ns, key, parent_key, name, display, kind, id, rev, deleted_ms): the current state of
  every path: kind 1 file (rev = current revision), 2 folder, 3 deleted (keeps the last id/rev
  and the deletion time). Live entries always have live folders as ancestors, and a descendant's
  `display` always starts with its parent's `display` (moves rewrite the subtree).
- revisions(ns, rev, id, key, display, size, content_hash, client_modified, server_modified,
  stamp_ms, blocks, symlink, executable): every file version with its blocklist (msgpack list
  of BlockRef) and attributes (`symlink`: the target of a symlink, else NULL; `executable`
  0/1; see `commands.CommitFile`). A file keeps its newest `revisions_keep` versions and every
  version younger than `revisions_keep_ms`. Copy, move and restore copy the attributes along
  with the blocks.
- journal(ns, pos, key, parent_key, display, idx, kind): every change to a namespace, numbered
  1, 2, … per namespace; a cursor is a position in it.
- ns_blocks(ns, block_id, size, last_ms, last_idx): blocks a namespace has uploaded or
  references — its right to reference them (the Dropship guard) — with the stamp and raft index
  of the last command that uploaded or referenced them (garbage collection reads both).
- gc_condemned(block_id, run_id), gc_deleted(block_id, gen, ms), kv "gc_gen", "gc_floor",
  "gc_lease": the garbage collector's replicated half (`raftbox.blocks.gc`, and `GcCondemn`).
- upload_sessions, upload_pieces: replicated upload sessions, so any blockserver continues one.
- client_sessions, client_results: `raft.sessions.SessionTable`, persisted incrementally.

Cursor state (`commands.CursorState`, from `ListPage.cursor_state` or `get_latest_cursor`; the
service adds account and namespace and signs it): (path_key, recursive, include_deleted,
position, resume). `resume` None is the journal phase: "send me the changes after journal
position P"; a key is the listing phase: "the first listing, started at journal position P, has
sent every entry with key ≤ resume". A listing pages through the current tree in
key order (a parent's key sorts before its children's); when it ends the cursor moves to the
journal phase at the position where the listing started, so changes made while it paged are
replayed. `continue` in the journal phase returns, for every path changed in the page, its
CURRENT state (FileMeta / FolderMeta, or DeletedMeta if gone) in order of its last change; a
deleted folder is reported alone (its children are implied). A folder that was moved or copied
journals every item of its new subtree.

Schema changes: a store made by an older version is brought up to date when opened or restored
from a snapshot (`_migrate`: columns added with the value every old row means — `ns_blocks`
times 0, `revisions.symlink` NULL and `executable` 0,
`accounts.disabled` 0), the same on every replica, so a migrated
replica and a fresh one hold the same rows.

Not thread-safe: use one thread at a time (the node's event loop).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from ..raft.sessions import Command, SessionExpired, SessionTable
from . import paths, values
from .commands import (
    BLOCK_WINDOW_BYTES,
    MAX_FILE_BYTES,
    SESSION_TTL_MS,
    AccountInfo,
    AddToken,
    BlockRef,
    CommitBatch,
    CommitFile,
    Copy,
    Count,
    CreateAccount,
    CreateFolder,
    CursorState,
    Delete,
    DeletedMeta,
    FileMeta,
    FinishBatch,
    FolderMeta,
    GcCondemn,
    GcRelease,
    GcResult,
    InitCluster,
    Meta,
    MetaError,
    Move,
    RecordUpload,
    RemoveAccount,
    Restore,
    RevokeToken,
    RevokeTokens,
    SessionAppend,
    SessionFinish,
    SessionPiece,
    SessionStart,
    SessionState,
    SetDisabled,
    SetStoreMarker,
    decode_command,
    decode_result,
    dropbox_content_hash,
    symlink_blocks_problem,
    symlink_target_problem,
)
from .paths import MalformedPath, Path

log = logging.getLogger(__name__)

FILE, FOLDER, DELETED = 1, 2, 3
MAX_POS = 0xFFFF
MAX_BATCH_ENTRIES = 10_000
LIST_LIMIT_MAX = 2000
AUTORENAME_MAX_TRIES = 10_000
DAY_MS = 24 * 3600 * 1000
SCHEMA_VERSION = 1
GC_DELETED_KEEP_MS = 3600 * 1000

_HEX64 = re.compile(r"[0-9a-f]{64}")
_blocks_enc = msgspec.msgpack.Encoder()
_blocks_dec = msgspec.msgpack.Decoder(list[BlockRef])
_digests_dec = msgspec.msgpack.Decoder(list[bytes] | None)
_result_enc = msgspec.msgpack.Encoder()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
  account_id TEXT PRIMARY KEY, email_key TEXT NOT NULL UNIQUE, email TEXT NOT NULL,
  display_name TEXT NOT NULL, home_ns INTEGER NOT NULL, created_ms INTEGER NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
  token_hash BLOB PRIMARY KEY, account_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_account ON tokens (account_id);
CREATE TABLE IF NOT EXISTS namespaces (
  ns INTEGER PRIMARY KEY, owner TEXT NOT NULL,
  journal_end INTEGER NOT NULL DEFAULT 0, last_index INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS namespaces_changed ON namespaces (last_index);
CREATE TABLE IF NOT EXISTS entries (
  ns INTEGER NOT NULL, key TEXT NOT NULL, parent_key TEXT NOT NULL, name TEXT NOT NULL,
  display TEXT NOT NULL, kind INTEGER NOT NULL, id TEXT, rev TEXT, deleted_ms INTEGER,
  PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_parent ON entries (ns, parent_key, key);
CREATE INDEX IF NOT EXISTS entries_id ON entries (ns, id);
CREATE TABLE IF NOT EXISTS revisions (
  ns INTEGER NOT NULL, rev TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
  display TEXT NOT NULL, size INTEGER NOT NULL, content_hash TEXT NOT NULL,
  client_modified TEXT NOT NULL, server_modified TEXT NOT NULL, stamp_ms INTEGER NOT NULL,
  blocks BLOB NOT NULL, symlink TEXT, executable INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (ns, rev)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revisions_id ON revisions (ns, id, rev);
CREATE INDEX IF NOT EXISTS revisions_key ON revisions (ns, key, rev);
CREATE TABLE IF NOT EXISTS journal (
  ns INTEGER NOT NULL, pos INTEGER NOT NULL, key TEXT NOT NULL, parent_key TEXT NOT NULL,
  display TEXT NOT NULL, idx INTEGER NOT NULL, kind INTEGER NOT NULL,
  PRIMARY KEY (ns, pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ns_blocks (
  ns INTEGER NOT NULL, block_id TEXT NOT NULL, size INTEGER NOT NULL,
  last_ms INTEGER NOT NULL DEFAULT 0, last_idx INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (ns, block_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gc_condemned (
  block_id TEXT PRIMARY KEY, run_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gc_condemned_run ON gc_condemned (run_id, block_id);
CREATE TABLE IF NOT EXISTS gc_deleted (
  block_id TEXT PRIMARY KEY, gen INTEGER NOT NULL, ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gc_deleted_ms ON gc_deleted (ms, block_id);
CREATE TABLE IF NOT EXISTS upload_sessions (
  session_id TEXT PRIMARY KEY, ns INTEGER NOT NULL, concurrent INTEGER NOT NULL,
  started_ms INTEGER NOT NULL, closed INTEGER NOT NULL, length INTEGER NOT NULL, total INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS upload_sessions_started ON upload_sessions (started_ms, session_id);
CREATE TABLE IF NOT EXISTS upload_pieces (
  session_id TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
  blocks BLOB NOT NULL, digests BLOB NOT NULL,
  PRIMARY KEY (session_id, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS client_sessions (
  client_id INTEGER PRIMARY KEY, last_ms INTEGER NOT NULL, floor INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_results (
  client_id INTEGER NOT NULL, seq INTEGER NOT NULL, result BLOB NOT NULL,
  PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
"""

_E_COLS = "key, parent_key, name, display, kind, id, rev, deleted_ms"
# an entry joined with its current revision: enough to build its Meta
_M_COLS = (
    "e.key, e.name, e.display, e.kind, e.id, e.rev, "
    "r.size, r.content_hash, r.client_modified, r.server_modified, r.symlink, r.executable"
)
_M_FROM = "entries e LEFT JOIN revisions r ON r.ns = e.ns AND r.rev = e.rev AND e.kind = 1"
_R_COLS = (
    "rev, id, key, display, size, content_hash, client_modified, server_modified, stamp_ms, "
    "blocks, symlink, executable"
)


class _E(NamedTuple):
    key: str
    parent_key: str
    name: str
    display: str
    kind: int
    id: str | None
    rev: str | None
    deleted_ms: int | None


class _R(NamedTuple):
    rev: str
    id: str
    key: str
    display: str
    size: int
    content_hash: str
    client_modified: str
    server_modified: str
    stamp_ms: int
    blocks: bytes
    symlink: str | None
    executable: int


class ListPage(NamedTuple):
    """One page of `list_folder`/`continue`. Its cursor is `cursor_state` (sign it and pass it
    back to `list_folder_continue(ns, state)`), or equivalently `path_key` + `state`."""

    entries: list[Meta]
    position: int  # journal position (where the listing started, or changes sent up to)
    has_more: bool
    resume: str | None  # listing phase: the last key sent; None: journal phase
    path_key: str  # the listed folder's key ("" = root), for the cursor
    recursive: bool = False
    include_deleted: bool = False

    @property
    def state(self) -> int | tuple[int, str]:
        return self.position if self.resume is None else (self.position, self.resume)

    @property
    def cursor_state(self) -> CursorState:
        return CursorState(
            self.path_key, self.recursive, self.include_deleted, self.position, self.resume
        )


class RevisionList(NamedTuple):
    is_deleted: bool
    server_deleted: str | None
    entries: list[FileMeta]  # newest first
    has_more: bool


class _Fail(Exception):
    """Abort the running command (its savepoint is rolled back) with this error."""

    def __init__(self, *tags: str, **extra: Any) -> None:
        super().__init__("/".join(tags))
        self.error = MetaError(list(tags), extra)


class _TooMany(Exception):
    """The entry ran out of positions (revs/ids) — too many items in one raft entry."""


def _check_relocated(src: _E, to: Path, rows: list[_E]) -> None:
    """A move or copy must not carry an entry of the subtree past the bounds of a new path
    (`paths.PATH_MAX_BYTES`, `paths.PATH_MAX_DEPTH`): `to/malformed_path` if it would. Only
    growth is checked, so a subtree stored before the bounds existed can still move up."""
    more_bytes = len(to.display.encode()) - len(src.display.encode())
    more_depth = to.display.count("/") - src.display.count("/")
    if more_bytes <= 0 and more_depth <= 0:
        return
    for e in rows:
        if (
            len(e.display.encode()) + more_bytes > paths.PATH_MAX_BYTES
            or e.display.count("/") + more_depth > paths.PATH_MAX_DEPTH
        ):
            raise _Fail("to", "malformed_path")


def format_ts(ms: int) -> str:
    """`%Y-%m-%dT%H:%M:%SZ` of a stamped time (a pure conversion, not a clock read)."""
    t = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _valid_ts(s: str) -> bool:
    """A storable client_modified: the format and the range of `raftbox.meta.values`."""
    return values.timestamp_problem(s) is None


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


class MetaStore:
    """The state machine (`raft.node.StateMachine`) plus the read queries of the meta role."""

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
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._index = 0
        self._pos = 0
        self._now_ms = 0
        self._depth = 0
        self._now_str: str | None = None
        self._known_ns: set[int] = set()
        self._load()

    def close(self) -> None:
        self._db.close()

    # -- the StateMachine protocol -------------------------------------------------------------
    def applied_index(self) -> int:
        return self._applied

    def apply_noop(self, index: int) -> None:
        if index <= self._applied:
            return
        self._db.execute("BEGIN")
        try:
            self._set_kv("applied", index)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._applied = index

    def apply(self, index: int, command: Command) -> Any:
        if index <= self._applied:
            log.warning("entry %d applied again (applied index %d): skipped", index, self._applied)
            return MetaError(["internal_error"], {"reason": "already applied"})
        self._index, self._pos, self._now_ms = index, 0, command.stamp_ms
        self._now_str = None
        self._known_ns = set()
        st = self.sessions
        cid = command.client_id
        had = cid in st.sessions
        n_before = len(st.sessions)
        ran = False

        def run(payload: bytes) -> Any:
            nonlocal ran
            ran = True
            return self._run(payload)

        self._db.execute("BEGIN")
        try:
            result = st.apply(command, run)
            if isinstance(result, SessionExpired):
                result = MetaError(["client_session_expired"], {"reason": str(result)})
            self._persist_client(cid, command.seq, ran, result, had, n_before)
            self._set_kv("applied", index)
            self._db.execute("COMMIT")
        except BaseException:
            # Only a bug or a broken disk gets here (commands return their errors): the
            # in-memory session table may now be ahead of the database, so stop.
            self._db.execute("ROLLBACK")
            raise
        self._applied = index
        return result

    def snapshot(self) -> bytes:
        """The image of the store now, made on the caller's thread (see `begin_snapshot`)."""
        data = bytearray(self._db.serialize())
        if len(data) > 19:
            data[18] = data[19] = 1  # legacy journal mode: a WAL image will not deserialize
        return bytes(data)

    def begin_snapshot(self) -> Callable[[], bytes]:
        """Pin the state as it is now, at `applied_index()`; return a function that makes its
        image (what `restore` takes: the same rows `snapshot()` would have held now) later, in
        any ONE thread, once — while `apply` goes on in this one (raft.node: "Snapshots").

        A file-backed store opens a second, read-only connection and starts a read transaction
        on it here, between two applies (WAL: the reader keeps seeing the database as of that
        commit; the writer does not wait for it, and checkpoints stop short of what it reads).
        The function copies that state with SQLite's backup API into a temporary file next to
        the database (the page copy runs without the GIL, so the event loop keeps running),
        reads the file, ends the transaction and deletes the file. An in-memory store has no
        second connection that could see its data: it is serialized here, on the caller's
        thread (tests and small stores only).
        """
        if self.path is None:
            data = self.snapshot()
            return lambda: data
        db = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("BEGIN")
            row = db.execute("SELECT v FROM kv WHERE k = 'applied'").fetchone()  # pins it
            pinned = 0 if row is None else int(row[0])
        except BaseException:
            db.close()
            raise
        if pinned != self._applied:
            db.close()
            raise AssertionError(f"snapshot pinned index {pinned}, applied {self._applied}")
        directory, name = os.path.split(self.path)
        used = False

        def read_image() -> bytes:
            nonlocal used
            assert not used, "a snapshot image is read once"
            used = True
            fd, tmp = tempfile.mkstemp(prefix=name + ".snapshot-", suffix=".tmp", dir=directory)
            os.close(fd)
            try:
                dst = sqlite3.connect(tmp, isolation_level=None)
                try:
                    db.backup(dst)  # in db's read transaction: the pinned state
                finally:
                    dst.close()
                with open(tmp, "r+b", buffering=0) as f:
                    f.seek(18)
                    f.write(b"\x01\x01")  # legacy journal mode, as `snapshot()`
                    f.seek(0)
                    return f.read()
            finally:
                db.close()
                os.unlink(tmp)

        return read_image

    def restore(self, data: bytes) -> None:
        src = sqlite3.connect(":memory:")
        try:
            src.deserialize(data)
            src.backup(self._db)
        finally:
            src.close()
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        """Bring a store made by an older version up to this schema (same on every replica)."""
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(ns_blocks)")}
        if "last_idx" not in cols:
            self._db.execute("ALTER TABLE ns_blocks ADD COLUMN last_ms INTEGER NOT NULL DEFAULT 0")
            self._db.execute("ALTER TABLE ns_blocks ADD COLUMN last_idx INTEGER NOT NULL DEFAULT 0")
        self._db.execute("CREATE INDEX IF NOT EXISTS ns_blocks_block ON ns_blocks (block_id, ns)")
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(revisions)")}
        if "symlink" not in cols:
            self._db.execute("ALTER TABLE revisions ADD COLUMN symlink TEXT")
        if "executable" not in cols:
            self._db.execute(
                "ALTER TABLE revisions ADD COLUMN executable INTEGER NOT NULL DEFAULT 0"
            )
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(accounts)")}
        if "disabled" not in cols:
            self._db.execute("ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0")

    # -- loading / persisting the small state ----------------------------------------------
    def _get_kv(self, k: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return default if row is None else row[0]

    def _set_kv(self, k: str, v: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (k, v))

    def _load(self) -> None:
        self._applied = int(self._get_kv("applied", 0))
        self._secret = bytes(self._get_kv("secret", b"") or b"")
        st = SessionTable(session_ttl_ms=self._session_ttl_ms)
        clock = self._get_kv("sessions")
        newest, next_sweep = msgspec.msgpack.decode(clock) if clock else (0, 0)
        sessions: dict[int, dict] = {}
        for cid, last_ms, floor in self._db.execute(
            "SELECT client_id, last_ms, floor FROM client_sessions ORDER BY client_id"
        ):
            sessions[cid] = {"last_ms": last_ms, "floor": floor, "results": {}}
        for cid, seq, blob in self._db.execute(
            "SELECT client_id, seq, result FROM client_results ORDER BY client_id, seq"
        ):
            if cid in sessions:
                sessions[cid]["results"][seq] = msgspec.msgpack.decode(blob)
        st.load(msgspec.msgpack.encode([newest, next_sweep, sessions]))
        for s in st.sessions.values():
            s.results = {seq: decode_result(r) for seq, r in s.results.items()}
        self.sessions = st

    def _persist_client(
        self, cid: int, seq: int, ran: bool, result: Any, had: bool, n_before: int
    ) -> None:
        st = self.sessions
        db = self._db
        # `next_sweep_ms` decides at which command the next expiry sweep runs: it must survive
        # a restart, or a restarted replica would expire sessions at a different index.
        self._set_kv("sessions", msgspec.msgpack.encode([st.newest_ms, st.next_sweep_ms]))
        expected = n_before + (1 if cid and not had and cid in st.sessions else 0)
        if len(st.sessions) != expected:  # a sweep or an eviction dropped sessions
            live = set(st.sessions)
            gone = [
                c for (c,) in db.execute("SELECT client_id FROM client_sessions") if c not in live
            ]
            for c in gone:
                db.execute("DELETE FROM client_sessions WHERE client_id = ?", (c,))
                db.execute("DELETE FROM client_results WHERE client_id = ?", (c,))
        s = st.sessions.get(cid) if cid else None
        if s is None:
            return
        db.execute(
            "INSERT OR REPLACE INTO client_sessions (client_id, last_ms, floor) VALUES (?, ?, ?)",
            (cid, s.last_ms, s.floor),
        )
        db.execute("DELETE FROM client_results WHERE client_id = ? AND seq < ?", (cid, s.floor))
        if ran and seq in s.results:
            db.execute(
                "INSERT OR REPLACE INTO client_results (client_id, seq, result) VALUES (?, ?, ?)",
                (cid, seq, _result_enc.encode(result)),
            )

    # -- running one command ---------------------------------------------------------------
    def _run(self, payload: bytes) -> Any:
        try:
            cmd = decode_command(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return MetaError(["invalid_command"], {"reason": str(e)})
        if not self._secret and not isinstance(cmd, InitCluster):
            return MetaError(["not_initialized"])
        handler = self._handlers[type(cmd)]
        if isinstance(cmd, CommitBatch | FinishBatch):
            return handler(self, cmd)  # per-item savepoints inside
        return self._atomic(lambda: handler(self, cmd), too_many=_too_many_tag(cmd))

    def _atomic(self, fn: Callable[[], Any], too_many: str = "too_many_write_operations") -> Any:
        """Run `fn` under a savepoint; roll it back if it fails. Returns its result or error."""
        sp = f"sp{self._depth}"
        self._db.execute(f"SAVEPOINT {sp}")
        self._depth += 1
        try:
            result = fn()
        except _Fail as f:
            result = f.error
        except _TooMany:
            result = MetaError([too_many])
        except Exception as e:
            if isinstance(e, sqlite3.Error) and not isinstance(
                e, sqlite3.IntegrityError | sqlite3.ProgrammingError
            ):
                raise  # a local failure (disk, I/O), not the command's: replicas would diverge
            # A bug, caught so that one bad command cannot stop the cluster: every replica
            # fails it the same way and rolls it back.
            log.exception("command failed at index %d", self._index)
            result = MetaError(["internal_error"], {"reason": type(e).__name__})
        finally:
            self._depth -= 1
        if isinstance(result, MetaError):
            self._db.execute(f"ROLLBACK TO {sp}")
        self._db.execute(f"RELEASE {sp}")
        return result

    def _next_pos(self) -> int:
        if self._pos > MAX_POS:
            raise _TooMany()
        p = self._pos
        self._pos += 1
        return p

    def _rev(self, pos: int) -> str:
        return f"{self._index:012x}{pos:04x}"

    def _new_id(self, pos: int) -> str:
        mac = hmac.new(self._secret, f"{self._index}:{pos}".encode(), hashlib.sha256).digest()
        return "id:" + _b64(mac[:16])

    def _now(self) -> str:
        if self._now_str is None:
            self._now_str = format_ts(self._now_ms)
        return self._now_str

    # -- accounts ---------------------------------------------------------------------------
    def _init_cluster(self, c: InitCluster) -> bool:
        if self._secret:
            return False
        if len(c.secret) < 16:
            raise _Fail("invalid_command", reason="the cluster secret must be ≥ 16 bytes")
        self._set_kv("secret", c.secret)
        self._secret = c.secret  # (a rollback of this command cannot happen after this point)
        return True

    def _create_account(self, c: CreateAccount) -> AccountInfo:
        email = c.email.strip()
        if (
            not email
            or values.text_problem(email, values.EMAIL_MAX_CHARS)
            or values.text_problem(c.display_name, values.DISPLAY_NAME_MAX_CHARS)
        ):
            raise _Fail("invalid_command", reason="bad email or display name")
        ekey = email.casefold()
        db = self._db
        if db.execute("SELECT 1 FROM accounts WHERE email_key = ?", (ekey,)).fetchone():
            raise _Fail("email_taken")
        if c.token_hash and self._token_exists(c.token_hash):
            raise _Fail("token_exists")
        mac = hmac.new(self._secret, f"account:{self._index}".encode(), hashlib.sha256).digest()
        account_id = "dbid:" + _b64(mac)[:35]
        ns = self._index
        db.execute(
            "INSERT INTO accounts (account_id, email_key, email, display_name, home_ns, "
            "created_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, ekey, email, c.display_name, ns, self._now_ms),
        )
        db.execute("INSERT INTO namespaces (ns, owner) VALUES (?, ?)", (ns, account_id))
        if c.token_hash:
            db.execute(
                "INSERT INTO tokens (token_hash, account_id) VALUES (?, ?)",
                (c.token_hash, account_id),
            )
        return AccountInfo(account_id, email, c.display_name, ns, self._now())

    def _token_exists(self, h: bytes) -> bool:
        return (
            self._db.execute("SELECT 1 FROM tokens WHERE token_hash = ?", (h,)).fetchone()
            is not None
        )

    def _add_token(self, c: AddToken) -> None:
        if not c.token_hash:
            raise _Fail("invalid_command", reason="empty token hash")
        if self.get_account(c.account_id) is None:
            raise _Fail("account_not_found")
        if self._token_exists(c.token_hash):
            raise _Fail("token_exists")
        self._db.execute(
            "INSERT INTO tokens (token_hash, account_id) VALUES (?, ?)",
            (c.token_hash, c.account_id),
        )
        return None

    def _revoke_token(self, c: RevokeToken) -> bool:
        cur = self._db.execute("DELETE FROM tokens WHERE token_hash = ?", (c.token_hash,))
        return cur.rowcount > 0

    def _account_of_email(self, email: str) -> AccountInfo:
        acct = self.account_by_email(email)
        if acct is None:
            raise _Fail("account_not_found")
        return acct

    def _revoke_tokens(self, c: RevokeTokens) -> Count:
        acct = self._account_of_email(c.email)
        cur = self._db.execute("DELETE FROM tokens WHERE account_id = ?", (acct.account_id,))
        return Count(cur.rowcount)

    def _set_disabled(self, c: SetDisabled) -> AccountInfo:
        acct = self._account_of_email(c.email)
        self._db.execute(
            "UPDATE accounts SET disabled = ? WHERE account_id = ?",
            (int(c.disabled), acct.account_id),
        )
        return msgspec.structs.replace(acct, disabled=c.disabled)

    def _remove_account(self, c: RemoveAccount) -> AccountInfo:
        acct = self._account_of_email(c.email)
        db, ns = self._db, acct.home_ns
        db.execute("DELETE FROM tokens WHERE account_id = ?", (acct.account_id,))
        db.execute("DELETE FROM accounts WHERE account_id = ?", (acct.account_id,))
        db.execute(
            "DELETE FROM upload_pieces WHERE session_id IN "
            "(SELECT session_id FROM upload_sessions WHERE ns = ?)",
            (ns,),
        )
        for table in ("upload_sessions", "ns_blocks", "journal", "revisions", "entries"):
            db.execute(f"DELETE FROM {table} WHERE ns = ?", (ns,))
        db.execute("DELETE FROM namespaces WHERE ns = ?", (ns,))
        self._known_ns.discard(ns)
        return acct

    def _set_store_marker(self, c: SetStoreMarker) -> bool:
        if _HEX64.fullmatch(c.block_id) is None:
            raise _Fail("invalid_command", reason="a marker is a block id (64 lowercase hex)")
        if self._get_kv("store_marker"):
            return False
        self._set_kv("store_marker", c.block_id)
        return True

    # -- entries: reading -------------------------------------------------------------------
    def _check_ns(self, ns: int) -> None:
        if ns in self._known_ns:
            return
        if not self._ns_exists(ns):
            raise _Fail("invalid_command", reason=f"unknown namespace {ns}")
        self._known_ns.add(ns)  # for this entry (RemoveAccount forgets it)

    def _ns_exists(self, ns: int) -> bool:
        return (
            self._db.execute("SELECT 1 FROM namespaces WHERE ns = ?", (ns,)).fetchone() is not None
        )

    def _entry(self, ns: int, key: str) -> _E | None:
        row = self._db.execute(
            f"SELECT {_E_COLS} FROM entries WHERE ns = ? AND key = ?", (ns, key)
        ).fetchone()
        return None if row is None else _E(*row)

    def _live(self, ns: int, key: str) -> _E | None:
        e = self._entry(ns, key)
        return e if e is not None and e.kind != DELETED else None

    def _live_by_id(self, ns: int, id_: str) -> _E | None:
        row = self._db.execute(
            f"SELECT {_E_COLS} FROM entries WHERE ns = ? AND id = ? AND kind < 3 LIMIT 1",
            (ns, id_),
        ).fetchone()
        return None if row is None else _E(*row)

    def _revision(self, ns: int, rev: str) -> _R | None:
        row = self._db.execute(
            f"SELECT {_R_COLS} FROM revisions WHERE ns = ? AND rev = ?", (ns, rev)
        ).fetchone()
        return None if row is None else _R(*row)

    def _meta_of(self, ns: int, e: _E) -> Meta:
        if e.kind == FOLDER:
            return FolderMeta(e.id, e.name, e.display.lower(), e.display)
        if e.kind == DELETED:
            return DeletedMeta(e.name, e.display.lower(), e.display)
        r = self._revision(ns, e.rev)
        return FileMeta(
            e.id,
            e.name,
            e.display.lower(),
            e.display,
            e.rev,
            r.size,
            r.client_modified,
            r.server_modified,
            r.content_hash,
            symlink_target=r.symlink,
            executable=bool(r.executable),
        )

    @staticmethod
    def _meta_row(row: tuple) -> Meta:
        """A row of `_M_COLS` → its Meta."""
        key, name, display, kind, id_, rev, size, ch, cm, sm, link, exe = row
        if kind == FILE:
            return FileMeta(
                id_,
                name,
                display.lower(),
                display,
                rev,
                size,
                cm,
                sm,
                ch,
                symlink_target=link,
                executable=bool(exe),
            )
        if kind == FOLDER:
            return FolderMeta(id_, name, display.lower(), display)
        return DeletedMeta(name, display.lower(), display)

    def _rev_meta(self, r: _R, is_deleted: bool = False) -> FileMeta:
        return FileMeta(
            r.id,
            r.display.rsplit("/", 1)[-1],
            r.display.lower(),
            r.display,
            r.rev,
            r.size,
            r.client_modified,
            r.server_modified,
            r.content_hash,
            is_deleted,
            r.symlink,
            bool(r.executable),
        )

    def _write_path(self, ns: int, s: str, outer: str, *, allow_id: bool = True) -> Path:
        """A write destination: "/…", "ns:<ns>/…" or the id of a live entry (its path)."""
        try:
            ref = paths.parse_ref(s, allow_id=allow_id)
        except MalformedPath:
            raise _Fail(outer, "malformed_path") from None
        if ref.kind == "id":
            e = self._live_by_id(ns, ref.value)
            if e is None:
                raise _Fail(outer, "not_found")
            return Path(e.display, e.key)
        if ref.ns is not None and ref.ns != ns:
            raise _Fail(outer, "no_write_permission")
        if paths.depth_problem(ref.path):
            raise _Fail(outer, "malformed_path")
        return ref.path

    def _lookup_live(self, ns: int, s: str, outer: str) -> _E:
        """The live entry named by "/…", "ns:…" or "id:…", or fail with outer/not_found."""
        try:
            ref = paths.parse_ref(s)
        except MalformedPath:
            raise _Fail(outer, "malformed_path") from None
        if ref.kind == "id":
            e = self._live_by_id(ns, ref.value)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        else:
            e = self._live(ns, ref.path.key)
        if e is None:
            raise _Fail(outer, "not_found")
        return e

    # -- entries: writing -------------------------------------------------------------------
    def _journal(self, ns: int, key: str, parent_key: str, display: str, kind: int) -> None:
        (pos,) = self._db.execute(
            "UPDATE namespaces SET journal_end = journal_end + 1, last_index = ? WHERE ns = ? "
            "RETURNING journal_end",
            (self._index, ns),
        ).fetchone()
        self._db.execute(
            "INSERT INTO journal (ns, pos, key, parent_key, display, idx, kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ns, pos, key, parent_key, display, self._index, kind),
        )

    def _put_entry(
        self,
        ns: int,
        key: str,
        parent_key: str,
        display: str,
        kind: int,
        id_: str | None,
        rev: str | None,
        deleted_ms: int | None = None,
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO entries (ns, key, parent_key, name, display, kind, id, rev, "
            "deleted_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ns, key, parent_key, display.rsplit("/", 1)[-1], display, kind, id_, rev, deleted_ms),
        )

    def _ensure_parents(self, ns: int, path: Path, outer: str) -> str:
        """Create the missing folders above `path`; return the parent's display path.
        Fails with outer/conflict/file_ancestor if a file is in the way."""
        display = ""
        parent_key = ""
        for anc in path.ancestors():
            e = self._entry(ns, anc.key)
            if e is not None and e.kind == FILE:
                raise _Fail(outer, "conflict", "file_ancestor")
            if e is not None and e.kind == FOLDER:
                display = e.display
            else:
                display = f"{display}/{anc.name}"
                self._put_entry(
                    ns, anc.key, parent_key, display, FOLDER, self._new_id(self._next_pos()), None
                )
                self._journal(ns, anc.key, parent_key, display, FOLDER)
            parent_key = anc.key
        return display

    def _free_name(
        self,
        ns: int,
        parent: Path,
        name: str,
        *,
        is_folder: bool,
        conflicted: bool,
        outer: str = "path",
    ) -> Path:
        """The first name in `parent` with no live entry: "a (1).txt", "a (2).txt", … or
        "a (conflicted copy).txt", "a (conflicted copy 1).txt", …"""
        for n in range(AUTORENAME_MAX_TRIES):
            if conflicted:
                suffix = "(conflicted copy)" if n == 0 else f"(conflicted copy {n})"
            else:
                suffix = f"({n + 1})"
            cand = paths.renamed(name, suffix, is_folder=is_folder)
            try:
                paths.validate_name(cand)
            except MalformedPath:
                break
            p = parent.child(cand)
            if self._live(ns, p.key) is None:
                return p
        raise _Fail(outer, "conflict", "folder" if is_folder else "file")

    def _write_file(
        self,
        ns: int,
        path: Path,
        parent_key: str,
        id_: str | None,
        blocks_blob: bytes,
        size: int,
        content_hash: str,
        client_modified: str,
        symlink: str | None = None,
        executable: bool = False,
    ) -> FileMeta:
        """Write a new revision at `path` (whose parents exist) and make it current."""
        pos = self._next_pos()
        rev = self._rev(pos)
        existing = id_ is not None
        id_ = id_ or self._new_id(pos)
        now = self._now()
        self._db.execute(
            "INSERT INTO revisions (ns, rev, id, key, display, size, content_hash, "
            "client_modified, server_modified, stamp_ms, blocks, symlink, executable) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ns,
                rev,
                id_,
                path.key,
                path.display,
                size,
                content_hash,
                client_modified,
                now,
                self._now_ms,
                blocks_blob,
                symlink,
                int(executable),
            ),
        )
        self._put_entry(ns, path.key, parent_key, path.display, FILE, id_, rev)
        self._journal(ns, path.key, parent_key, path.display, FILE)
        if existing:
            self._prune_revisions(ns, id_)
        return FileMeta(
            id_,
            path.name,
            path.lower,
            path.display,
            rev,
            size,
            client_modified,
            now,
            content_hash,
            symlink_target=symlink,
            executable=executable,
        )

    def _prune_revisions(self, ns: int, id_: str) -> None:
        """Keep a file's newest `revisions_keep` versions and all younger than the age limit."""
        self._db.execute(
            "DELETE FROM revisions WHERE ns = ? AND id = ? AND stamp_ms < ? AND rev IN ("
            "SELECT rev FROM revisions WHERE ns = ? AND id = ? ORDER BY rev DESC "
            "LIMIT -1 OFFSET ?)",
            (ns, id_, self._now_ms - self.revisions_keep_ms, ns, id_, self.revisions_keep),
        )

    # -- CommitFile ---------------------------------------------------------------------------
    def _validate_commit(self, c: CommitFile) -> None:
        if not (0 <= c.size <= MAX_FILE_BYTES):
            raise _Fail("invalid_command", reason="size out of range")
        if _HEX64.fullmatch(c.content_hash) is None:
            raise _Fail("invalid_command", reason="content_hash must be 64 lowercase hex")
        _validate_blocks(c.blocks, c.size)
        if c.mode == "update" and not paths.valid_rev(c.update_rev or ""):
            raise _Fail("invalid_command", reason="update mode needs a valid rev")
        if c.client_modified is not None and not _valid_ts(c.client_modified):
            why = values.timestamp_problem(c.client_modified)
            raise _Fail("invalid_command", reason=f"client_modified: {why}")
        if c.symlink_target is not None:
            _validate_symlink(c)

    def _commit(self, c: CommitFile) -> FileMeta:
        ns = c.ns
        self._check_ns(ns)
        self._validate_commit(c)
        path = self._write_path(ns, c.path, "path")
        if path.is_root:
            raise _Fail("path", "malformed_path")
        if c.uploaded:
            self._gc_check(c.blocks, c.gc_gen)
        elif c.blocks:
            have = self.ns_has_blocks(ns, [b.id for b in c.blocks])
            missing = sorted({b.id for b in c.blocks} - have)
            if missing:
                raise _Fail("need_blocks", missing=missing)
        self._grant(ns, c.blocks)
        parent_display = self._ensure_parents(ns, path, "path")
        parent = Path(parent_display, path.parent.key)
        target = self._entry(ns, path.key)
        live = target if target is not None and target.kind != DELETED else None
        conflict = None
        keep_id = None
        executable = c.executable  # a new file: as said (inheriting is for a kept id)
        if live is None:
            if c.mode == "update" and c.strict_conflict:
                conflict = "file"
            path = parent.child(path.name)
        elif live.kind == FOLDER:
            conflict = "folder"
        else:
            cur = self._revision(ns, live.rev)
            executable = c.executable or (
                c.keep_executable and c.symlink_target is None and bool(cur.executable)
            )
            identical = (
                cur.content_hash == c.content_hash
                and cur.size == c.size
                and cur.symlink == c.symlink_target
                and bool(cur.executable) == executable
            )
            if c.mode == "update":
                if live.rev == c.update_rev:
                    if identical:
                        return self._meta_of(ns, live)
                elif identical and not c.strict_conflict:
                    return self._meta_of(ns, live)
                else:
                    conflict = "file"
            elif identical:
                return self._meta_of(ns, live)
            elif c.mode == "add":
                conflict = "file"
            path = Path(live.display, live.key)  # keep the case it was created with
            keep_id = live.id
        if conflict is not None:
            if not c.autorename:
                raise _Fail("path", "conflict", conflict)
            path = self._free_name(
                ns, parent, path.name, is_folder=False, conflicted=c.mode == "update"
            )
            keep_id = None
            executable = c.executable
        return self._write_file(
            ns,
            path,
            parent.key,
            keep_id,
            _blocks_enc.encode(c.blocks),
            c.size,
            c.content_hash,
            c.client_modified or self._now(),
            c.symlink_target,
            executable,
        )

    # -- block rights and garbage collection ----------------------------------------------------
    def _grant(self, ns: int, blocks: list[BlockRef]) -> None:
        """`ns` uploaded (or references) `blocks`: record its right and touch them."""
        if blocks:
            self._db.executemany(
                "INSERT INTO ns_blocks (ns, block_id, size, last_ms, last_idx) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (ns, block_id) DO UPDATE SET "
                "last_ms = excluded.last_ms, last_idx = excluded.last_idx",
                [(ns, b.id, b.size, self._now_ms, self._index) for b in blocks],
            )

    def _gc_check(self, blocks: list[BlockRef], gen: int | None) -> None:
        """Fail with `gc_retry` if a block just stored may have been deleted under the caller's
        feet: it is condemned now, or a GC generation after `gen` deleted it."""
        if gen is None or not blocks:
            return
        db = self._db
        if gen < int(self._get_kv("gc_floor", 0)):
            raise _Fail("gc_retry", ids=[], reason="stale GC generation")
        any_condemned = db.execute("SELECT 1 FROM gc_condemned LIMIT 1").fetchone()
        any_deleted = db.execute("SELECT 1 FROM gc_deleted WHERE gen > ? LIMIT 1", (gen,))
        if any_condemned is None and any_deleted.fetchone() is None:
            return
        uniq = sorted({b.id for b in blocks})
        bad: set[str] = set()
        for i in range(0, len(uniq), 500):
            chunk = uniq[i : i + 500]
            marks = ",".join("?" * len(chunk))
            bad.update(
                b
                for (b,) in db.execute(
                    f"SELECT block_id FROM gc_condemned WHERE block_id IN ({marks}) UNION "
                    f"SELECT block_id FROM gc_deleted WHERE gen > ? AND block_id IN ({marks})",
                    (*chunk, gen, *chunk),
                )
            )
        if bad:
            raise _Fail("gc_retry", ids=sorted(bad))

    def _record_upload(self, c: RecordUpload) -> None:
        self._check_ns(c.ns)
        if len(c.blocks) > MAX_BATCH_ENTRIES:
            raise _Fail("invalid_command", reason="too many blocks")
        _validate_blocks(c.blocks, sum(b.size for b in c.blocks))
        self._gc_check(c.blocks, c.gc_gen)
        self._grant(c.ns, c.blocks)
        return None

    def _gc_lease(self) -> tuple[str, int] | None:
        raw = self._get_kv("gc_lease")
        return None if not raw else tuple(msgspec.msgpack.decode(raw))  # type: ignore[return-value]

    def _gc_condemn(self, c: GcCondemn) -> GcResult:
        if len(c.ids) > MAX_BATCH_ENTRIES or not c.run_id or c.lease_ms <= 0:
            raise _Fail("invalid_command", reason="bad GcCondemn")
        lease = self._gc_lease()
        if lease is not None and lease[0] != c.run_id and lease[1] > self._now_ms:
            raise _Fail("gc_busy", run_id=lease[0], until_ms=lease[1])
        db = self._db
        self._set_kv("gc_lease", msgspec.msgpack.encode([c.run_id, self._now_ms + c.lease_ms]))
        # Blocks condemned earlier — by this run before it was interrupted, or by a run whose
        # lease expired — are this run's to delete now.
        adopted = [b for (b,) in db.execute("SELECT block_id FROM gc_condemned ORDER BY block_id")]
        db.execute("UPDATE gc_condemned SET run_id = ? WHERE run_id != ?", (c.run_id, c.run_id))
        condemned: list[str] = []
        for bid in sorted(set(c.ids)):
            if _HEX64.fullmatch(bid) is None:
                raise _Fail("invalid_command", reason="block ids are 64 lowercase hex")
            if db.execute("SELECT 1 FROM gc_condemned WHERE block_id = ?", (bid,)).fetchone():
                continue
            touched = db.execute(
                "SELECT 1 FROM ns_blocks WHERE block_id = ? AND last_idx > ? LIMIT 1",
                (bid, c.mark_index),
            ).fetchone()
            if touched:
                continue  # uploaded or referenced since the snapshot the run marked from
            db.execute("INSERT INTO gc_condemned (block_id, run_id) VALUES (?, ?)", (bid, c.run_id))
            db.execute("DELETE FROM ns_blocks WHERE block_id = ?", (bid,))
            condemned.append(bid)
        return GcResult(condemned, adopted, int(self._get_kv("gc_gen", 0)))

    def _gc_release(self, c: GcRelease) -> GcResult:
        if len(c.ids) > MAX_BATCH_ENTRIES:
            raise _Fail("invalid_command", reason="too many ids")
        db = self._db
        gen = int(self._get_kv("gc_gen", 0))
        mine = []
        for bid in sorted(set(c.ids)):
            row = db.execute(
                "SELECT run_id FROM gc_condemned WHERE block_id = ?", (bid,)
            ).fetchone()
            if row is not None and row[0] == c.run_id:
                mine.append(bid)
        if mine:
            gen += 1
            self._set_kv("gc_gen", gen)
            for bid in mine:
                db.execute("DELETE FROM gc_condemned WHERE block_id = ?", (bid,))
                db.execute(
                    "INSERT OR REPLACE INTO gc_deleted (block_id, gen, ms) VALUES (?, ?, ?)",
                    (bid, gen, self._now_ms),
                )
        # Forget deletions older than an hour: a command that read its generation before the
        # oldest one forgotten is refused as stale (`gc_floor`) instead of being checked.
        cutoff = self._now_ms - GC_DELETED_KEEP_MS
        row = db.execute("SELECT MAX(gen) FROM gc_deleted WHERE ms < ?", (cutoff,)).fetchone()
        if row is not None and row[0] is not None:
            self._set_kv("gc_floor", max(int(self._get_kv("gc_floor", 0)), row[0]))
            db.execute("DELETE FROM gc_deleted WHERE ms < ?", (cutoff,))
        lease = self._gc_lease()
        if c.done and lease is not None and lease[0] == c.run_id:
            db.execute("DELETE FROM kv WHERE k = 'gc_lease'")
        return GcResult([], [], gen)

    def _commit_batch(self, c: CommitBatch) -> list:
        if len(c.entries) > MAX_BATCH_ENTRIES:
            return MetaError(["invalid_command"], {"reason": "batch too large"})
        return [self._atomic(lambda e=e: self._commit(e)) for e in c.entries]

    # -- folders, delete, move, copy, restore --------------------------------------------------
    def _create_folder(self, c: CreateFolder) -> FolderMeta:
        ns = c.ns
        self._check_ns(ns)
        path = self._write_path(ns, c.path, "path", allow_id=False)
        if path.is_root:
            raise _Fail("path", "malformed_path")
        parent = Path(self._ensure_parents(ns, path, "path"), path.parent.key)
        live = self._live(ns, path.key)
        if live is not None:
            if not c.autorename:
                raise _Fail("path", "conflict", "folder" if live.kind == FOLDER else "file")
            path = self._free_name(ns, parent, path.name, is_folder=True, conflicted=False)
        else:
            path = parent.child(path.name)
        id_ = self._new_id(self._next_pos())
        self._put_entry(ns, path.key, parent.key, path.display, FOLDER, id_, None)
        self._journal(ns, path.key, parent.key, path.display, FOLDER)
        return FolderMeta(id_, path.name, path.lower, path.display)

    def _delete(self, c: Delete) -> Meta:
        ns = c.ns
        self._check_ns(ns)
        e = self._lookup_live(ns, c.path, "path_lookup")
        if c.parent_rev is not None:
            if e.kind != FILE:
                raise _Fail("path_lookup", "not_file")
            if e.rev != c.parent_rev:
                raise _Fail("path_write", "conflict", "file")
        meta = self._meta_of(ns, e)
        lo, hi = paths.subtree_range(e.key)
        self._db.execute(
            "UPDATE entries SET kind = 3, deleted_ms = ? "
            "WHERE ns = ? AND (key = ? OR (key > ? AND key < ?)) AND kind < 3",
            (self._now_ms, ns, e.key, lo, hi),
        )
        self._journal(ns, e.key, e.parent_key, e.display, DELETED)
        return meta

    def _relocate(self, c: Move | Copy) -> Meta:
        ns = c.ns
        copy = isinstance(c, Copy)
        self._check_ns(ns)
        src = self._lookup_live(ns, c.from_path, "from_lookup")
        to = self._write_path(ns, c.to_path, "to")
        if to.is_root:
            raise _Fail("to", "malformed_path")
        case_only = False
        if to.key == src.key:
            if not copy and to.display != src.display and to.name != src.name:
                case_only = True
            elif copy and c.autorename:
                pass  # a copy beside the original, renamed below
            else:
                raise _Fail("duplicated_or_nested_paths")
        elif src.kind == FOLDER and paths.is_in_subtree(to.key, src.key):
            raise _Fail("cant_move_folder_into_itself")
        if case_only:
            parent = Path(src.display.rsplit("/", 1)[0], src.parent_key)
            to = parent.child(to.name)
        else:
            parent = Path(self._ensure_parents(ns, to, "to"), to.parent.key)
            live = self._live(ns, to.key)
            if live is not None:
                if not c.autorename:
                    raise _Fail("to", "conflict", "folder" if live.kind == FOLDER else "file")
                to = self._free_name(
                    ns, parent, to.name, is_folder=src.kind == FOLDER, conflicted=False, outer="to"
                )
            else:
                to = parent.child(to.name)
        return self._move_subtree(ns, src, to, parent.key, copy=copy, case_only=case_only)

    def _move_subtree(
        self, ns: int, src: _E, to: Path, to_parent_key: str, *, copy: bool, case_only: bool
    ) -> Meta:
        db = self._db
        rows = [src]
        if src.kind == FOLDER:
            lo, hi = paths.subtree_range(src.key)
            rows += [
                _E(*r)
                for r in db.execute(
                    f"SELECT {_E_COLS} FROM entries "
                    "WHERE ns = ? AND key > ? AND key < ? AND kind < 3 ORDER BY key",
                    (ns, lo, hi),
                )
            ]
        _check_relocated(src, to, rows)
        if not case_only:
            # The destination holds no live entry (checked), so at most deleted history here.
            lo, hi = paths.subtree_range(to.key)
            db.execute(
                "DELETE FROM entries WHERE ns = ? AND (key = ? OR (key > ? AND key < ?))",
                (ns, to.key, lo, hi),
            )
            if not copy:
                lo, hi = paths.subtree_range(src.key)
                db.execute(
                    "DELETE FROM entries "
                    "WHERE ns = ? AND (key = ? OR (key > ? AND key < ? AND kind < 3))",
                    (ns, src.key, lo, hi),
                )
                self._put_entry(
                    ns, src.key, src.parent_key, src.display, DELETED, src.id, src.rev, self._now_ms
                )
                self._journal(ns, src.key, src.parent_key, src.display, DELETED)
        now = self._now()
        n = len(src.key)
        nd = len(src.display)
        first: Meta | None = None
        for e in rows:
            key = to.key + e.key[n:]
            display = to.display + e.display[nd:]
            parent_key = to_parent_key if e is src else to.key + e.parent_key[n:]
            if e.kind == FOLDER:
                id_ = self._new_id(self._next_pos()) if copy else e.id
                rev = None
            else:
                pos = self._next_pos()
                rev = self._rev(pos)
                id_ = self._new_id(pos) if copy else e.id
                # Same blocks, same client_modified; a copy is a new file (server_modified now).
                db.execute(
                    "INSERT INTO revisions (ns, rev, id, key, display, size, content_hash, "
                    "client_modified, server_modified, stamp_ms, blocks, symlink, executable) "
                    "SELECT ns, ?, ?, ?, ?, size, content_hash, client_modified, "
                    "CASE WHEN ? THEN ? ELSE server_modified END, ?, blocks, symlink, executable "
                    "FROM revisions WHERE ns = ? AND rev = ?",
                    (rev, id_, key, display, copy, now, self._now_ms, ns, e.rev),
                )
                self._prune_revisions(ns, id_)
            self._put_entry(ns, key, parent_key, display, e.kind, id_, rev)
            self._journal(ns, key, parent_key, display, e.kind)
            if first is None:
                first = self._meta_of(ns, _E(key, parent_key, "", display, e.kind, id_, rev, None))
        return _with_name(first)

    def _restore(self, c: Restore) -> FileMeta:
        ns = c.ns
        self._check_ns(ns)
        path = self._write_path(ns, c.path, "path_lookup", allow_id=False)
        if path.is_root:
            raise _Fail("path_lookup", "malformed_path")
        if not paths.valid_rev(c.rev):
            raise _Fail("invalid_revision")
        r = self._revision(ns, c.rev)
        if r is None:
            raise _Fail("invalid_revision")
        target = self._entry(ns, path.key)
        if r.key != path.key and (target is None or target.id != r.id):
            raise _Fail("invalid_revision")
        parent = Path(self._ensure_parents(ns, path, "path_write"), path.parent.key)
        live = target if target is not None and target.kind != DELETED else None
        if live is not None and live.kind == FOLDER:
            raise _Fail("path_write", "conflict", "folder")
        if live is not None:
            id_ = live.id
            path = Path(live.display, live.key)
        else:
            id_ = r.id if self._live_by_id(ns, r.id) is None else None
            path = parent.child(path.name)
        return self._write_file(
            ns,
            path,
            parent.key,
            id_,
            r.blocks,
            r.size,
            r.content_hash,
            r.client_modified,
            r.symlink,
            bool(r.executable),
        )

    # -- upload sessions ------------------------------------------------------------------------
    def _session_row(self, session_id: str, ns: int) -> tuple | None:
        """(concurrent, started_ms, closed, length, total) of a live session of `ns`."""
        row = self._db.execute(
            "SELECT ns, concurrent, started_ms, closed, length, total FROM upload_sessions "
            "WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is None or row[0] != ns:
            return None
        if self._now_ms - row[2] >= self.upload_session_ttl_ms:
            return None  # expired (swept by a later SessionStart)
        return row[1:]

    def _add_piece(
        self,
        session_id: str,
        offset: int,
        length: int,
        blocks: list[BlockRef],
        digests: list[bytes] | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO upload_pieces (session_id, offset, length, blocks, digests) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, offset, length, _blocks_enc.encode(blocks), _blocks_enc.encode(digests)),
        )
        ns = self._db.execute(
            "SELECT ns FROM upload_sessions WHERE session_id = ?", (session_id,)
        ).fetchone()[0]
        self._grant(ns, blocks)

    def _sweep_sessions(self) -> None:
        cutoff = self._now_ms - self.upload_session_ttl_ms
        db = self._db
        dead = [
            sid
            for (sid,) in db.execute(
                "SELECT session_id FROM upload_sessions WHERE started_ms <= ? "
                "ORDER BY started_ms, session_id LIMIT 1000",
                (cutoff,),
            )
        ]
        for sid in dead:
            db.execute("DELETE FROM upload_sessions WHERE session_id = ?", (sid,))
            db.execute("DELETE FROM upload_pieces WHERE session_id = ?", (sid,))

    def _session_start(self, c: SessionStart) -> None:
        self._check_ns(c.ns)
        if not c.session_id or len(c.session_id) > 200:
            raise _Fail("invalid_command", reason="bad session id")
        _validate_piece(c.blocks, c.length, c.window_digests)
        if c.concurrent and c.length:
            raise _Fail("concurrent_session_data_not_allowed")
        if c.concurrent and c.close:
            raise _Fail("concurrent_session_close_not_allowed")
        self._sweep_sessions()
        self._gc_check(c.blocks, c.gc_gen)
        db = self._db
        if db.execute(
            "SELECT 1 FROM upload_sessions WHERE session_id = ?", (c.session_id,)
        ).fetchone():
            raise _Fail("session_exists")
        db.execute(
            "INSERT INTO upload_sessions (session_id, ns, concurrent, started_ms, closed, "
            "length, total) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                c.session_id,
                c.ns,
                int(c.concurrent),
                self._now_ms,
                int(c.close),
                c.length,
                c.length if c.close else None,
            ),
        )
        if c.length:
            self._add_piece(c.session_id, 0, c.length, c.blocks, c.window_digests)
        return None

    def _session_append(self, c: SessionAppend) -> None:
        _validate_piece(c.blocks, c.length, c.window_digests)
        self._gc_check(c.blocks, c.gc_gen)
        s = self._session_row(c.session_id, c.ns)
        if s is None:
            raise _Fail("not_found")
        concurrent, _started, closed, length, total = s
        db = self._db
        if not concurrent:
            if closed:
                raise _Fail("closed")
            if c.offset != length:
                raise _Fail("incorrect_offset", correct_offset=length)
            if length + c.length > MAX_FILE_BYTES:
                raise _Fail("too_large")
            if c.length:
                self._add_piece(c.session_id, c.offset, c.length, c.blocks, c.window_digests)
            db.execute(
                "UPDATE upload_sessions SET length = ?, closed = ?, total = ? WHERE session_id = ?",
                (
                    length + c.length,
                    int(c.close),
                    length + c.length if c.close else None,
                    c.session_id,
                ),
            )
            return None
        end = c.offset + c.length
        if c.offset < 0 or c.offset % BLOCK_WINDOW_BYTES:
            raise _Fail("concurrent_session_invalid_offset")
        if not c.close and (c.length == 0 or c.length % BLOCK_WINDOW_BYTES):
            raise _Fail("concurrent_session_invalid_data_size")
        if end > MAX_FILE_BYTES:
            raise _Fail("too_large")
        if closed and (c.close or end > total):
            raise _Fail("closed")
        if c.close:
            past = db.execute(
                "SELECT 1 FROM upload_pieces WHERE session_id = ? AND offset + length > ? LIMIT 1",
                (c.session_id, end),
            ).fetchone()
            if past:
                raise _Fail("concurrent_session_invalid_offset")
        if c.length:
            prev = db.execute(
                "SELECT offset, length, blocks FROM upload_pieces "
                "WHERE session_id = ? AND offset < ? ORDER BY offset DESC LIMIT 1",
                (c.session_id, end),
            ).fetchone()
            if prev is not None and prev[0] + prev[1] > c.offset:
                if (
                    prev[0] == c.offset
                    and prev[1] == c.length
                    and _blocks_dec.decode(prev[2]) == c.blocks
                    and not c.close
                ):
                    return None  # the same piece again: idempotent
                raise _Fail("concurrent_session_invalid_offset")
            self._add_piece(c.session_id, c.offset, c.length, c.blocks, c.window_digests)
        db.execute(
            "UPDATE upload_sessions SET length = length + ?, closed = ?, total = ? "
            "WHERE session_id = ?",
            (c.length, int(closed or c.close), end if c.close else total, c.session_id),
        )
        return None

    def _session_finish(self, c: SessionFinish) -> FileMeta:
        _validate_piece(c.blocks, c.length, c.window_digests)
        self._gc_check(c.blocks, c.gc_gen)
        s = self._session_row(c.session_id, c.ns)
        if s is None:
            raise _Fail("lookup_failed", "not_found")
        concurrent, _started, closed, length, total = s
        if not concurrent:
            if c.offset != length:
                raise _Fail("lookup_failed", "incorrect_offset", correct_offset=length)
            if closed and c.length:
                raise _Fail("lookup_failed", "closed")
            if length + c.length > MAX_FILE_BYTES:
                raise _Fail("lookup_failed", "too_large")
            if c.length:
                self._add_piece(c.session_id, c.offset, c.length, c.blocks, c.window_digests)
            total = length + c.length
        else:
            if c.length or c.blocks:
                raise _Fail("concurrent_session_data_not_allowed")
            if not closed:
                raise _Fail("concurrent_session_not_closed")
            if length != total:
                raise _Fail("concurrent_session_missing_data")
        state = self.session(c.session_id)
        if not state.contiguous():
            raise _Fail("concurrent_session_missing_data")
        if c.commit.size != total:
            raise _Fail("invalid_command", reason=f"commit size is not the session's {total}")
        # Pieces were checked against GC when they were added; live sessions are never collected.
        commit = msgspec.structs.replace(
            c.commit, ns=c.ns, blocks=state.blocks, uploaded=True, gc_gen=None
        )
        meta = self._commit(commit)
        self._db.execute("DELETE FROM upload_sessions WHERE session_id = ?", (c.session_id,))
        self._db.execute("DELETE FROM upload_pieces WHERE session_id = ?", (c.session_id,))
        return meta

    def _finish_batch(self, c: FinishBatch) -> list:
        if len(c.entries) > MAX_BATCH_ENTRIES:
            return MetaError(["invalid_command"], {"reason": "batch too large"})
        return [self._atomic(lambda e=e: self._session_finish(e)) for e in c.entries]

    _handlers: dict[type, Callable[[MetaStore, Any], Any]] = {
        InitCluster: _init_cluster,
        CreateAccount: _create_account,
        AddToken: _add_token,
        RevokeToken: _revoke_token,
        RevokeTokens: _revoke_tokens,
        SetDisabled: _set_disabled,
        RemoveAccount: _remove_account,
        SetStoreMarker: _set_store_marker,
        CommitFile: _commit,
        CommitBatch: _commit_batch,
        CreateFolder: _create_folder,
        Delete: _delete,
        Move: _relocate,
        Copy: _relocate,
        Restore: _restore,
        SessionStart: _session_start,
        SessionAppend: _session_append,
        SessionFinish: _session_finish,
        FinishBatch: _finish_batch,
        RecordUpload: _record_upload,
        GcCondemn: _gc_condemn,
        GcRelease: _gc_release,
    }

    # == queries (read-only; the service calls them after ReadIndex) ==========================
    def secret(self) -> bytes:
        return self._secret

    def _account(self, where: str, arg: Any) -> AccountInfo | None:
        row = self._db.execute(
            "SELECT account_id, email, display_name, home_ns, created_ms, disabled FROM accounts "
            f"WHERE {where}",
            (arg,),
        ).fetchone()
        if row is None:
            return None
        return AccountInfo(row[0], row[1], row[2], row[3], format_ts(row[4]), bool(row[5]))

    def list_accounts(self) -> list[tuple[AccountInfo, int]]:
        """Every account, by email, with its number of tokens."""
        rows = self._db.execute(
            "SELECT a.account_id, a.email, a.display_name, a.home_ns, a.created_ms, a.disabled, "
            "(SELECT COUNT(*) FROM tokens t WHERE t.account_id = a.account_id) "
            "FROM accounts a ORDER BY a.email_key"
        ).fetchall()
        return [
            (AccountInfo(r[0], r[1], r[2], r[3], format_ts(r[4]), bool(r[5])), r[6]) for r in rows
        ]

    def store_marker(self) -> str | None:
        """The id of the cluster's block store marker (`SetStoreMarker`), None before it."""
        return self._get_kv("store_marker") or None

    def get_account(self, account_id: str) -> AccountInfo | None:
        return self._account("account_id = ?", account_id)

    def account_by_email(self, email: str) -> AccountInfo | None:
        return self._account("email_key = ?", email.strip().casefold())

    def auth_token(self, token_hash: bytes) -> AccountInfo | None:
        row = self._db.execute(
            "SELECT account_id FROM tokens WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        return None if row is None else self.get_account(row[0])

    def _query(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _Fail as f:
            return f.error

    def resolve(self, ns: int, path: str) -> Meta | MetaError:
        """The live metadata of "/…", "ns:…" or "id:…", or a revision's for "rev:…"."""
        return self._query(lambda: self._resolve(ns, path, include_deleted=False))

    def get_metadata(self, ns: int, path: str, include_deleted: bool = False) -> Meta | MetaError:
        return self._query(lambda: self._resolve(ns, path, include_deleted=include_deleted))

    def _resolve(self, ns: int, s: str, include_deleted: bool) -> Meta:
        try:
            ref = paths.parse_ref(s, allow_rev=True)
        except MalformedPath:
            raise _Fail("path", "malformed_path") from None
        if ref.kind == "rev":
            return self._by_rev(ns, ref.value)[0]
        if ref.kind == "id":
            e = self._live_by_id(ns, ref.value)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        else:
            e = self._entry(ns, ref.path.key)
        if e is None or (e.kind == DELETED and not include_deleted):
            raise _Fail("path", "not_found")
        return self._meta_of(ns, e)

    def _by_rev(self, ns: int, rev: str) -> tuple[FileMeta, Any]:
        """A revision's metadata ("rev:…" paths) and its row, or fail with path/not_found."""
        r = self._revision(ns, rev)
        if r is None:
            raise _Fail("path", "not_found")
        return self._rev_meta(r, self._live_by_id(ns, r.id) is None), r

    def file_blocks(self, ns: int, path: str) -> tuple[FileMeta, list[BlockRef]] | MetaError:
        """A file (by path, id or rev) and its blocklist, for a download."""
        return self._query(lambda: self._file_blocks(ns, path))

    def file_blocks_many(
        self, ns: int, paths_: list[str]
    ) -> list[tuple[FileMeta, list[BlockRef]] | MetaError]:
        """`file_blocks` of each path, in order, each answered on its own (path/not_found,
        path/not_file, path/malformed_path), all from the same state: one read of the replica."""
        return [self._query(lambda p=p: self._file_blocks(ns, p)) for p in paths_]

    def _file_blocks(self, ns: int, path: str) -> tuple[FileMeta, list[BlockRef]]:
        try:
            ref = paths.parse_ref(path, allow_rev=True)
        except MalformedPath:
            raise _Fail("path", "malformed_path") from None
        if ref.kind == "rev":
            meta, r = self._by_rev(ns, ref.value)
            return meta, _blocks_dec.decode(r.blocks)
        e = self._lookup_live(ns, path, "path")
        if e.kind != FILE:
            raise _Fail("path", "not_file")
        r = self._revision(ns, e.rev)
        return self._meta_of(ns, e), _blocks_dec.decode(r.blocks)

    def ns_has_blocks(self, ns: int, ids: list[str]) -> set[str]:
        """Which of `ids` this namespace may reference (uploaded itself or already holds)."""
        have: set[str] = set()
        uniq = sorted(set(ids))
        for i in range(0, len(uniq), 500):
            chunk = uniq[i : i + 500]
            marks = ",".join("?" * len(chunk))
            have.update(
                b
                for (b,) in self._db.execute(
                    f"SELECT block_id FROM ns_blocks WHERE ns = ? AND block_id IN ({marks})",
                    (ns, *chunk),
                )
            )
        return have

    def gc_generation(self) -> int:
        """The GC generation: how many GcRelease commands released blocks (commands carry the
        value their blockserver read before storing blocks, see `CommitFile.gc_gen`)."""
        return int(self._get_kv("gc_gen", 0))

    def gc_state(self) -> tuple[tuple[str, int] | None, dict[str, str]]:
        """(lease (run_id, until_ms) or None, {condemned block id: run_id})."""
        rows = self._db.execute("SELECT block_id, run_id FROM gc_condemned ORDER BY block_id")
        return self._gc_lease(), dict(rows.fetchall())

    def gc_mark(self, now_ms: int, upload_keep_ms: int) -> tuple[int, set[str]]:
        """The mark phase on this store's own connection (see `gc_mark_db`)."""
        return gc_mark_db(self._db, now_ms, upload_keep_ms, self.upload_session_ttl_ms)

    def journal_position(self, ns: int) -> int:
        row = self._db.execute("SELECT journal_end FROM namespaces WHERE ns = ?", (ns,)).fetchone()
        return 0 if row is None else row[0]

    def namespace_info(self, ns: int) -> tuple[str, int] | None:
        """(owner account id, journal position) of namespace `ns`; None if it does not exist.
        A notify server checks a long-poll cursor's account against the owner."""
        row = self._db.execute(
            "SELECT owner, journal_end FROM namespaces WHERE ns = ?", (ns,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def changed_since(self, index: int) -> list[tuple[int, int]]:
        """(ns, journal position) of every namespace changed by an entry after `index` — the
        change feed a notify root follows."""
        return [
            (ns, pos)
            for ns, pos in self._db.execute(
                "SELECT ns, journal_end FROM namespaces WHERE last_index > ? "
                "ORDER BY last_index, ns",
                (index,),
            )
        ]

    def session_head(self, session_id: str) -> tuple[int, bool] | None:
        """(namespace, concurrent) of an upload session, without its pieces (an append needs
        no more); None if there is no such session."""
        row = self._db.execute(
            "SELECT ns, concurrent FROM upload_sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def session(self, session_id: str) -> SessionState | None:
        """An upload session (even an expired one: compare `expires_ms` with your clock)."""
        db = self._db
        row = db.execute(
            "SELECT ns, concurrent, started_ms, closed, length, total FROM upload_sessions "
            "WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        ns, concurrent, started, closed, length, total = row
        pieces = [
            SessionPiece(off, n, _blocks_dec.decode(b), _digests_dec.decode(d))
            for off, n, b, d in db.execute(
                "SELECT offset, length, blocks, digests FROM upload_pieces "
                "WHERE session_id = ? ORDER BY offset",
                (session_id,),
            )
        ]
        return SessionState(
            session_id,
            ns,
            bool(concurrent),
            started,
            started + self.upload_session_ttl_ms,
            bool(closed),
            length,
            total,
            pieces,
        )

    # -- list_folder ----------------------------------------------------------------------------
    def _folder_key(self, ns: int, s: str) -> str:
        """The key of a folder named by "", "/…", "ns:…" or "id:…" (path/not_found, not_folder)."""
        try:
            ref = paths.parse_ref(s, allow_root=True)
        except MalformedPath:
            raise _Fail("path", "malformed_path") from None
        if ref.kind == "id":
            e = self._live_by_id(ns, ref.value)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        elif ref.path.is_root:
            if not self._ns_exists(ns):
                raise _Fail("path", "not_found")
            return ""
        else:
            e = self._live(ns, ref.path.key)
        if e is None:
            raise _Fail("path", "not_found")
        if e.kind != FOLDER:
            raise _Fail("path", "not_folder")
        return e.key

    def _check_folder_key(self, ns: int, key: str) -> None:
        if key == "":
            if not self._ns_exists(ns):
                raise _Fail("path", "not_found")
            return
        e = self._live(ns, key)
        if e is None:
            raise _Fail("path", "not_found")
        if e.kind != FOLDER:
            raise _Fail("path", "not_folder")

    def list_folder(
        self,
        ns: int,
        path: str,
        recursive: bool = False,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> ListPage | MetaError:
        def q():
            key = self._folder_key(ns, path)
            page = self._list_page(
                ns, key, recursive, include_deleted, self.journal_position(ns), None, limit
            )
            return page._replace(recursive=recursive, include_deleted=include_deleted)

        return self._query(q)

    def get_latest_cursor(
        self, ns: int, path: str, recursive: bool = False, include_deleted: bool = False
    ) -> CursorState | MetaError:
        """The cursor state at the current end of the journal (no entries)."""

        def q():
            key = self._folder_key(ns, path)
            return CursorState(key, recursive, include_deleted, self.journal_position(ns))

        return self._query(q)

    def list_folder_continue(self, ns: int, *args: Any, limit: int | None = None) -> Any:
        """Continue a listing. Two call forms:

        - `list_folder_continue(ns, state, limit=None)`: `state` is a `CursorState` or its
          msgpack-decoded list (as it comes back out of a signed cursor);
        - `list_folder_continue(ns, path_key, recursive, include_deleted, position_or_resume,
          limit=None)`: `position_or_resume` is `ListPage.state`, an int (journal position) or
          (position, resume).

        Returns a `ListPage` or `MetaError`: path/not_found or path/not_folder if the folder is
        gone, `reset` if the state is not one this store made.
        """
        if args and isinstance(args[0], str):
            path_key, recursive, include_deleted, por, *rest = args
            if isinstance(por, int):
                position, resume = por, None
            else:
                position, resume = por
        else:
            raw, *rest = args
            try:
                st = msgspec.convert(raw, CursorState)
            except (msgspec.ValidationError, TypeError):
                return MetaError(["reset"])
            path_key, recursive, include_deleted = st.path_key, st.recursive, st.include_deleted
            position, resume = st.position, st.resume
        if rest:
            limit = rest[0]

        def q():
            self._check_folder_key(ns, path_key)
            if resume is None:
                page = self._changes_page(ns, path_key, recursive, position, limit)
            else:
                page = self._list_page(
                    ns, path_key, recursive, include_deleted, position, resume, limit
                )
            return page._replace(recursive=recursive, include_deleted=include_deleted)

        return self._query(q)

    def _list_page(
        self,
        ns: int,
        key: str,
        recursive: bool,
        include_deleted: bool,
        position: int,
        resume: str | None,
        limit: int | None,
    ) -> ListPage:
        limit = _clamp_limit(limit)
        entries: list[Meta] = []
        after = resume if resume is not None else ""
        if recursive and key and resume is None:
            entries.append(self._meta_of(ns, self._live(ns, key)))  # the folder itself first
            after = key
        deleted = "" if include_deleted else " AND e.kind < 3"
        want = limit - len(entries) + 1
        if recursive:
            lo, hi = paths.subtree_range(key)
            rows = self._db.execute(
                f"SELECT {_M_COLS} FROM {_M_FROM} WHERE e.ns = ? AND e.key > ? AND e.key < ?"
                f"{deleted} ORDER BY e.key LIMIT ?",
                (ns, max(after, lo), hi, want),
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {_M_COLS} FROM {_M_FROM} WHERE e.ns = ? AND e.parent_key = ? "
                f"AND e.key > ?{deleted} ORDER BY e.key LIMIT ?",
                (ns, key, after, want),
            ).fetchall()
        has_more = len(rows) == want
        if has_more:
            rows.pop()
        entries.extend(self._meta_row(r) for r in rows)
        if has_more:
            last = rows[-1][0] if rows else after
            return ListPage(entries, position, True, last, key)
        # The listing is complete: from now on the cursor follows the journal, from where the
        # listing started (changes made while it paged are replayed).
        return ListPage(entries, position, position < self.journal_position(ns), None, key)

    def _changes_page(
        self, ns: int, key: str, recursive: bool, position: int, limit: int | None
    ) -> ListPage:
        limit = _clamp_limit(limit)
        end = self.journal_position(ns)
        if position > end or position < 0:
            raise _Fail("reset")
        # Bound the rows scanned for a subtree cursor in a busy namespace: a page may come back
        # empty with has_more, and the position still advances.
        hi = min(end, position + max(16 * limit, 4096))
        if recursive and not key:
            flt, args = "", ()
        elif recursive:
            lo, top = paths.subtree_range(key)
            flt, args = " AND ((key > ? AND key < ?) OR key = ?)", (lo, top, key)
        else:
            flt, args = " AND parent_key = ?", (key,)
        rows = self._db.execute(
            f"SELECT pos, key, display FROM journal WHERE ns = ? AND pos > ? AND pos <= ?{flt} "
            "ORDER BY pos LIMIT ?",
            (ns, position, hi, *args, limit),
        ).fetchall()
        if len(rows) == limit:
            new_pos = rows[-1][0]
        else:
            new_pos = hi
        # Each changed path once, at its last change in this page, in its current state.
        last: dict[str, str] = {}
        for _pos, k, display in rows:
            last.pop(k, None)
            last[k] = display
        entries: list[Meta] = []
        for k, display in last.items():
            row = self._db.execute(
                f"SELECT {_M_COLS} FROM {_M_FROM} WHERE e.ns = ? AND e.key = ? AND e.kind < 3",
                (ns, k),
            ).fetchone()
            if row is None:
                entries.append(DeletedMeta(display.rsplit("/", 1)[-1], display.lower(), display))
            else:
                entries.append(self._meta_row(row))
        return ListPage(entries, new_pos, new_pos < end, None, key)

    # -- list_revisions -------------------------------------------------------------------------
    def list_revisions(
        self,
        ns: int,
        path: str,
        mode: str = "path",
        limit: int = 10,
        before_rev: str | None = None,
    ) -> RevisionList | MetaError:
        """A file's revisions, newest first. mode "path": every version written at the path of
        the file named by `path` (path or id); mode "id": every version of that file's id,
        wherever it was (ids survive moves)."""
        return self._query(lambda: self._list_revisions(ns, path, mode, limit, before_rev))

    def _list_revisions(
        self, ns: int, path: str, mode: str, limit: int, before_rev: str | None
    ) -> RevisionList:
        try:
            ref = paths.parse_ref(path)
        except MalformedPath:
            raise _Fail("path", "malformed_path") from None
        if mode not in ("path", "id"):
            raise _Fail("invalid_command", reason="mode is path or id")
        db = self._db
        e: _E | None
        if ref.kind == "id":
            e = self._live_by_id(ns, ref.value)
            if e is None:
                row = db.execute(
                    f"SELECT {_E_COLS} FROM entries WHERE ns = ? AND id = ? AND rev IS NOT NULL "
                    "ORDER BY deleted_ms DESC LIMIT 1",
                    (ns, ref.value),
                ).fetchone()
                e = None if row is None else _E(*row)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        else:
            e = self._entry(ns, ref.path.key)
        if e is not None and e.kind == FOLDER:
            raise _Fail("path", "not_file")
        if e is None or e.rev is None:
            raise _Fail("path", "not_found")
        is_deleted = e.kind == DELETED
        col, val = ("id", e.id) if mode == "id" else ("key", e.key)
        lim = max(1, min(int(limit), 100))
        bound = ""
        args: tuple = (ns, val)
        if before_rev is not None:
            if not paths.valid_rev(before_rev):
                raise _Fail("invalid_before_rev")
            hit = db.execute(
                f"SELECT 1 FROM revisions WHERE ns = ? AND rev = ? AND {col} = ?",
                (ns, before_rev, val),
            ).fetchone()
            if hit is None:
                raise _Fail("invalid_before_rev")
            bound = " AND rev < ?"
            args += (before_rev,)
        rows = db.execute(
            f"SELECT {_R_COLS} FROM revisions WHERE ns = ? AND {col} = ?{bound} "
            "ORDER BY rev DESC LIMIT ?",
            (*args, lim + 1),
        ).fetchall()
        gone: dict[str, bool] = {}
        out = []
        for row in rows[:lim]:
            r = _R(*row)
            if r.id not in gone:
                gone[r.id] = self._live_by_id(ns, r.id) is None
            out.append(self._rev_meta(r, gone[r.id]))
        server_deleted = (
            format_ts(e.deleted_ms) if is_deleted and e.deleted_ms is not None else None
        )
        return RevisionList(is_deleted, server_deleted, out, len(rows) > lim)

    # -- debugging and tests ------------------------------------------------------------------
    def dump(self, tables: list[str] | None = None) -> dict[str, list[tuple]]:
        """Every row of `tables` (default: all), in primary-key order: compare two stores."""
        names = tables or [
            n
            for (n,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {n: self._db.execute(f"SELECT * FROM {n} ORDER BY 1, 2").fetchall() for n in names}


def gc_mark_db(
    db: sqlite3.Connection, now_ms: int, upload_keep_ms: int, session_ttl_ms: int = SESSION_TTL_MS
) -> tuple[int, set[str]]:
    """Garbage collection's mark phase, in one read transaction of `db` (a snapshot: another
    connection to the same WAL database may keep applying meanwhile).

    Returns (the applied raft index the snapshot is at, the live block ids): every block of
    every kept revision, every block of a live upload session's pieces, every block some
    namespace uploaded or referenced after `now_ms - upload_keep_ms`, every block condemned
    but not yet released (a run in progress owns those), and the block store's marker.
    """
    live: set[str] = set()
    db.execute("BEGIN")
    try:
        row = db.execute("SELECT v FROM kv WHERE k = 'applied'").fetchone()
        index = 0 if row is None else int(row[0])
        for (blob,) in db.execute("SELECT blocks FROM revisions"):
            live.update(b.id for b in _blocks_dec.decode(blob))
        for (blob,) in db.execute(
            "SELECT p.blocks FROM upload_pieces p JOIN upload_sessions s "
            "ON s.session_id = p.session_id WHERE s.started_ms > ?",
            (now_ms - session_ttl_ms,),
        ):
            live.update(b.id for b in _blocks_dec.decode(blob))
        live.update(
            b
            for (b,) in db.execute(
                "SELECT DISTINCT block_id FROM ns_blocks WHERE last_ms > ?",
                (now_ms - upload_keep_ms,),
            )
        )
        live.update(b for (b,) in db.execute("SELECT block_id FROM gc_condemned"))
        marker = db.execute("SELECT v FROM kv WHERE k = 'store_marker'").fetchone()
        if marker is not None and marker[0]:
            live.add(marker[0])
    finally:
        db.execute("COMMIT")
    return index, live


def _with_name(m: Meta) -> Meta:
    """`_meta_of` on a synthetic row leaves `name` empty: fill it from the display path."""
    name = m.path_display.rsplit("/", 1)[-1]
    return msgspec.structs.replace(m, name=name)


def _validate_blocks(blocks: list[BlockRef], size: int) -> None:
    total = 0
    for b in blocks:
        if _HEX64.fullmatch(b.id) is None or b.size < 0:
            raise _Fail("invalid_command", reason="block ids are 64 lowercase hex, sizes ≥ 0")
        total += b.size
    if total != size:
        raise _Fail("invalid_command", reason="the block sizes do not add up to the size")


def _validate_symlink(c: CommitFile) -> None:
    why = symlink_target_problem(c.symlink_target)
    why = why or symlink_blocks_problem(c.symlink_target, c.blocks, c.size)
    if why is None and c.content_hash != dropbox_content_hash(c.symlink_target.encode()):
        why = "a symlink's content_hash is that of its target"
    if why is None and c.executable:
        why = "a symlink is never executable"
    if why is not None:
        raise _Fail("invalid_command", reason=why)


def _validate_piece(blocks: list[BlockRef], length: int, digests: list[bytes] | None) -> None:
    if length < 0:
        raise _Fail("invalid_command", reason="negative length")
    _validate_blocks(blocks, length)
    if digests is not None:
        want = -(-length // BLOCK_WINDOW_BYTES)
        if len(digests) != want or any(len(d) != 32 for d in digests):
            raise _Fail("invalid_command", reason="one 32-byte digest per 4 MiB window")


def _clamp_limit(limit: int | None) -> int:
    if limit is None:
        return LIST_LIMIT_MAX
    return max(1, min(int(limit), LIST_LIMIT_MAX))


def _too_many_tag(cmd: Any) -> str:
    return (
        "too_many_files" if isinstance(cmd, Move | Copy | Delete) else "too_many_write_operations"
    )
