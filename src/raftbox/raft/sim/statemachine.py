"""The simulated application state machine: a hash chain over the applied entries.

Its state after applying index i is one 8-byte digest that depends on every entry up to i, so
two members agree on their whole applied history iff they agree on the digest at one index
(which is how `invariants.py` checks state machine safety and snapshot contents cheaply). It
also tracks the membership the applied configuration entries define, by the core's rule.

Per seed it is either *durable* (like the SQLite FSM: its applied index survives a crash) or
*volatile* (rebuilt from the disk's snapshot at restart); the cluster decides which.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..messages import ConfChange, ConfChangeType, ConfState, Entry

ZERO_DIGEST = bytes(8)


@dataclass
class StateMachine:
    """A hash chain over the applied entries, and the membership they define."""

    index: int = 0
    digest: bytes = ZERO_DIGEST
    conf: ConfState = ConfState()

    def snapshot_data(self, pad: int) -> bytes:
        """What a snapshot of it holds: the index, the digest, and `pad` bytes of padding."""
        return self.index.to_bytes(8, "big") + self.digest + b"#" * pad


def snapshot_content(data: bytes) -> tuple[int, bytes]:
    """(index, digest) from `StateMachine.snapshot_data`."""
    return int.from_bytes(data[:8], "big"), data[8:16]


def chain(digest: bytes, e: Entry) -> bytes:
    """The digest after applying `e` on top of `digest`."""
    h = hashlib.blake2b(digest, digest_size=8)
    h.update(e.term.to_bytes(8, "big"))
    h.update(e.index.to_bytes(8, "big"))
    h.update(bytes((e.type,)))
    h.update(e.data)
    return h.digest()


def apply_conf(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after `cc`, by the same rule as the core."""
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.type == ConfChangeType.ADD_VOTER:
        learners.discard(cc.node_id)
        voters.add(cc.node_id)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        voters.discard(cc.node_id)
        learners.add(cc.node_id)
    else:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    if not voters:
        return conf
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
