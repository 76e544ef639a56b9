"""The sync client's SQLite index in `DIR/.raftbox/index.db`: the synced tree and the scan cache.

- `synced`: one row per node of the synced tree (the last state both sides agreed on,
  DESIGN.md §8), keyed by path key; `load_synced()` rebuilds the `trees.Tree`.
- `scan_cache`: `(inode, size, mtime_ns) → (content_hash, blocklist)`, so a rescan re-reads only
  files whose stat changed (`scanner.scan`).
- `remote`: the server's tree as last listed (same columns as `synced`), kept current by
  applying `list_folder/continue` deltas from the cursor in `state`, so a pass costs one small
  request instead of a full listing.
- `pending`: a write-ahead record of steps in flight — a download about to be renamed into
  place (with its temp file's name and the synced node to record), an upload about to be
  committed, a move about to be made here or on the server (`tmp` holds its destination) —
  so that a process killed between the step and its record finds out, on restart,
  what happened (`engine` reconciles them before the next pass plans anything).
- `state`: small key/value pairs (the remote cursor, the server and account this folder is
  synced with, whether the last pass found the trees settled and nothing wrote either tree
  since: `agreed`, which lets a no-op pass skip loading the remote tree, ...).
- `held`: the server's entries this client cannot represent (`remote.Held`: key, path as the
  server gave it, reason, whether the path is valid), kept current with the remote tree. Lone
  surrogates (bytes that were not UTF-8), which SQLite's TEXT cannot take, are stored escaped
  (`\\udcff`), in keys and paths alike.

Every integer written is within SQLite's INTEGER range, whatever the disk or the server says:
mtimes are clamped (`limits.clamp_mtime_ns`: a local file may carry a date past 2262 too, and
its cache entry then simply never hits), inodes above 2**63 (64-bit unsigned on some file
systems) are stored as their two's complement and read back as they were, other integers are
clamped. A value the index cannot hold never stops a sync.

The database runs in WAL mode with `synchronous=NORMAL`: a crash loses at most the last
transactions, never consistency. Writes happen in batches, one transaction each (`batch()`, or
the `*_many` helpers), which is what keeps the executor resumable: a batch is either recorded
or not at all. One `Index` is used by one thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from .limits import INT64_MAX, clamp_int64, clamp_mtime_ns
from .trees import Kind, Node, Tree, parent_key, path_key, rebase_path

STATE_DIR = ".raftbox"
AGREED_STATE = "trees_agreed"  # see `Index.agreed` (and the triggers of `_SCHEMA`)
DB_FILE = "index.db"
SCHEMA_VERSION = 1

# The columns of a tree node, shared by the three tables that hold nodes.
_NODE_COLUMNS = """
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_hash TEXT,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    inode INTEGER,
    executable INTEGER,
    link_target TEXT,
    remote_id TEXT,
    rev TEXT"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS synced (key TEXT PRIMARY KEY,{_NODE_COLUMNS});
CREATE TABLE IF NOT EXISTS remote (key TEXT PRIMARY KEY,{_NODE_COLUMNS});
CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, op TEXT NOT NULL, tmp TEXT,{_NODE_COLUMNS});
CREATE TABLE IF NOT EXISTS scan_cache (
    inode INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    blocklist TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS synced_insert AFTER INSERT ON synced
    BEGIN DELETE FROM state WHERE k = 'trees_agreed'; END;
CREATE TRIGGER IF NOT EXISTS synced_update AFTER UPDATE ON synced
    BEGIN DELETE FROM state WHERE k = 'trees_agreed'; END;
CREATE TRIGGER IF NOT EXISTS synced_delete AFTER DELETE ON synced
    BEGIN DELETE FROM state WHERE k = 'trees_agreed'; END;
CREATE TRIGGER IF NOT EXISTS remote_insert AFTER INSERT ON remote
    BEGIN DELETE FROM state WHERE k = 'trees_agreed'; END;
CREATE TRIGGER IF NOT EXISTS remote_update AFTER UPDATE ON remote
    BEGIN DELETE FROM state WHERE k = 'trees_agreed'; END;
CREATE TRIGGER IF NOT EXISTS remote_delete AFTER DELETE ON remote
    BEGIN DELETE FROM state WHERE k = 'trees_agreed'; END;
CREATE TABLE IF NOT EXISTS held (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    why TEXT NOT NULL,
    valid INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What a file's bytes were when it had this (inode, size, mtime_ns)."""

    inode: int
    size: int
    mtime_ns: int
    content_hash: str
    blocklist: tuple[tuple[str, int], ...]  # (block id, size) in order


_ce_inode, _ce_size, _ce_mtime_ns, _ce_content_hash, _ce_blocklist = (
    getattr(CacheEntry, f).__set__
    for f in ("inode", "size", "mtime_ns", "content_hash", "blocklist")
)


def _opt_bool(v: int | None) -> bool | None:
    return None if v is None else bool(v)


_KINDS = {k.value: k for k in Kind}
_COLS = (
    "key, path, kind, content_hash, size, mtime_ns, inode, executable, link_target, remote_id, rev"
)


_U64 = 2**64


def _text(s: str) -> str:
    """`s` storable as SQLite TEXT (lone surrogates escaped)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def _ino_in(inode: int | None) -> int | None:
    """An inode number as stored (64-bit unsigned ones above 2**63 as negative integers)."""
    return inode - _U64 if inode is not None and inode > INT64_MAX else inode


def _ino_out(v: int | None) -> int | None:
    return v + _U64 if v is not None and v < 0 else v


def _mtime_in(ns: int | None) -> int | None:
    return None if ns is None else clamp_mtime_ns(ns)


def _node(row: tuple) -> Node:
    key, path, kind, ch, size, mtime, inode, ex, target, rid, rev = row
    if inode is not None and inode < 0:
        inode += _U64  # `_ino_out`, inline: a pass loads two trees of 100,000 rows
    return Node.trusted(key, path, _KINDS[kind], ch, size, mtime, inode,
                        None if ex is None else bool(ex), target, rid, rev)  # fmt: skip


def _row(n: Node) -> tuple:
    """`n` as the columns of `_COLS` (integers within SQLite's range: see the module doc)."""
    ex = None if n.executable is None else int(n.executable)
    return (n.key, n.path, n.kind.value, n.content_hash, clamp_int64(n.size),
            _mtime_in(n.mtime_ns), _ino_in(n.inode), ex, n.link_target, n.remote_id,
            n.rev)  # fmt: skip


def _statements(script: str) -> list[str]:
    """The statements of `script` (a trigger's body holds `;` too: `sqlite3.complete_statement`
    says where each one ends)."""
    out, cur = [], ""
    for piece in script.split(";"):
        cur += piece + ";"
        if sqlite3.complete_statement(cur):
            if cur.strip(" \n;"):
                out.append(cur.strip())
            cur = ""
    return out


def rooted(nodes: dict[str, Node]) -> dict[str, Node]:
    """`nodes` without the entries whose parent is not a folder in `nodes` (and their subtrees)."""
    out: dict[str, Node] = {}
    for k in sorted(nodes, key=lambda k: k.count("/")):
        pk = parent_key(k)
        if not pk or (pk in out and out[pk].is_folder):
            out[k] = nodes[k]
    return out


class Index:
    """The index of the sync root `root` (created on first open)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.dir = self.root / STATE_DIR
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.path = self.dir / DB_FILE
        # One user at a time, but the scan may run in a worker thread while the loop waits.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        with self.batch():
            for stmt in _statements(_SCHEMA):
                self.db.execute(stmt)
            v = self.get_state("schema")
            if v is None:
                self.set_state("schema", str(SCHEMA_VERSION))
            elif int(v) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema {v}, this client knows {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for everything inside (nested batches join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self.db.execute("ROLLBACK")
            raise
        self._depth = 0
        self.db.execute("COMMIT")

    # -- state -----------------------------------------------------------------------------

    def get_state(self, k: str) -> str | None:
        row = self.db.execute("SELECT v FROM state WHERE k = ?", (k,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, k: str, v: str | None) -> None:
        with self.batch():
            if v is None:
                self.db.execute("DELETE FROM state WHERE k = ?", (k,))
            else:
                self.db.execute("INSERT OR REPLACE INTO state (k, v) VALUES (?, ?)", (k, v))

    # -- the synced tree -------------------------------------------------------------------

    def load_synced(self) -> Tree:
        return self._load("synced")

    def _load(self, table: str) -> Tree:
        """The tree in `table`. Entries whose parent folder is missing (which no sequence of
        recorded operations produces, but a damaged file might) are dropped, not fatal: the
        planner then sees them as never synced, which uploads or downloads, never deletes."""
        rows = self.db.execute(f"SELECT {_COLS} FROM {table}").fetchall()
        nodes = {row[0]: _node(row) for row in rows}
        try:
            return Tree(nodes)  # checks every parent: the common case, one pass
        except ValueError:
            return Tree(rooted(nodes))

    def apply(self, put: Iterable[Node] = (), delete: Iterable[str] = ()) -> None:
        """Record nodes and forget keys (with their subtrees), in one transaction."""
        self._apply("synced", put, delete)

    def move(self, src_key: str, dst_path: str) -> None:
        """The synced subtree at `src_key` now lives at display path `dst_path` (whatever was
        at the destination's key is replaced; a no-op if `src_key` is not recorded). One
        transaction, touching only the two subtrees."""
        sub = self._subtree("synced", src_key)
        if not sub:
            return
        src_path = sub[0].path
        moved = [replace(n, path=rebase_path(n.path, src_path, dst_path)) for n in sub]
        self._apply("synced", moved, [src_key, path_key(dst_path)])

    def _subtree(self, table: str, key: str) -> list[Node]:
        rows = self.db.execute(
            f"SELECT {_COLS} FROM {table} WHERE key = ? UNION ALL "
            f"SELECT {_COLS} FROM {table} WHERE key >= ? AND key < ?",
            (key, key + "/", key + "0"),
        ).fetchall()
        return sorted((_node(r) for r in rows), key=lambda n: n.key.count("/"))

    # -- transfers in flight ---------------------------------------------------------------

    def pending_put(self, op: str, rows: Iterable[tuple[str | None, Node]]) -> None:
        """Record transfers about to happen: (temp file name or None, node) per file."""
        with self.batch():
            self.db.executemany(
                "INSERT OR REPLACE INTO pending (key, op, tmp, path, kind, content_hash, size,"
                " mtime_ns, inode, executable, link_target, remote_id, rev)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(n.key, op, tmp, *_row(n)[1:]) for tmp, n in rows],
            )

    def pending_any(self) -> bool:
        return self.db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is not None

    def pending_all(self) -> list[tuple[str, str | None, Node]]:
        rows = self.db.execute(f"SELECT op, tmp, {_COLS} FROM pending").fetchall()
        return [(r[0], r[1], _node(r[2:])) for r in rows]

    def pending_drop(self, keys: Iterable[str]) -> None:
        with self.batch():
            self.db.executemany("DELETE FROM pending WHERE key = ?", [(k,) for k in keys])

    # -- the remote tree -------------------------------------------------------------------

    def load_remote(self) -> Tree:
        return self._load("remote")

    def synced_node(self, key: str) -> Node | None:
        row = self.db.execute(f"SELECT {_COLS} FROM synced WHERE key = ?", (key,)).fetchone()
        return None if row is None else _node(row)

    def remote_node(self, key: str) -> Node | None:
        row = self.db.execute(f"SELECT {_COLS} FROM remote WHERE key = ?", (key,)).fetchone()
        return None if row is None else _node(row)

    def apply_remote(
        self, put: Iterable[Node] = (), delete: Iterable[str] = (), *, reset: bool = False
    ) -> None:
        """Apply a listing delta (in one transaction; `reset`: replace the whole tree)."""
        with self.batch():
            if reset:
                self.db.execute("DELETE FROM remote")
            self._apply("remote", put, delete)

    def _apply(self, table: str, put: Iterable[Node], delete: Iterable[str]) -> None:
        rows = [_row(n) for n in put]
        keys = [(k,) for k in delete]
        if not rows and not keys:
            return
        with self.batch():
            # Two statements that each use the primary key: the subtree of "a/b" is the key
            # range ["a/b/", "a/b0") ('0' follows '/'); an OR or substr() would scan the table.
            self.db.executemany(f"DELETE FROM {table} WHERE key = ?", keys)
            self.db.executemany(
                f"DELETE FROM {table} WHERE key >= ? AND key < ?",
                [(k + "/", k + "0") for (k,) in keys],
            )
            self.db.executemany(
                f"INSERT OR REPLACE INTO {table} (key, path, kind, content_hash, size, mtime_ns,"
                " inode, executable, link_target, remote_id, rev)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    # -- the trees agreed ------------------------------------------------------------------

    def agreed(self) -> bool:
        """Did the last pass find the trees settled (`planner.settled`), with neither the
        remote nor the synced table written since? Then the remote tree, as far as `settled`
        reads it (keys, paths, revs, ids, content), is the synced tree, and a pass may check
        its scan against the synced tree alone without loading the remote one. Every write
        to either table forgets it, in the write's own transaction: triggers in the database
        file do it, so a write by any version of this client counts (one that knows nothing
        of the mark included)."""
        return self.get_state(AGREED_STATE) is not None

    def set_agreed(self) -> None:
        self.set_state(AGREED_STATE, "1")

    # -- held server entries ---------------------------------------------------------------

    def held_all(self) -> list[tuple[str, str, bool]]:
        """(path, reason, valid) of every held server entry, in key order; `valid`: the path
        is a valid one (to hold on every side), not only a name to report."""
        rows = self.db.execute("SELECT path, why, valid FROM held ORDER BY key").fetchall()
        return [(p, w, bool(v)) for p, w, v in rows]

    def held_any(self) -> bool:
        return self.db.execute("SELECT 1 FROM held LIMIT 1").fetchone() is not None

    def held_put(self, key: str, path: str, why: str, valid: bool) -> None:
        self.held_put_many([(key, path, why, valid)])

    def held_put_many(self, rows: Iterable[tuple[str, str, str, bool]]) -> None:
        with self.batch():
            self.db.executemany(
                "INSERT OR REPLACE INTO held (key, path, why, valid) VALUES (?, ?, ?, ?)",
                [(_text(k), _text(p), w, int(v)) for k, p, w, v in rows],
            )

    def held_forget(self, key: str, *, subtree: bool) -> None:
        """Forget the held entry at `key` (and, with `subtree`, every one below it)."""
        key = _text(key)
        with self.batch():
            self.db.execute("DELETE FROM held WHERE key = ?", (key,))
            if subtree:
                self.db.execute(
                    "DELETE FROM held WHERE key >= ? AND key < ?", (key + "/", key + "0")
                )

    def held_reset(self, rows: Iterable[tuple[str, str, str, bool]]) -> None:
        """Replace every held entry with `rows` (key, path, reason, valid)."""
        with self.batch():
            self.db.execute("DELETE FROM held")
            self.held_put_many(rows)

    def save_synced(self, tree: Tree) -> None:
        """Replace the whole synced tree with `tree` (one transaction)."""
        with self.batch():
            self.db.execute("DELETE FROM synced")
            self.apply(put=tree.values())

    # -- the scan cache --------------------------------------------------------------------

    def cache_get(self, inode: int, size: int, mtime_ns: int) -> CacheEntry | None:
        if _mtime_in(mtime_ns) != mtime_ns:
            return None  # stored clamped: two such stats would look alike
        row = self.db.execute(
            "SELECT content_hash, blocklist FROM scan_cache"
            " WHERE inode = ? AND size = ? AND mtime_ns = ?",
            (_ino_in(inode), clamp_int64(size), _mtime_in(mtime_ns)),
        ).fetchone()
        if row is None:
            return None
        blocks = tuple((b, int(s)) for b, s in json.loads(row[1]))
        return CacheEntry(inode, size, mtime_ns, row[0], blocks)

    def cache_load_all(self) -> dict[int, CacheEntry]:
        """Every cache entry by inode, read in one query: what a full scan looks up (a
        `cache_get` per file costs a query and a JSON parse each; msgspec parses ~5x faster
        than json, straight into the tuples, and checks the shape on the way)."""
        import msgspec

        decode = msgspec.json.Decoder(tuple[tuple[str, int], ...]).decode
        rows = self.db.execute(
            "SELECT inode, size, mtime_ns, content_hash, blocklist FROM scan_cache"
        ).fetchall()
        out = {}
        new = object.__new__
        for r in rows:
            ino = _ino_out(r[0])
            e = new(CacheEntry)  # the slots' setters: twice as fast as the frozen __init__
            _ce_inode(e, ino)
            _ce_size(e, r[1])
            _ce_mtime_ns(e, r[2])
            _ce_content_hash(e, r[3])
            _ce_blocklist(e, decode(r[4]))
            out[ino] = e
        return out

    def cache_put_many(self, entries: Iterable[CacheEntry]) -> None:
        with self.batch():
            self.db.executemany(
                "INSERT OR REPLACE INTO scan_cache (inode, size, mtime_ns, content_hash,"
                " blocklist) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        _ino_in(e.inode),
                        clamp_int64(e.size),
                        _mtime_in(e.mtime_ns),
                        e.content_hash,
                        json.dumps([list(b) for b in e.blocklist], separators=(",", ":")),
                    )  # fmt: skip
                    for e in entries
                ],
            )

    def cache_retain(self, inodes: Iterable[int]) -> int:
        """Drop cache entries of every inode not in `inodes` (after a full scan); how many."""
        keep = set(inodes)
        with self.batch():
            gone = [
                i for (i,) in self.db.execute("SELECT inode FROM scan_cache")
                if _ino_out(i) not in keep
            ]  # fmt: skip
            self.db.executemany("DELETE FROM scan_cache WHERE inode = ?", [(i,) for i in gone])
        return len(gone)
