"""The meta role: API calls become Raft proposals (writes) and ReadIndex reads (queries).

`MetaService` sits on one member's `RaftNode` and `MetaStore`:

- `write(cmd)` wraps a `MetaCommand` in the node's exactly-once envelope and proposes it; the
  node forwards it to the leader if needed and returns the state machine's result (a metadata
  value or a `MetaError`). While no majority is reachable it fails with `Unavailable` after a
  bounded wait — never hangs, never acknowledges what is not committed.
- `read(fn)` confirms with ReadIndex that the local replica has applied everything committed
  when the read arrived, then runs `fn(store)`: a read after a successful write on any member
  sees it (linearizable). `stale=True` skips the round trip.
- Cursors: opaque strings, HMAC-SHA256-signed with the cluster secret held in the replicated
  state, so they cannot be forged (long-poll takes them without any other credential):
  `raftbox.meta.cursors`.
- Tokens: bearer tokens are 256-bit random strings; only their SHA-256 is replicated
  (`raftbox.meta.tokens`, with the caches below). An
  account can be disabled (its tokens answer `user_suspended`, its data is kept) or removed,
  and a token revoked (`RevokeToken`, `RevokeTokens`): from the moment such a command returns,
  every member refuses the token (below).

Authentication, and what a bad token may cost
---------------------------------------------
The contract: a request that arrives after a revoke, disable or remove returned (on any member)
is refused. So an answer is never older than the request: `auth(token)` looks up the token on a
replica known to hold every command committed before the request arrived —

- on a leader that has committed an entry of its own term and applied its whole commit index,
  its own replica as it is: every command that returned was applied by a leader of this term
  or committed before it (a leader deposed by a partition without knowing it keeps answering so
  until check-quorum makes it step down, within an election timeout — the usual lease read);
- anywhere else, after a ReadIndex round that started after the request arrived.

There is no positive cache on a meta member (the replica lookup is two primary-key reads); a
blockserver caches answers for `RemoteMetaClient.auth_ttl_s` (see `api.metaclient`).

A bad token must stay cheap. `auth` first looks at the local replica; a token unknown there and
remembered as unknown (`NegativeTokenCache`: `auth_negative_ttl_s`, 5 s by default; bounded,
least recently added forgotten first) is refused with no round. Only then does it take a round
(shared, below); a token that round does not find is remembered as unknown. The negative cache
is consulted *after* the local replica, which is the invalidation: once this member applied the
`CreateAccount`/`AddToken` of a token that was remembered as unknown, the token works, whatever
the negative entry says.

Lookups arriving together share ReadIndex rounds (`tokens.SharedRounds`): a lookup waits
for a round that *started after it asked* (so the read that follows is linearizable), and all
the lookups that ask while one round runs share the next one — at most one round in flight and
one queued, however many requests wait. `auth_read_rounds` counts the rounds run. The limit on
how many failures one client address may cause is the API's (`api.limits.FailedAuthLimiter`).

The block role calls `commit()` — one round trip carrying the whole directive (path, blocks,
mode, parent rev), as the seed's blockservers call the metaservers by RPC instead of talking to
the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import msgspec

from raftbox.raft.node import RaftNode, Unavailable

from . import commands as C
from .cursors import CursorInvalid, open_signed_cursor, sign_cursor
from .fsm import MetaStore
from .tokens import NegativeTokenCache, SharedRounds, TokenCache, new_token, token_hash

__all__ = [  # the tokens and cursors names, importable from here as before
    "AccountError",
    "CursorInvalid",
    "MetaService",
    "NegativeTokenCache",
    "TokenCache",
    "new_token",
    "open_signed_cursor",
    "token_hash",
]

log = logging.getLogger(__name__)


class AccountError(Exception):
    """An account could not be created (e.g. the email is taken)."""


class MetaService:
    def __init__(
        self,
        node: RaftNode,
        store: MetaStore,
        write_timeout_s: float = 10.0,
        auth_negative_ttl_s: float = 5.0,
    ) -> None:
        self.node = node
        self.store = store
        self.write_timeout_s = write_timeout_s
        self._auth_unknown = NegativeTokenCache(auth_negative_ttl_s)
        self._auth_rounds = SharedRounds(self._auth_read_round)
        self._enc = msgspec.msgpack.Encoder()
        # the quota of accounts created through this member (`serve|up --default-quota`)
        self.default_quota_bytes: int | None = None

    @property
    def auth_read_rounds(self) -> int:
        """ReadIndex rounds run to look tokens up (a metric; see the module docstring)."""
        return self._auth_rounds.runs

    async def start(self, timeout_s: float = 30.0) -> None:
        """Wait until the cluster has its secret (the first leader creates it)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            await self.node.read_index(
                timeout_s=max(0.1, deadline - asyncio.get_running_loop().time())
            )
            if self.store.secret():
                return
            if self.node.role.name == "LEADER":
                await self.write(C.InitCluster(secret=os.urandom(32)))
                continue
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable("the cluster secret was not created in time")
            await asyncio.sleep(0.05)

    # -- writes and reads ----------------------------------------------------------------------
    async def write(self, cmd: Any) -> Any:
        """Propose `cmd`; returns its typed result (a metadata value, a list of them for a
        batch, or a `MetaError`) — on a follower the result crossed the propose RPC as msgpack."""
        payload = self._enc.encode(cmd)
        r = await self.node.propose(self.node.new_command(payload), self.write_timeout_s)
        return C.typed_result(r)

    async def read(self, fn: Callable[[MetaStore], Any], stale: bool = False) -> Any:
        if not stale:
            await self.node.read_index(timeout_s=self.write_timeout_s)
        return fn(self.store)

    # -- accounts ------------------------------------------------------------------------------
    async def auth(self, token: str) -> Any | None:
        """The account of a bearer token (possibly `disabled`), or None; never older than the
        call (see the module docstring)."""
        h = token_hash(token)
        if self._replica_is_current():
            acct = self.store.auth_token(h)
            if acct is not None or h in self._auth_unknown:
                return acct
        elif self.store.auth_token(h) is None and h in self._auth_unknown:
            return None
        await self._auth_rounds.wait()
        acct = self.store.auth_token(h)
        if acct is None:
            self._auth_unknown.add(h)
        return acct

    def _replica_is_current(self) -> bool:
        """This member leads, has committed an entry of its term and applied all it committed:
        its replica holds every command that returned before now (module docstring)."""
        core = self.node.core
        return (
            core.role.name == "LEADER"
            and core.log.term_or_zero(core.log.committed) == core.term
            and core.log.applied >= core.log.committed
        )

    def replica_is_current(self) -> bool:
        """`_replica_is_current`, for reads that may skip the ReadIndex round when it holds
        (an account's mounts: `raftbox.api.metaclient.CURRENT_OK`)."""
        return self._replica_is_current()

    async def read_current(self, fn: Callable[[MetaStore], Any]) -> Any:
        """`fn(store)` on a replica that holds every command that returned before the call, at
        the cost of a token check (`auth`): nothing on a current leader, else a ReadIndex round
        shared with the calls that arrive with it. Shared links use it: a link revoked on any
        member is gone for the next fetch on every member."""
        if not self._replica_is_current():
            await self._auth_rounds.wait()
        return fn(self.store)

    def auth_known(self, token: str, h: bytes | None = None) -> Any | None:
        """The account of `token` as this member's replica has it now, with no round trip, or
        None — which does not mean the token is bad. (Used only to let known users through
        while their address is rate-limited: a revoke may not have reached this replica yet.)"""
        return self.store.auth_token(token_hash(token) if h is None else h)

    async def _auth_read_round(self) -> None:
        await self.node.read_index(timeout_s=self.write_timeout_s)

    async def create_account(self, email: str, display_name: str) -> tuple[Any, str]:
        token = new_token()
        acct = await self.write(
            C.CreateAccount(email, display_name, token_hash(token), self.default_quota_bytes)
        )
        if isinstance(acct, C.MetaError):
            raise AccountError(acct.summary)
        return acct, token

    async def list_accounts(self) -> list[tuple[Any, int]]:
        """Every account with its number of tokens (a linearizable read)."""
        return await self.read(lambda s: s.list_accounts())

    async def revoke_token(self, token: str) -> bool:
        """Revoke one token; True if it existed. Refused everywhere once this returns."""
        return await self.write(C.RevokeToken(token_hash(token)))

    # -- cursors -------------------------------------------------------------------------------
    def sign_cursor(self, state: Any) -> str:
        return sign_cursor(self.store.secret(), state)

    def open_cursor(self, cursor: str) -> Any:
        return open_signed_cursor(self.store.secret(), cursor)
