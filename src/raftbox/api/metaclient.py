"""How the content routes reach the meta role: a small `MetaClient` interface, in-process or over
HTTP — the seed's blockservers that "send RPCs to metaservers" instead of talking to the database.

A blockserver needs few things from meta, each a higher-level directive in one round trip:

- `auth(token)`: the account of a bearer token (cached for `auth_ttl_s`, 10 s: a revoked
  token, or a disabled or removed account's, is refused by a blockserver within that time —
  meta members refuse it at once, `raftbox.meta.service`);
- `query(name, *args)`: one of the named read-only queries in `QUERIES`, answered after a
  ReadIndex (linearizable): `file_blocks`, `file_blocks_many` (a list of paths: native batch
  `blocks/list`), `resolve`, `session`, `sessions` (a list of ids: finish_batch_v2),
  `session_head`, `ns_has_blocks`, `auth_token`, `job` (an async job's kept result:
  `upload_session/finish_batch/check`), `gc_generation` (that one may be stale: see
  `raftbox.gc`), `store_marker` (the block store marker a blockserver checks at start),
  `temporary_link` (the file a temporary link gives: `raftbox.api.templinks`). A batch query is
  one read: every answer from the same state;
- `write(cmd)`: one state machine command of the whitelist `WRITES` (commits, upload sessions,
  `RecordUpload`, and a `RunJob` around one of them: `allowed_write`), with exactly-once
  semantics across retries and failovers.

`LocalMetaClient` wraps the `MetaService` of this process. `RemoteMetaClient` calls the internal
routes a meta member serves (`InternalRoutes`, admin/cluster token only):

- `POST /2/raftbox/internal/query`, body msgpack `[name, [args...]]` → msgpack result;
- `POST /2/raftbox/internal/write`, body msgpack `[client_id, seq, ack_below, payload]` where
  payload is the msgpack `MetaCommand` → msgpack result.

The remote client holds its own Raft client session (`client_id`, `seq`): a write retried on
another member after a timeout or a leader change carries the same (client_id, seq), so the
state machine applies it once and answers the retry with the first result. It cycles through
its meta URLs on connection errors, timeouts and 503s, within `timeout_s` per call, waiting a
`Backoff` delay (`retry_min_s`..`retry_max_s`, jittered, from the start for each call) between
attempts: a dead member costs one failed attempt, a leaderless cluster a few spaced-out ones.
Past `timeout_s` it raises `MetaUnreachable`; a member that refuses a call (an answer other than
200, 502, 503, 504) raises `MetaRefused` at once: both are the api layer's `errors.Unavailable`
(503).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import msgspec
from aiohttp import web

from raftbox.backoff import Backoff
from raftbox.meta import commands as C
from raftbox.meta import sharing
from raftbox.meta.service import MetaService
from raftbox.meta.tokens import TokenCache, token_hash
from raftbox.raft.sessions import Command

from .errors import Unavailable

log = logging.getLogger(__name__)

QUERY_PATH = "/2/raftbox/internal/query"
WRITE_PATH = "/2/raftbox/internal/write"
INTERNAL_BODY_MAX_BYTES = 64 * 1024 * 1024

# name -> (function of the MetaStore and the arguments, the type its answer decodes to)
QUERIES: dict[str, tuple[Callable[..., Any], Any]] = {
    "file_blocks": (
        lambda s, ns, path: s.file_blocks(int(ns), str(path)),
        tuple[C.FileMeta, list[C.BlockRef]] | C.MetaError,
    ),
    "file_blocks_many": (
        lambda s, ns, paths: s.file_blocks_many(int(ns), [str(p) for p in paths]),
        list[tuple[C.FileMeta, list[C.BlockRef]] | C.MetaError],
    ),
    "resolve": (lambda s, ns, path: s.resolve(int(ns), str(path)), C.Meta | C.MetaError),
    "session": (lambda s, sid: s.session(str(sid)), C.SessionState | None),
    "sessions": (
        lambda s, sids: [s.session(str(sid)) for sid in sids],
        list[C.SessionState | None],
    ),
    "session_head": (lambda s, sid: s.session_head(str(sid)), tuple[int, bool] | None),
    "ns_has_blocks": (
        lambda s, ns, ids: sorted(s.ns_has_blocks(int(ns), [str(i) for i in ids])),
        list[str],
    ),
    "auth_token": (lambda s, h: s.auth_token(bytes(h)), C.AccountInfo | None),
    "gc_generation": (lambda s: s.gc_generation(), int),
    "store_marker": (lambda s: s.store_marker(), str | None),
    "temporary_link": (  # raftbox.api.templinks
        lambda s, token, now_ms: s.temporary_link(str(token), int(now_ms)),
        tuple[C.FileMeta, list[C.BlockRef]] | C.MetaError,
    ),
    "job": (lambda s, jid, ns, kind: s.job(str(jid), int(ns), str(kind)), Any),
    # shared folders (`raftbox.api.spaces`): an account's mounts, where an id or rev lives
    "mounts": (lambda s, a: sharing.mounts(s.db, str(a)), list[tuple[int, str, str, str]]),
    "has_blocks": (
        lambda s, nss, ids: sorted(sharing.has_blocks(s.db, [int(n) for n in nss], list(ids))),
        list[str],
    ),
    "locate": (
        lambda s, nss, ref: sharing.locate(s.db, [int(n) for n in nss], str(ref)),
        int | None,
    ),
}
STALE_OK = {"gc_generation"}
# Read from this member's replica with no ReadIndex round when it is current (it leads and has
# applied all it committed: what `MetaService.auth` does), else after one: the mounts every
# request reads (`raftbox.api.spaces.with_mounts`) cost the leader nothing more.
CURRENT_OK = {"mounts"}
WRITES = (
    C.CommitFile,
    C.CommitBatch,
    C.SessionStart,
    C.SessionAppend,
    C.SessionFinish,
    C.FinishBatch,
    C.RecordUpload,
    C.RunJob,  # only around a command of this list (`allowed_write`)
)


def allowed_write(cmd: Any) -> bool:
    """A command a blockserver may propose: one of `WRITES`, or a `RunJob` of one."""
    if isinstance(cmd, C.RunJob):
        try:
            cmd = C.decode_command(cmd.payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return isinstance(cmd, WRITES) and not isinstance(cmd, C.RunJob)
    return isinstance(cmd, WRITES)


class MetaClient(Protocol):
    async def auth(self, token: str) -> C.AccountInfo | None: ...

    async def query(self, name: str, *args: Any) -> Any: ...

    async def write(self, cmd: Any) -> Any: ...

    async def gc_generation(self, fresh: bool = False) -> int: ...

    async def aclose(self) -> None: ...


class _GcGenCache:
    """The GC generation a blockserver believes, re-read when older than `max_age_s`. Any value
    once read stays true as a lower bound (generations only grow), which is all that is needed.
    After a `gc_retry` (`get(fresh=True)`) every request re-reads it for `max_age_s`, so that the
    client's retry, once the run released its blocks, is not refused again for a stale value."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self.value = 0
        self.read_at = -1e18
        self.fresh_until = -1e18

    async def get(self, client: MetaClient, fresh: bool) -> int:
        now = time.monotonic()
        if fresh:
            self.fresh_until = now + self.max_age_s
        if now < self.fresh_until or now - self.read_at > self.max_age_s:
            self.value = max(self.value, int(await client.query("gc_generation")))
            self.read_at = now
        return self.value


class LocalMetaClient:
    """The meta role of this very process."""

    def __init__(self, meta: MetaService, gc_gen_max_age_s: float = 10.0) -> None:
        self.meta = meta
        self._gen = _GcGenCache(gc_gen_max_age_s)

    async def auth(self, token: str) -> C.AccountInfo | None:
        return await self.meta.auth(token)

    async def query(self, name: str, *args: Any) -> Any:
        fn, _ = QUERIES[name]
        stale = name in STALE_OK or (name in CURRENT_OK and self.meta.replica_is_current())
        return await self.meta.read(lambda s: fn(s, *args), stale=stale)

    async def write(self, cmd: Any) -> Any:
        return await self.meta.write(cmd)

    async def gc_generation(self, fresh: bool = False) -> int:
        return await self._gen.get(self, fresh)

    @property
    def believed_gc_generation(self) -> int:
        """The newest GC generation read so far (keys the block cache's presence facts)."""
        return self._gen.value

    async def aclose(self) -> None:
        pass


class MetaUnreachable(Unavailable):
    """No meta member answered within the call's deadline (503: retrying later helps)."""


class MetaRefused(Unavailable):
    """A meta member answered an internal call with an error other than 502/503/504 (a wrong
    cluster token, a bug there): not retried here; the API answers 503 like any meta outage."""


class RemoteMetaClient:
    """The meta role over HTTP(S), failing over between `urls` (see the module docstring)."""

    def __init__(
        self,
        urls: list[str],
        admin_token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 30.0,
        attempt_timeout_s: float = 12.0,
        auth_ttl_s: float = 10.0,
        gc_gen_max_age_s: float = 10.0,
        retry_min_s: float = 0.02,
        retry_max_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a remote meta client needs at least one URL")
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.urls = [u.rstrip("/") for u in urls]
        self.admin_token = admin_token
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        self.auth_ttl_s = auth_ttl_s
        self.rng = rng or random.Random()
        self._i = self.rng.randrange(len(self.urls))
        self._session: aiohttp.ClientSession | None = None
        self._new_client()
        self._inflight: set[int] = set()
        self._auth = TokenCache(auth_ttl_s)
        self._gen = _GcGenCache(gc_gen_max_age_s)
        self.failovers = 0
        self._failing: set[str] = set()  # members whose last call failed (logged once)

    def _new_client(self) -> None:
        self.client_id = self.rng.getrandbits(63) | 1
        self._seq = itertools.count(1)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.attempt_timeout_s),
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, path: str, body: bytes) -> bytes:
        """POST `body` to the first meta member that answers 200 (failover within the deadline)."""
        deadline = time.monotonic() + self.timeout_s
        backoff = Backoff(self.rng, self.retry_min_s, self.retry_max_s)
        last: str = "no attempt"
        while True:
            url = self.urls[self._i]
            try:
                async with self._http().post(
                    url + path,
                    data=body,
                    headers={"Content-Type": "application/msgpack"},
                    ssl=self.ssl_context if url.startswith("https:") else None,
                ) as resp:
                    data = await resp.read()
                    if resp.status == 200:
                        if url in self._failing:
                            self._failing.discard(url)
                            log.warning("meta member %s answers again", url)
                        return data
                    last = f"{url}: {resp.status} {data[:200]!r}"
                    if resp.status not in (502, 503, 504):
                        raise MetaRefused(f"meta refused an internal call: {last}")
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                last = f"{url}: {type(e).__name__}: {e}"
            if url in self._failing:  # logged when it started failing: once per outage
                log.debug("meta call failed (%s); trying the next member", last)
            else:
                self._failing.add(url)
                log.warning("meta call failed (%s); trying the next member", last)
            self._i = (self._i + 1) % len(self.urls)
            self.failovers += 1
            delay_s = backoff.next_delay_s()
            if time.monotonic() + delay_s > deadline:
                raise MetaUnreachable(f"no meta member answered in time (last: {last})")
            await asyncio.sleep(delay_s)  # retry back-off

    async def query(self, name: str, *args: Any) -> Any:
        _, typ = QUERIES[name]
        raw = await self._call(QUERY_PATH, msgspec.msgpack.encode([name, list(args)]))
        return msgspec.msgpack.decode(raw, type=typ)

    async def write(self, cmd: Any) -> Any:
        payload = C.encode_command(cmd)
        for _attempt in range(2):
            seq = next(self._seq)
            self._inflight.add(seq)
            try:
                ack_below = min(self._inflight)
                raw = await self._call(
                    WRITE_PATH, msgspec.msgpack.encode([self.client_id, seq, ack_below, payload])
                )
            finally:
                self._inflight.discard(seq)
            result = C.typed_result(msgspec.msgpack.decode(raw))
            if isinstance(result, C.MetaError) and result.tags == ["client_session_expired"]:
                # Our session was idle past the cluster's session TTL and forgotten: this seq
                # was never applied (nothing of ours was in flight that long). A fresh session.
                log.info("meta forgot this blockserver's client session; starting a new one")
                self._new_client()
                continue
            return result
        return result

    async def auth(self, token: str) -> C.AccountInfo | None:
        h = token_hash(token)
        acct = self._auth.get(h)
        if acct is not None:
            return acct
        acct = await self.query("auth_token", h)
        if acct is not None:
            self._auth.put(h, acct)
        return acct

    async def gc_generation(self, fresh: bool = False) -> int:
        return await self._gen.get(self, fresh)

    @property
    def believed_gc_generation(self) -> int:
        return self._gen.value


class InternalRoutes:
    """The meta member's side: `raftbox/internal/query` and `raftbox/internal/write`, for
    holders of the admin (cluster) token. Register with `ApiServer.add_route(..., "admin", ...)`.
    """

    def __init__(self, meta: MetaService) -> None:
        self.meta = meta

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        n = request.content_length
        if n is None or n > INTERNAL_BODY_MAX_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=INTERNAL_BODY_MAX_BYTES, actual_size=n or 0
            )
        return await request.content.readexactly(n)

    async def query(self, request: web.Request, who: Any) -> web.Response:
        try:
            name, args = msgspec.msgpack.decode(await self._body(request), type=tuple[str, list])
        except (msgspec.DecodeError, msgspec.ValidationError, asyncio.IncompleteReadError):
            return web.Response(status=400, text="body: msgpack [name, [args...]]")
        entry = QUERIES.get(name)
        if entry is None:
            return web.Response(status=403, text=f"query {name!r} is not allowed")
        fn, _ = entry
        try:
            result = await self.meta.read(lambda s: fn(s, *args), stale=name in STALE_OK)
        except (TypeError, ValueError) as e:
            return web.Response(status=400, text=f"{name}: bad arguments: {e}")
        return web.Response(body=msgspec.msgpack.encode(result), content_type="application/msgpack")

    async def write(self, request: web.Request, who: Any) -> web.Response:
        try:
            client_id, seq, ack_below, payload = msgspec.msgpack.decode(
                await self._body(request), type=tuple[int, int, int, bytes]
            )
            cmd = C.decode_command(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, asyncio.IncompleteReadError):
            return web.Response(status=400, text="body: msgpack [client_id, seq, ack, command]")
        if not allowed_write(cmd) or client_id <= 0 or seq <= 0 or ack_below > seq:
            return web.Response(status=403, text=f"command {type(cmd).__name__} is not allowed")
        node = self.meta.node
        r = await node.propose(
            Command(client_id, seq, ack_below, 0, payload), self.meta.write_timeout_s
        )
        return web.Response(body=msgspec.msgpack.encode(r), content_type="application/msgpack")
