"""Upload sessions, replicated so that any blockserver continues one.

`SessionStart` opens a session (sweeping up to 1,000 expired ones first: a session lives
`upload_session_ttl_ms` from its start), `SessionAppend` adds a piece (the blocks a blockserver
stored for a byte range, with the 4 MiB window digests of the content hash), `SessionFinish`
commits the pieces as a file (`writes.commit`, as uploaded blocks) and deletes the session;
`FinishBatch` runs several finishes, one savepoint each. A session is sequential (each append
at the current length) or concurrent (appends at 4 MiB-window offsets, in any order, one of
them closing it at its total length; a piece sent again is idempotent). Every piece's blocks
become the namespace's (`gcstate.grant`) and are checked against GC when added.

Writes take an `ApplyContext` (see `context`); `session_state` and `session_head` are reads.
"""

from __future__ import annotations

import sqlite3

import msgspec

from . import gcstate, writes
from .commands import (
    BLOCK_WINDOW_BYTES,
    MAX_FILE_BYTES,
    BlockRef,
    FileMeta,
    FinishBatch,
    MetaError,
    SessionAppend,
    SessionFinish,
    SessionPiece,
    SessionStart,
    SessionState,
)
from .context import MAX_BATCH_ENTRIES, ApplyContext, atomic, check_ns
from .rows import BLOCKS_DEC, BLOCKS_ENC, DIGESTS_DEC, Fail

# -- commands -------------------------------------------------------------------------------


def _session_row(ctx: ApplyContext, session_id: str, ns: int) -> tuple | None:
    """(concurrent, started_ms, closed, length, total) of a live session of `ns`."""
    row = ctx.db.execute(
        "SELECT ns, concurrent, started_ms, closed, length, total FROM upload_sessions "
        "WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None or row[0] != ns:
        return None
    if ctx.now_ms - row[2] >= ctx.upload_session_ttl_ms:
        return None  # expired (swept by a later SessionStart)
    return row[1:]


def _add_piece(
    ctx: ApplyContext,
    session_id: str,
    offset: int,
    length: int,
    blocks: list[BlockRef],
    digests: list[bytes] | None,
) -> None:
    ctx.db.execute(
        "INSERT INTO upload_pieces (session_id, offset, length, blocks, digests) "
        "VALUES (?, ?, ?, ?, ?)",
        (session_id, offset, length, BLOCKS_ENC.encode(blocks), BLOCKS_ENC.encode(digests)),
    )
    ns = ctx.db.execute(
        "SELECT ns FROM upload_sessions WHERE session_id = ?", (session_id,)
    ).fetchone()[0]
    gcstate.grant(ctx, ns, blocks)


def _sweep_sessions(ctx: ApplyContext) -> None:
    cutoff = ctx.now_ms - ctx.upload_session_ttl_ms
    db = ctx.db
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


def session_start(ctx: ApplyContext, c: SessionStart) -> None:
    check_ns(ctx, c.ns)
    if not c.session_id or len(c.session_id) > 200:
        raise Fail("invalid_command", reason="bad session id")
    _validate_piece(c.blocks, c.length, c.window_digests)
    if c.concurrent and c.length:
        raise Fail("concurrent_session_data_not_allowed")
    if c.concurrent and c.close:
        raise Fail("concurrent_session_close_not_allowed")
    _sweep_sessions(ctx)
    gcstate.gc_check(ctx, c.blocks, c.gc_gen)
    db = ctx.db
    if db.execute("SELECT 1 FROM upload_sessions WHERE session_id = ?", (c.session_id,)).fetchone():
        raise Fail("session_exists")
    db.execute(
        "INSERT INTO upload_sessions (session_id, ns, concurrent, started_ms, closed, "
        "length, total) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            c.session_id,
            c.ns,
            int(c.concurrent),
            ctx.now_ms,
            int(c.close),
            c.length,
            c.length if c.close else None,
        ),
    )
    if c.length:
        _add_piece(ctx, c.session_id, 0, c.length, c.blocks, c.window_digests)
    return None


def session_append(ctx: ApplyContext, c: SessionAppend) -> None:
    _validate_piece(c.blocks, c.length, c.window_digests)
    gcstate.gc_check(ctx, c.blocks, c.gc_gen)
    s = _session_row(ctx, c.session_id, c.ns)
    if s is None:
        raise Fail("not_found")
    concurrent, _started, closed, length, total = s
    db = ctx.db
    if not concurrent:
        if closed:
            raise Fail("closed")
        if c.offset != length:
            raise Fail("incorrect_offset", correct_offset=length)
        if length + c.length > MAX_FILE_BYTES:
            raise Fail("too_large")
        if c.length:
            _add_piece(ctx, c.session_id, c.offset, c.length, c.blocks, c.window_digests)
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
        raise Fail("concurrent_session_invalid_offset")
    if not c.close and (c.length == 0 or c.length % BLOCK_WINDOW_BYTES):
        raise Fail("concurrent_session_invalid_data_size")
    if end > MAX_FILE_BYTES:
        raise Fail("too_large")
    if closed and (c.close or end > total):
        raise Fail("closed")
    if c.close:
        past = db.execute(
            "SELECT 1 FROM upload_pieces WHERE session_id = ? AND offset + length > ? LIMIT 1",
            (c.session_id, end),
        ).fetchone()
        if past:
            raise Fail("concurrent_session_invalid_offset")
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
                and BLOCKS_DEC.decode(prev[2]) == c.blocks
                and not c.close
            ):
                return None  # the same piece again: idempotent
            raise Fail("concurrent_session_invalid_offset")
        _add_piece(ctx, c.session_id, c.offset, c.length, c.blocks, c.window_digests)
    db.execute(
        "UPDATE upload_sessions SET length = length + ?, closed = ?, total = ? "
        "WHERE session_id = ?",
        (c.length, int(closed or c.close), end if c.close else total, c.session_id),
    )
    return None


def session_finish(ctx: ApplyContext, c: SessionFinish) -> FileMeta:
    _validate_piece(c.blocks, c.length, c.window_digests)
    gcstate.gc_check(ctx, c.blocks, c.gc_gen)
    s = _session_row(ctx, c.session_id, c.ns)
    if s is None:
        raise Fail("lookup_failed", "not_found")
    concurrent, _started, closed, length, total = s
    if not concurrent:
        if c.offset != length:
            raise Fail("lookup_failed", "incorrect_offset", correct_offset=length)
        if closed and c.length:
            raise Fail("lookup_failed", "closed")
        if length + c.length > MAX_FILE_BYTES:
            raise Fail("lookup_failed", "too_large")
        if c.length:
            _add_piece(ctx, c.session_id, c.offset, c.length, c.blocks, c.window_digests)
        total = length + c.length
    else:
        if c.length or c.blocks:
            raise Fail("concurrent_session_data_not_allowed")
        if not closed:
            raise Fail("concurrent_session_not_closed")
        if length != total:
            raise Fail("concurrent_session_missing_data")
    state = session_state(ctx.db, ctx.upload_session_ttl_ms, c.session_id)
    if not state.contiguous():
        raise Fail("concurrent_session_missing_data")
    if c.commit.size != total:
        raise Fail("invalid_command", reason=f"commit size is not the session's {total}")
    # Pieces were checked against GC when they were added; live sessions are never collected.
    # The file goes to the commit's namespace: the session's own, or a shared folder the
    # session's account may write to (the API checked it: `raftbox.api.spaces`).
    commit = msgspec.structs.replace(c.commit, blocks=state.blocks, uploaded=True, gc_gen=None)
    meta = writes.commit(ctx, commit)
    ctx.db.execute("DELETE FROM upload_sessions WHERE session_id = ?", (c.session_id,))
    ctx.db.execute("DELETE FROM upload_pieces WHERE session_id = ?", (c.session_id,))
    return meta


def finish_batch(ctx: ApplyContext, c: FinishBatch) -> list:
    if len(c.entries) > MAX_BATCH_ENTRIES:
        return MetaError(["invalid_command"], {"reason": "batch too large"})
    return [atomic(ctx, lambda e=e: session_finish(ctx, e)) for e in c.entries]


def _validate_piece(blocks: list[BlockRef], length: int, digests: list[bytes] | None) -> None:
    if length < 0:
        raise Fail("invalid_command", reason="negative length")
    gcstate.validate_blocks(blocks, length)
    if digests is not None:
        want = -(-length // BLOCK_WINDOW_BYTES)
        if len(digests) != want or any(len(d) != 32 for d in digests):
            raise Fail("invalid_command", reason="one 32-byte digest per 4 MiB window")


# -- reads ----------------------------------------------------------------------------------


def session_head(db: sqlite3.Connection, session_id: str) -> tuple[int, bool] | None:
    """(namespace, concurrent) of an upload session, without its pieces (an append needs
    no more); None if there is no such session."""
    row = db.execute(
        "SELECT ns, concurrent FROM upload_sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None else (row[0], bool(row[1]))


def session_state(db: sqlite3.Connection, ttl_ms: int, session_id: str) -> SessionState | None:
    """An upload session (even an expired one: compare `expires_ms` with your clock)."""
    row = db.execute(
        "SELECT ns, concurrent, started_ms, closed, length, total FROM upload_sessions "
        "WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    ns, concurrent, started, closed, length, total = row
    pieces = [
        SessionPiece(off, n, BLOCKS_DEC.decode(b), DIGESTS_DEC.decode(d))
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
        started + ttl_ms,
        bool(closed),
        length,
        total,
        pieces,
    )
