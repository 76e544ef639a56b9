"""The exactly-once client session table (`raft.sessions.SessionTable`), kept in the database.

The table lives in memory while the store runs and is written incrementally, inside the
transaction of the entry that changed it (`persist`): the session a command used (its clock
and floor, and its answer if it ran), the sessions a sweep or an eviction dropped, and the
table's clock (kv "sessions": `newest_ms` and `next_sweep_ms`, which decides at which command
the next expiry sweep runs, so a restarted replica sweeps at the same index as the others).
`load` rebuilds the table from the rows (at open, and after a snapshot is restored).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from ..raft.sessions import SessionTable
from .commands import decode_result
from .schema import get_kv, set_kv

_result_enc = msgspec.msgpack.Encoder()


def load(db: sqlite3.Connection, session_ttl_ms: int) -> SessionTable:
    """The table as the database holds it (at open, and after a snapshot is restored)."""
    st = SessionTable(session_ttl_ms=session_ttl_ms)
    clock = get_kv(db, "sessions")
    newest, next_sweep = msgspec.msgpack.decode(clock) if clock else (0, 0)
    sessions: dict[int, dict] = {}
    for cid, last_ms, floor in db.execute(
        "SELECT client_id, last_ms, floor FROM client_sessions ORDER BY client_id"
    ):
        sessions[cid] = {"last_ms": last_ms, "floor": floor, "results": {}}
    for cid, seq, blob in db.execute(
        "SELECT client_id, seq, result FROM client_results ORDER BY client_id, seq"
    ):
        if cid in sessions:
            sessions[cid]["results"][seq] = msgspec.msgpack.decode(blob)
    st.load(msgspec.msgpack.encode([newest, next_sweep, sessions]))
    for s in st.sessions.values():
        s.results = {seq: decode_result(r) for seq, r in s.results.items()}
    return st


def persist(
    db: sqlite3.Connection,
    st: SessionTable,
    cid: int,
    seq: int,
    ran: bool,
    result: Any,
    had: bool,
    n_before: int,
) -> None:
    """Write what applying command (`cid`, `seq`) changed in `st`: `had` and `n_before` are
    whether `cid` had a session and how many sessions there were before it; `ran` whether the
    command ran (not a duplicate answered from the table), `result` its answer."""
    # `next_sweep_ms` decides at which command the next expiry sweep runs: it must survive
    # a restart, or a restarted replica would expire sessions at a different index.
    set_kv(db, "sessions", msgspec.msgpack.encode([st.newest_ms, st.next_sweep_ms]))
    expected = n_before + (1 if cid and not had and cid in st.sessions else 0)
    if len(st.sessions) != expected:  # a sweep or an eviction dropped sessions
        live = set(st.sessions)
        gone = [c for (c,) in db.execute("SELECT client_id FROM client_sessions") if c not in live]
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
