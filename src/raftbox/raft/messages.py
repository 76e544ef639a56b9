"""The values that cross the Raft core's boundary: entries, messages, snapshots, hard state.

Every value here is a small frozen `msgspec.Struct`, so it is immutable, cheap to build, and
encodes to msgpack for the wire and the disk without a hand-written codec. Message kinds are an
`IntEnum` tag; a message carries only the fields its kind uses (the rest keep their defaults),
which is the etcd `raftpb.Message` shape.

They are also `gc=False`: they hold only ints, enums, bytes, tuples and each other, so they
can never be part of a reference cycle, and the cycle collector has no reason to track them. A
member holds tens of thousands of entries in memory (the log since the last snapshot); tracked,
they made every full collection walk them all (100-250 ms pauses under load, measured).

Who sends what (Raft paper Figure 2, plus etcd's extensions):

| kind              | from → to            | meaning                                                  |
| ----------------- | -------------------- | -------------------------------------------------------- |
| PRE_VOTE          | pre-candidate → all  | "would you vote for me at `term`?" (term not bumped yet)  |
| PRE_VOTE_RESP     | voter → pre-cand.    | `reject` says no                                          |
| VOTE              | candidate → all      | RequestVote: `term`, last log (`index`, `log_term`)       |
| VOTE_RESP         | voter → candidate    | `reject` says no                                          |
| APP               | leader → follower    | AppendEntries: prev (`index`, `log_term`), `entries`, `commit` |
| APP_RESP          | follower → leader    | `index` = last matching index, or on `reject` the hint   |
|                   |                      | (`reject_hint` index, `log_term` its term) for fast back-off |
| HEARTBEAT         | leader → follower    | `commit` (capped to the follower's match), `context` for ReadIndex |
| HEARTBEAT_RESP    | follower → leader    | echoes `context`                                          |
| SNAP              | leader → follower    | InstallSnapshot chunk: `snapshot` metadata, `offset`, `data`, `done` |
| SNAP_RESP         | follower → leader    | `index` = bytes received so far (or `reject`)            |
| TIMEOUT_NOW       | leader → transferee  | "campaign now, ignore your timer and leases"              |
| PROP              | follower → leader    | forwarded proposal `entries`                              |
| READ_INDEX        | follower → leader    | forwarded ReadIndex request, `context` identifies it      |
| READ_INDEX_RESP   | leader → follower    | `index` = the read index for `context` (or `reject`)      |

`term == 0` on a message means "local, no term" (only PROP and READ_INDEX use it). Messages are
addressed by integer node ids; 0 means "none".
"""

from __future__ import annotations

import enum

import msgspec

NONE = 0  # the null node id: no leader, no vote


class MessageType(enum.IntEnum):
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APP = 5
    APP_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9
    SNAP_RESP = 10
    TIMEOUT_NOW = 11
    PROP = 12
    READ_INDEX = 13
    READ_INDEX_RESP = 14


class EntryType(enum.IntEnum):
    NORMAL = 0  # application data; empty data is the leader's no-op
    CONF_CHANGE = 1  # data is an encoded ConfChange


class ConfChangeType(enum.IntEnum):
    ADD_VOTER = 0  # add as voter (or promote a learner)
    ADD_LEARNER = 1  # add as learner (or demote a voter)
    REMOVE = 2


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


class ConfChange(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One membership change; raftbox changes one server at a time (see confchange.py)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""  # opaque to the core: the runtime puts the member's address here

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        return msgspec.msgpack.decode(data, type=ConfChange)


class ConfState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def members(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.voters) | set(self.learners)))


class SnapshotMeta(msgspec.Struct, frozen=True, array_like=True, gc=False):
    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


class Snapshot(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The application's state up to `meta.index`, opaque `data`, and the membership then."""

    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


class HardState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What must be durable before a node answers anyone: its term, its vote, its commit."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class Message(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True, gc=False):
    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    # InstallSnapshot chunking (SNAP): the snapshot's metadata travels with every chunk.
    snapshot: SnapshotMeta | None = None
    offset: int = 0
    data: bytes = b""
    done: bool = False


class ReadState(msgspec.Struct, frozen=True):
    """A ReadIndex answer: reads for `context` are linearizable once `index` is applied."""

    index: int
    context: bytes


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class SoftState(msgspec.Struct, frozen=True):
    """Volatile state the application may want to watch; never persisted."""

    leader: int = NONE
    role: StateRole = StateRole.FOLLOWER


def encode_message(m: Message) -> bytes:
    return msgspec.msgpack.encode(m)


def decode_message(data: bytes) -> Message:
    """Decode a wire message; raises msgspec.DecodeError/ValidationError on garbage."""
    return msgspec.msgpack.decode(data, type=Message)
