"""Reading the tables: row types, the lookups and the `Meta` values built from rows.

Shared by the writes (`writes`, `sessions`, `accounts`, `gcstate`) and the read queries
(`queries`): every function takes the SQLite connection and reads only; none writes. A lookup
that cannot answer raises `Fail` with the Dropbox error tags of the caller's route (`outer`):
the apply dispatcher turns it into the command's `MetaError` and rolls the command back, a
query returns it.
"""

from __future__ import annotations

import datetime
import re
import sqlite3
from typing import Any, NamedTuple

import msgspec

from . import paths
from .commands import BlockRef, DeletedMeta, FileMeta, FolderMeta, Meta, MetaError
from .paths import MalformedPath
from .schema import DELETED, FILE, FOLDER

HEX64 = re.compile(r"[0-9a-f]{64}")  # a block id or a content hash
BLOCKS_ENC = msgspec.msgpack.Encoder()
BLOCKS_DEC = msgspec.msgpack.Decoder(list[BlockRef])
DIGESTS_DEC = msgspec.msgpack.Decoder(list[bytes] | None)

E_COLS = "key, parent_key, name, display, kind, id, rev, deleted_ms"
# an entry joined with its current revision: enough to build its Meta
M_COLS = (
    "e.key, e.name, e.display, e.kind, e.id, e.rev, "
    "r.size, r.content_hash, r.client_modified, r.server_modified, r.symlink, r.executable"
)
M_FROM = "entries e LEFT JOIN revisions r ON r.ns = e.ns AND r.rev = e.rev AND e.kind = 1"
R_COLS = (
    "rev, id, key, display, size, content_hash, client_modified, server_modified, stamp_ms, "
    "blocks, symlink, executable"
)


class Entry(NamedTuple):
    """A row of `entries` (`E_COLS`)."""

    key: str
    parent_key: str
    name: str
    display: str
    kind: int
    id: str | None
    rev: str | None
    deleted_ms: int | None


class Revision(NamedTuple):
    """A row of `revisions` (`R_COLS`)."""

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


class Fail(Exception):
    """Abort the running command (its savepoint is rolled back) or query with this error."""

    def __init__(self, *tags: str, **extra: Any) -> None:
        super().__init__("/".join(tags))
        self.error = MetaError(list(tags), extra)


def format_ts(ms: int) -> str:
    """`%Y-%m-%dT%H:%M:%SZ` of a stamped time (a pure conversion, not a clock read)."""
    t = datetime.datetime.fromtimestamp(ms // 1000, tz=datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def ns_exists(db: sqlite3.Connection, ns: int) -> bool:
    return db.execute("SELECT 1 FROM namespaces WHERE ns = ?", (ns,)).fetchone() is not None


def entry(db: sqlite3.Connection, ns: int, key: str) -> Entry | None:
    row = db.execute(f"SELECT {E_COLS} FROM entries WHERE ns = ? AND key = ?", (ns, key)).fetchone()
    return None if row is None else Entry(*row)


def live(db: sqlite3.Connection, ns: int, key: str) -> Entry | None:
    e = entry(db, ns, key)
    return e if e is not None and e.kind != DELETED else None


def live_by_id(db: sqlite3.Connection, ns: int, id_: str) -> Entry | None:
    row = db.execute(
        f"SELECT {E_COLS} FROM entries WHERE ns = ? AND id = ? AND kind < 3 LIMIT 1",
        (ns, id_),
    ).fetchone()
    return None if row is None else Entry(*row)


def revision(db: sqlite3.Connection, ns: int, rev: str) -> Revision | None:
    row = db.execute(
        f"SELECT {R_COLS} FROM revisions WHERE ns = ? AND rev = ?", (ns, rev)
    ).fetchone()
    return None if row is None else Revision(*row)


def meta_of(db: sqlite3.Connection, ns: int, e: Entry) -> Meta:
    if e.kind == FOLDER:
        return FolderMeta(e.id, e.name, e.display.lower(), e.display)
    if e.kind == DELETED:
        return DeletedMeta(e.name, e.display.lower(), e.display)
    r = revision(db, ns, e.rev)
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


def meta_row(row: tuple) -> Meta:
    """A row of `M_COLS` → its Meta."""
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


def rev_meta(r: Revision, is_deleted: bool = False) -> FileMeta:
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


def lookup_live(db: sqlite3.Connection, ns: int, s: str, outer: str) -> Entry:
    """The live entry named by "/…", "ns:…" or "id:…", or fail with outer/not_found."""
    try:
        ref = paths.parse_ref(s)
    except MalformedPath:
        raise Fail(outer, "malformed_path") from None
    if ref.kind == "id":
        e = live_by_id(db, ns, ref.value)
    elif ref.ns is not None and ref.ns != ns:
        e = None
    else:
        e = live(db, ns, ref.path.key)
    if e is None:
        raise Fail(outer, "not_found")
    return e
