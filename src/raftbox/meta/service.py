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
  state, so they cannot be forged (long-poll takes them without any other credential).
- Tokens: bearer tokens are 256-bit random strings; only their SHA-256 is replicated. An
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

Lookups arriving together share ReadIndex rounds (`_SharedRounds`): a lookup waits
for a round that *started after it asked* (so the read that follows is linearizable), and all
the lookups that ask while one round runs share the next one — at most one round in flight and
one queued, however many requests wait. `auth_read_rounds` counts the rounds run. The limit on
how many failures one client address may cause is the API's (`api.http.FailedAuthLimiter`).

The block role calls `commit()` — one round trip carrying the whole directive (path, blocks,
mode, parent rev), as the seed's blockservers call the metaservers by RPC instead of talking to
the database.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from raftbox.raft.node import RaftNode, Unavailable

from . import commands as C
from .fsm import MetaStore

log = logging.getLogger(__name__)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    # A fixed prefix: recognisable in logs and config files, and a token never starts with
    # "-" (which a command line would take for an option: `--token -abc…`).
    return "rbx_" + secrets.token_urlsafe(32)


class TokenCache:
    """Bearer token hash → account, remembered for `ttl_s` so a revoked token stops working
    within that time on every process; bounded to `max_entries` (cleared when full)."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}

    def get(self, h: bytes) -> Any | None:
        hit = self._entries.get(h)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def put(self, h: bytes, acct: Any) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[h] = (time.monotonic(), acct)


class NegativeTokenCache:
    """Token hashes a linearizable read found unknown, remembered for `ttl_s`; bounded to
    `max_entries` (the oldest forgotten first). See the module docstring for why an entry
    needs no explicit invalidation."""

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[bytes, float] = {}  # insertion order = age

    def __contains__(self, h: bytes) -> bool:
        at = self._entries.get(h)
        if at is None:
            return False
        if time.monotonic() - at < self.ttl_s:
            return True
        del self._entries[h]
        return False

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, h: bytes) -> None:
        self._entries.pop(h, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[h] = time.monotonic()

    def discard(self, h: bytes) -> None:
        self._entries.pop(h, None)


class _SharedRounds:
    """`wait()` returns once a run of `fn` that started after the call has finished (or
    raises what that run raised). Callers that arrive while a run is in flight share the next
    one, which the first of them runs: at most one run in flight, however many callers."""

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._fn = fn
        self._started = 0  # runs started
        self._running = False
        self._last: tuple[int, BaseException | None] = (0, None)  # the last run that ended
        self._ended = asyncio.Event()
        self.runs = 0

    async def wait(self) -> None:
        need = self._started + 1  # the run in flight, if any, started before us
        while True:
            gen, exc = self._last
            if gen >= need:
                if exc is not None:
                    raise exc
                return
            if self._running:
                await self._ended.wait()
                continue
            await self._run()

    async def _run(self) -> None:
        self._running = True
        self._started += 1
        gen = self._started
        exc: BaseException | None = None
        ended = True
        try:
            self.runs += 1
            await self._fn()
        except Exception as e:  # shared with every caller waiting for this run
            exc = e
        except BaseException:  # this caller was cancelled: the run did not end, another runs
            ended = False
            raise
        finally:
            self._running = False
            if ended:
                self._last = (gen, exc)
            self._ended.set()
            self._ended = asyncio.Event()


class CursorInvalid(Exception):
    pass


class AccountError(Exception):
    """An account could not be created (e.g. the email is taken)."""


def _typed(r: Any) -> Any:
    if isinstance(r, list):
        return [_typed(x) for x in r]
    if isinstance(r, dict):
        try:
            return C.decode_result(r)
        except msgspec.ValidationError:
            return r
    return r


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
        self._auth_rounds = _SharedRounds(self._auth_read_round)
        self._enc = msgspec.msgpack.Encoder()

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
        return _typed(r)

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

    def auth_known(self, token: str, h: bytes | None = None) -> Any | None:
        """The account of `token` as this member's replica has it now, with no round trip, or
        None — which does not mean the token is bad. (Used only to let known users through
        while their address is rate-limited: a revoke may not have reached this replica yet.)"""
        return self.store.auth_token(token_hash(token) if h is None else h)

    async def _auth_read_round(self) -> None:
        await self.node.read_index(timeout_s=self.write_timeout_s)

    async def create_account(self, email: str, display_name: str) -> tuple[Any, str]:
        token = new_token()
        acct = await self.write(C.CreateAccount(email, display_name, token_hash(token)))
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
        body = msgspec.msgpack.encode(state)
        mac = hmac.new(self.store.secret(), body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def open_cursor(self, cursor: str) -> Any:
        return open_signed_cursor(self.store.secret(), cursor)


def open_signed_cursor(secret: bytes, cursor: str) -> Any:
    """The state a cursor signed with `secret` carries; `CursorInvalid` if it was not signed so.
    (A function, so that a notify process, which holds the secret but no MetaStore, can check
    the long-poll cursors it is given.)"""
    if not secret:
        raise CursorInvalid("no cluster secret")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise CursorInvalid("undecodable") from None
    if len(raw) < 17:
        raise CursorInvalid("too short")
    mac, body = raw[:16], raw[16:]
    want = hmac.new(secret, body, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, want):
        raise CursorInvalid("bad signature")
    try:
        return msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        raise CursorInvalid("bad body") from None
