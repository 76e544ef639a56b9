"""ReadIndex bookkeeping on the leader (Raft thesis §6.4).

A read request gets the leader's commit index at the time it arrives; the leader then sends a
heartbeat round carrying the request's context. Once a majority has answered that round, the
leader knows it was still the leader when the read arrived, so any state machine that has applied
up to that index can answer the read linearizably — without writing anything to the log.

Requests are answered in arrival order: a quorum for a later request confirms every earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import Message


@dataclass
class ReadIndexStatus:
    req: Message  # the original READ_INDEX message (frm = who asked; 0 or self = local)
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.context
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)

    def recv_ack(self, pid: int, ctx: bytes) -> set[int] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(pid)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release every request up to and including `ctx`."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        done = self.queue[: i + 1]
        del self.queue[: i + 1]
        return [self.pending.pop(c) for c in done]

    def last_pending_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending.clear()
        self.queue.clear()
