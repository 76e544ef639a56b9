"""Errors of the Raft core, by whose fault they are.

- `ProposalDropped`: the caller's request could not be taken now (no leader known, leadership
  transfer in progress, a membership change already pending). Retrying later may succeed.
- `NotLeader`: the call needs the leader; `leader` says who it is, if known.
- `RaftInvariantError`: the core's own invariant broke. This is a bug; the node must stop
  instead of writing anything more.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base of the core's errors."""


class ProposalDropped(RaftError):
    """The proposal was not accepted; retrying later may succeed."""


class NotLeader(RaftError):
    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader is {leader or 'unknown'})")
        self.leader = leader


class RaftInvariantError(RaftError, AssertionError):
    """A broken invariant inside the core: a bug. Stop the node."""
