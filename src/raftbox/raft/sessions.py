"""Exactly-once client commands on top of any state machine (Raft thesis §6.3).

A client tags every command with `(client_id, seq)`: seq increases by one per new request, and a
retry (after a timeout or a leader change) reuses the same seq. The replicated `SessionTable`
remembers, per client, the results of its requests that the client may still retry; a command
whose (client_id, seq) was already applied is not applied again: the first result is returned.
The client also sends `ack_below`: it has seen answers to every seq below it, so their results
can be forgotten. Memory per client is therefore bounded by its requests in flight.

Sessions expire deterministically: every command carries `stamp_ms`, the *leader's* clock when
it proposed the command, and a session idle for `session_ttl_ms` of stamped time, measured
against the newest stamp applied, is dropped when the next command is applied. All replicas
apply the same commands in the same order, so they expire the same sessions at the same index —
no replica ever consults its own clock. A client whose session expired gets `SessionExpired`
for an old seq instead of a second application.

The table is part of the state machine's snapshot (`dump()` / `load()`).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Command(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The envelope replicated in the log: who asked, which request, and what."""

    client_id: int
    seq: int
    ack_below: int
    stamp_ms: int
    payload: bytes


class SessionExpired(Exception):
    """The request's session was forgotten: it may or may not have been applied once."""


class _Session(msgspec.Struct):
    last_ms: int
    floor: int  # results below this seq are forgotten
    results: dict[int, Any]


class SessionTable:
    def __init__(self, session_ttl_ms: int = 3_600_000, max_sessions: int = 100_000) -> None:
        self.session_ttl_ms = session_ttl_ms
        self.max_sessions = max_sessions
        self.sessions: dict[int, _Session] = {}
        self.newest_ms = 0
        self.sweep_ms = 1000
        self._next_sweep_ms = 0

    @property
    def next_sweep_ms(self) -> int:
        """The stamped time at which the next expiry sweep runs: replicated state, so a state
        machine that persists the table itself must persist this too."""
        return self._next_sweep_ms

    def apply(self, cmd: Command, run) -> Any:
        """Apply `cmd` exactly once: `run(payload)` is called only for a new (client, seq)."""
        self.newest_ms = max(self.newest_ms, cmd.stamp_ms)
        self._expire()
        if cmd.client_id == 0:
            return run(cmd.payload)  # not a session command: at-least-once is fine for it
        s = self.sessions.get(cmd.client_id)
        if s is None:
            if cmd.seq > 1 and cmd.ack_below > 1:
                # The client had a session we no longer know: we cannot tell if this ran.
                return SessionExpired(f"session of client {cmd.client_id} expired")
            s = _Session(last_ms=cmd.stamp_ms, floor=0, results={})
            self.sessions[cmd.client_id] = s
            if len(self.sessions) > self.max_sessions:
                self._evict_oldest()
        s.last_ms = max(s.last_ms, cmd.stamp_ms)
        if cmd.ack_below > s.floor:
            if s.results:
                for seq in [q for q in s.results if q < cmd.ack_below]:
                    del s.results[seq]
            s.floor = cmd.ack_below
        if cmd.seq in s.results:
            return s.results[cmd.seq]
        if cmd.seq < s.floor:
            return SessionExpired(f"request {cmd.seq} of client {cmd.client_id} already answered")
        result = run(cmd.payload)
        s.results[cmd.seq] = result
        return result

    def _expire(self) -> None:
        # Sweep at most once per `sweep_ms` of stamped time: O(sessions) per sweep, not per
        # command. Deterministic all the same: every replica sweeps at the same command.
        if self.newest_ms < self._next_sweep_ms:
            return
        self._next_sweep_ms = self.newest_ms + self.sweep_ms
        cutoff = self.newest_ms - self.session_ttl_ms
        if not self.sessions or cutoff <= 0:
            return
        dead = [cid for cid, s in self.sessions.items() if s.last_ms < cutoff]
        for cid in dead:
            del self.sessions[cid]

    def _evict_oldest(self) -> None:
        oldest = min(self.sessions, key=lambda c: (self.sessions[c].last_ms, c))
        del self.sessions[oldest]

    def dump(self) -> bytes:
        return msgspec.msgpack.encode([self.newest_ms, self._next_sweep_ms, self.sessions])

    def load(self, data: bytes) -> None:
        if not data:
            self.sessions, self.newest_ms, self._next_sweep_ms = {}, 0, 0
            return
        self.newest_ms, self._next_sweep_ms, self.sessions = msgspec.msgpack.decode(
            data, type=tuple[int, int, dict[int, _Session]]
        )
