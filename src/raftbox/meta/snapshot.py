"""Snapshot images of the metadata store: making one, and loading one into a store.

An image is a whole SQLite database file in the legacy (rollback) journal mode — what
`sqlite3.Connection.deserialize` takes (a WAL image will not deserialize). Raft sends it to a
member that fell behind the log (`raft.node`: "Snapshots").

- `image(db)`: the image of `db` now, on the caller's thread.
- `begin_image(path, applied)`: pin a file-backed store's state now, between two applies, and
  return a function that makes its image later, once, in any one thread, while applying goes
  on. It opens a second, read-only connection and starts a read transaction on it (WAL: the
  reader keeps seeing the database as of that commit; the writer does not wait for it, and
  checkpoints stop short of what it reads). The function copies that state with SQLite's
  backup API into a temporary file next to the database (the page copy runs without the GIL,
  so the event loop keeps running), reads the file, ends the transaction and deletes the file.
- `load(db, data)`: replace the content of `db` by an image's. The caller then brings the
  schema up to date (`schema.create`) and reloads what it keeps in memory.

This is the only module of the store that touches files other than the database itself.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable


def image(db: sqlite3.Connection) -> bytes:
    """The image of `db` now, made on the caller's thread."""
    data = bytearray(db.serialize())
    if len(data) > 19:
        data[18] = data[19] = 1  # legacy journal mode: a WAL image will not deserialize
    return bytes(data)


def begin_image(path: str, applied: int) -> Callable[[], bytes]:
    """Pin the state of the store at `path`, which must be at `applied` (checked: the pin must
    land between two applies); return the function that reads its image (module docstring)."""
    db = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        db.execute("BEGIN")
        row = db.execute("SELECT v FROM kv WHERE k = 'applied'").fetchone()  # pins it
        pinned = 0 if row is None else int(row[0])
    except BaseException:
        db.close()
        raise
    if pinned != applied:
        db.close()
        raise AssertionError(f"snapshot pinned index {pinned}, applied {applied}")
    directory, name = os.path.split(path)
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
                f.write(b"\x01\x01")  # legacy journal mode, as `image()`
                f.seek(0)
                return f.read()
        finally:
            db.close()
            os.unlink(tmp)

    return read_image


def load(db: sqlite3.Connection, data: bytes) -> None:
    """Replace the content of `db` by the image `data`."""
    src = sqlite3.connect(":memory:")
    try:
        src.deserialize(data)
        src.backup(db)
    finally:
        src.close()
