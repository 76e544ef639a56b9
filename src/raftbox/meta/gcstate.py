"""Block rights and the garbage collector's replicated state.

Block rights (`ns_blocks`): a namespace may reference a block only if it uploaded it or already
holds it (`ns_has_blocks`; the Dropship guard); every command that uploads or references blocks
records that right with its stamp and raft index (`grant`), which the GC's mark phase reads.
`RecordUpload` records an upload that no commit names yet; `validate_blocks` checks a
blocklist a command brings.

The GC's replicated half (`raftbox.gc` runs the collector): `GcCondemn` takes the lease
and condemns blocks no one touched since the index the run marked from; `GcRelease` moves its
condemned blocks to `gc_deleted` under a new generation (`gc_gen`) and forgets deletions older
than `GC_DELETED_KEEP_MS` (raising `gc_floor`). A command that stored blocks carries the
generation its blockserver read first; `gc_check` fails it with `gc_retry` if one of its blocks
is condemned now or was deleted by a later generation. `gc_mark_db` is the mark phase, in a
read transaction of its own. `SetStoreMarker` records the block store's marker block, which
the mark phase always keeps.

Writes take an `ApplyContext` (see `context`); reads take the connection.
"""

from __future__ import annotations

import sqlite3

import msgspec

from .commands import (
    SESSION_TTL_MS,
    BlockRef,
    GcCondemn,
    GcRelease,
    GcResult,
    RecordUpload,
    SetStoreMarker,
)
from .context import MAX_BATCH_ENTRIES, ApplyContext, check_ns
from .rows import BLOCKS_DEC, HEX64, Fail
from .schema import get_kv, set_kv

GC_DELETED_KEEP_MS = 3600 * 1000

# -- commands -------------------------------------------------------------------------------


def validate_blocks(blocks: list[BlockRef], size: int) -> None:
    total = 0
    for b in blocks:
        if HEX64.fullmatch(b.id) is None or b.size < 0:
            raise Fail("invalid_command", reason="block ids are 64 lowercase hex, sizes ≥ 0")
        total += b.size
    if total != size:
        raise Fail("invalid_command", reason="the block sizes do not add up to the size")


def grant(ctx: ApplyContext, ns: int, blocks: list[BlockRef]) -> None:
    """`ns` uploaded (or references) `blocks`: record its right and touch them (within a
    `CommitBatch`, when the batch ends: `context.BatchMemo`)."""
    memo = ctx.batch
    if memo is not None:
        memo.grants.extend((ns, b.id, b.size) for b in blocks)
        return
    write_grants(ctx, [(ns, b.id, b.size) for b in blocks])


def write_grants(ctx: ApplyContext, grants: list[tuple[int, str, int]]) -> None:
    """(ns, block id, size) rights, in order: a row's first grant sets its size."""
    if grants:
        ctx.db.executemany(
            "INSERT INTO ns_blocks (ns, block_id, size, last_ms, last_idx) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (ns, block_id) DO UPDATE SET "
            "last_ms = excluded.last_ms, last_idx = excluded.last_idx",
            [(ns, bid, size, ctx.now_ms, ctx.index) for ns, bid, size in grants],
        )


def gc_check(ctx: ApplyContext, blocks: list[BlockRef], gen: int | None) -> None:
    """Fail with `gc_retry` if a block just stored may have been deleted under the caller's
    feet: it is condemned now, or a GC generation after `gen` deleted it."""
    if gen is None or not blocks:
        return
    db = ctx.db
    if gen < int(get_kv(ctx.db, "gc_floor", 0)):
        raise Fail("gc_retry", ids=[], reason="stale GC generation")
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
        raise Fail("gc_retry", ids=sorted(bad))


def record_upload(ctx: ApplyContext, c: RecordUpload) -> None:
    check_ns(ctx, c.ns)
    if len(c.blocks) > MAX_BATCH_ENTRIES:
        raise Fail("invalid_command", reason="too many blocks")
    validate_blocks(c.blocks, sum(b.size for b in c.blocks))
    gc_check(ctx, c.blocks, c.gc_gen)
    grant(ctx, c.ns, c.blocks)
    return None


def gc_condemn(ctx: ApplyContext, c: GcCondemn) -> GcResult:
    if len(c.ids) > MAX_BATCH_ENTRIES or not c.run_id or c.lease_ms <= 0:
        raise Fail("invalid_command", reason="bad GcCondemn")
    lease = gc_lease(ctx.db)
    if lease is not None and lease[0] != c.run_id and lease[1] > ctx.now_ms:
        raise Fail("gc_busy", run_id=lease[0], until_ms=lease[1])
    db = ctx.db
    set_kv(ctx.db, "gc_lease", msgspec.msgpack.encode([c.run_id, ctx.now_ms + c.lease_ms]))
    # Blocks condemned earlier — by this run before it was interrupted, or by a run whose
    # lease expired — are this run's to delete now.
    adopted = [b for (b,) in db.execute("SELECT block_id FROM gc_condemned ORDER BY block_id")]
    db.execute("UPDATE gc_condemned SET run_id = ? WHERE run_id != ?", (c.run_id, c.run_id))
    condemned: list[str] = []
    for bid in sorted(set(c.ids)):
        if HEX64.fullmatch(bid) is None:
            raise Fail("invalid_command", reason="block ids are 64 lowercase hex")
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
    return GcResult(condemned, adopted, int(get_kv(ctx.db, "gc_gen", 0)))


def gc_release(ctx: ApplyContext, c: GcRelease) -> GcResult:
    if len(c.ids) > MAX_BATCH_ENTRIES:
        raise Fail("invalid_command", reason="too many ids")
    db = ctx.db
    gen = int(get_kv(ctx.db, "gc_gen", 0))
    mine = []
    for bid in sorted(set(c.ids)):
        row = db.execute("SELECT run_id FROM gc_condemned WHERE block_id = ?", (bid,)).fetchone()
        if row is not None and row[0] == c.run_id:
            mine.append(bid)
    if mine:
        gen += 1
        set_kv(ctx.db, "gc_gen", gen)
        for bid in mine:
            db.execute("DELETE FROM gc_condemned WHERE block_id = ?", (bid,))
            db.execute(
                "INSERT OR REPLACE INTO gc_deleted (block_id, gen, ms) VALUES (?, ?, ?)",
                (bid, gen, ctx.now_ms),
            )
    # Forget deletions older than an hour: a command that read its generation before the
    # oldest one forgotten is refused as stale (`gc_floor`) instead of being checked.
    cutoff = ctx.now_ms - GC_DELETED_KEEP_MS
    row = db.execute("SELECT MAX(gen) FROM gc_deleted WHERE ms < ?", (cutoff,)).fetchone()
    if row is not None and row[0] is not None:
        set_kv(ctx.db, "gc_floor", max(int(get_kv(ctx.db, "gc_floor", 0)), row[0]))
        db.execute("DELETE FROM gc_deleted WHERE ms < ?", (cutoff,))
    lease = gc_lease(ctx.db)
    if c.done and lease is not None and lease[0] == c.run_id:
        db.execute("DELETE FROM kv WHERE k = 'gc_lease'")
    return GcResult([], [], gen)


def set_store_marker(ctx: ApplyContext, c: SetStoreMarker) -> bool:
    if HEX64.fullmatch(c.block_id) is None:
        raise Fail("invalid_command", reason="a marker is a block id (64 lowercase hex)")
    if get_kv(ctx.db, "store_marker"):
        return False
    set_kv(ctx.db, "store_marker", c.block_id)
    return True


# -- reads ------------------------------------------------------------------------------------


def gc_lease(db: sqlite3.Connection) -> tuple[str, int] | None:
    raw = get_kv(db, "gc_lease")
    return None if not raw else tuple(msgspec.msgpack.decode(raw))  # type: ignore[return-value]


def ns_has_blocks(db: sqlite3.Connection, ns: int, ids: list[str]) -> set[str]:
    """Which of `ids` this namespace may reference (uploaded itself or already holds)."""
    have: set[str] = set()
    uniq = sorted(set(ids))
    for i in range(0, len(uniq), 500):
        chunk = uniq[i : i + 500]
        marks = ",".join("?" * len(chunk))
        have.update(
            b
            for (b,) in db.execute(
                f"SELECT block_id FROM ns_blocks WHERE ns = ? AND block_id IN ({marks})",
                (ns, *chunk),
            )
        )
    return have


def gc_generation(db: sqlite3.Connection) -> int:
    """The GC generation: how many GcRelease commands released blocks (commands carry the
    value their blockserver read before storing blocks, see `CommitFile.gc_gen`)."""
    return int(get_kv(db, "gc_gen", 0))


def gc_state(db: sqlite3.Connection) -> tuple[tuple[str, int] | None, dict[str, str]]:
    """(lease (run_id, until_ms) or None, {condemned block id: run_id})."""
    rows = db.execute("SELECT block_id, run_id FROM gc_condemned ORDER BY block_id")
    return gc_lease(db), dict(rows.fetchall())


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
            live.update(b.id for b in BLOCKS_DEC.decode(blob))
        for (blob,) in db.execute(
            "SELECT p.blocks FROM upload_pieces p JOIN upload_sessions s "
            "ON s.session_id = p.session_id WHERE s.started_ms > ?",
            (now_ms - session_ttl_ms,),
        ):
            live.update(b.id for b in BLOCKS_DEC.decode(blob))
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
