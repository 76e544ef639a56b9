"""The notify role: `files/list_folder/longpoll`, the push stream, and the root/leaf tree.

Theory of operation
-------------------
A `NotifyService` owns a `Hub` (pure fan-out, `hub.py`) and one **upstream** (`feed.py`) that
tells it, for the namespaces it asks about, each new `(namespace, position)`:

- a **root** follows the meta group's change feed: every namespace, from a raft index it resumes
  from after a reconnect (`LocalFeed` in a meta process, `StreamLink` to `--meta` members
  otherwise). The upstream `follows_all`.
- a **leaf** follows a root's push stream (`StreamLink` to `--notify-root`), subscribed only to
  the namespaces its clients watch, with the position it has seen of each, so a reconnect (to the
  same root or another) resumes without missing a change.

Upstream also answers `request(ns)` with an **info**: the namespace's owner and position (or
`GONE`). A long-poll is answered in these steps (`longpoll`):

1. the cursor must carry a valid HMAC under the cluster secret (delivered by upstream: read from
   the local MetaStore, or sent in the `hello` of an admin-authenticated stream) — else `reset`;
2. the owner of its namespace must be the cursor's account, and the namespace must exist — else
   `reset`. Forged, foreign and deleted-namespace cursors get the same 409 body: nothing tells
   them apart. An unknown namespace is **parked** until upstream's info arrives (one read);
3. a cursor still in its listing phase (`resume` set: `continue` has entries to give) or behind
   the namespace's position answers `{"changes": true}` at once;
4. else the request waits in the hub until the namespace moves past the cursor (`true`), or its
   deadline passes (`false`). Deadline = timeout (30..480 s) plus up to 10 % jitter, so that
   clients that arrived together do not come back together.

`changes` is per namespace: a cursor on a sub-folder wakes for a change anywhere in its
namespace, and `continue` then returns no entries and a newer cursor (Dropbox allows this; a
spurious wake costs one `continue`, a missed one costs a sync).

Load shedding: past `max_watchers` (hub) or while the secret is unknown or upstream cannot
answer within `lookup_timeout_s`, the answer is `{"changes": false, "backoff": N}`; the
connection cap is in the front (`front.py`). Nothing a client sends grows state without a bound:
watchers, parked requests, asked namespaces and stream subscriptions are all counted and capped,
and a slow stream reader gets coalesced positions (one per namespace), not a growing queue.

Push stream (`GET /2/raftbox/notify/stream`, a WebSocket of JSON text frames)
------------------------------------------------------------------------------
Client → server:

- `{"op": "watch", "cursors": [{"cursor": C, "position": P?}, ...]}` — any client; the cursor is
  the credential (as for long-poll). `position` (default: the cursor's) is the newest position
  the client has seen of that namespace: to resume after a reconnect, send the last one received.
- `{"op": "sub", "ns": [[ns, seen], ...]}`, `{"op": "unsub", "ns": [ns, ...]}` — cluster peers
  only (a leaf; `Authorization: Bearer <admin token>`).

Server → client: `{"op": "hello"}` first (with `"secret"` for cluster peers);
`{"op": "watching", "cursor": i, "ns": ns}` / `{"op": "reset", "cursor": i}` /
`{"op": "backoff", "cursor": i, "backoff": s}` per watched cursor; `{"op": "info", "ns": [[ns,
owner, position], ...]}` per subscribed namespace (cluster peers; position -2 = gone);
`{"op": "ev", "ev": [[ns, position], ...]}` whenever watched namespaces move — coalesced: a slow
reader gets the newest position of each namespace, never a backlog; `{"op": "resync"}` when
the server lost continuity (the client re-checks every namespace it watches).

These frames are the typed values of `frames.py` (`StreamUp`, `StreamDown`); a frame that does
not decode, or asks for more than its bounds, is the client's fault: logged and its connection
closed (code 1008).

Tasks
-----
`start()` makes one task, owned by the service (`stop()` cancels and awaits it), that runs a task
group of two: the upstream, and the ticker that expires waiting long-polls. The upstream's `run`
is retried with back-off whatever it raises (a link's own failures never leave it: see
`feed.py`); a `tick` that raises is logged and the ticker goes on. So nothing a peer does can
stop long-polls from expiring.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from aiohttp import WSMsgType, web

from raftbox.backoff import Backoff
from raftbox.meta.commands import CursorState
from raftbox.meta.cursors import CursorInvalid, open_signed_cursor

from . import frames as F
from .hub import GONE, UNKNOWN, Hub, HubFull, Wake

log = logging.getLogger(__name__)

ROUTE = "files/list_folder/longpoll"
STREAM_PATH = "/2/raftbox/notify/stream"
API_MIN_TIMEOUT_S = 30
API_MAX_TIMEOUT_S = 480
LONGPOLL_BODY_MAX_BYTES = 16 * 1024

TRUE = (200, b'{"changes": true}')
FALSE = (200, b'{"changes": false}')
RESET = (409, b'{"error_summary": "reset/..", "error": {".tag": "reset"}}')

_json = msgspec.json.Encoder()


class BadRequest(Exception):
    """400: the caller's fault (plain-text body, as Dropbox answers what it cannot parse)."""

    def __init__(self, message: str) -> None:
        super().__init__(f'Error in call to API function "{ROUTE}": {message}')


@dataclass
class NotifyConfig:
    """Bounds and knobs of one notify process (units in the names)."""

    longpoll_min_timeout_s: float = API_MIN_TIMEOUT_S  # test-only: lower it to poll faster
    longpoll_wait_cap_s: float | None = None  # test-only: answer `false` after this at most
    jitter_fraction: float = 0.1
    max_watchers: int = 1_000_000  # waiting long-polls + stream subscriptions, per process
    max_parked: int = 100_000  # long-polls waiting for a namespace lookup
    max_cached_namespaces: int = 100_000  # known positions of unwatched namespaces
    max_streams: int = 10_000  # push-stream connections
    max_stream_namespaces: int = 1_000  # per client stream
    max_peer_namespaces: int = 2_000_000  # per leaf link
    backoff_s: int = 60  # what an overloaded process tells clients to wait
    lookup_timeout_s: float = 10.0
    tick_s: float = 0.1
    stream_heartbeat_s: float = 15.0
    frame_max_events: int = 10_000
    upstream_retry_min_s: float = 0.1  # after `upstream.run` raised (a bug): back-off bounds
    upstream_retry_max_s: float = 5.0


class Waiter(Protocol):
    """Whoever waits for a long-poll answer: called once, maybe before `longpoll` returns."""

    def finish(self, status: int, body: bytes) -> None: ...


class Upstream(Protocol):
    follows_all: bool

    async def run(self, sink: NotifyService) -> None: ...

    def request(self, ns_seen: dict[int, int]) -> None: ...

    def release(self, namespaces: list[int]) -> None: ...


class CursorReset(Exception):
    pass


_Decide = Callable[[tuple[str | None, int] | None], None]  # (owner, position), None: no answer


def parse_longpoll(raw: bytes, min_timeout_s: float) -> tuple[str, float]:
    """`{"cursor": str, "timeout": 30..480 = 30}` → (cursor, timeout_s); `BadRequest` if not."""
    if not raw.strip():
        raise BadRequest("request body: expected a JSON object with a cursor")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested past the interpreter's limit
        raise BadRequest("request body: could not decode input as JSON") from None
    if not isinstance(obj, dict):
        raise BadRequest("request body: expected a JSON object")
    cursor = obj.get("cursor")
    if not isinstance(cursor, str) or not cursor:
        raise BadRequest("cursor: expected a non-empty string")
    timeout = obj.get("timeout", API_MIN_TIMEOUT_S)
    if timeout is None:
        timeout = API_MIN_TIMEOUT_S
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise BadRequest("timeout: expected an integer")
    if timeout < min_timeout_s:
        raise BadRequest(f"timeout: {timeout} is less than {min_timeout_s:g}")
    if timeout > API_MAX_TIMEOUT_S:
        raise BadRequest(f"timeout: {timeout} is greater than {API_MAX_TIMEOUT_S}")
    return cursor, float(timeout)


class _FutureWaiter:
    """A waiter for an aiohttp handler: the answer resolves a future."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future) -> None:
        self.fut = fut

    def finish(self, status: int, body: bytes) -> None:
        if not self.fut.done():
            self.fut.set_result((status, body))


class _Peer:
    """One push-stream connection: a leaf (cluster) or a sync client. Pending output is one
    position per namespace (coalesced) plus one info per subscribed namespace: bounded by the
    number of its subscriptions, whatever the event rate and however slow it reads."""

    __slots__ = ("ws", "cluster", "ns", "events", "infos", "notes", "wake", "closed", "max_ns")

    def __init__(self, ws: web.WebSocketResponse, cluster: bool, max_ns: int) -> None:
        self.ws = ws
        self.cluster = cluster
        self.ns: set[int] = set()
        self.events: dict[int, int] = {}
        self.infos: dict[int, tuple[str | None, int]] = {}
        self.notes: list[F.Watching | F.Reset | F.BackoffAnswer | F.Resync] = []  # watch answers
        self.wake = asyncio.Event()
        self.closed = False
        self.max_ns = max_ns

    def push(self, ns: int, position: int) -> None:
        if position > self.events.get(ns, -3):
            self.events[ns] = position
            self.wake.set()

    def info(self, ns: int, owner: str | None, position: int) -> None:
        self.infos[ns] = (owner, position)
        self.wake.set()

    def note(self, msg: F.Watching | F.Reset | F.BackoffAnswer | F.Resync) -> None:
        self.notes.append(msg)
        self.wake.set()


class NotifyService:
    def __init__(
        self,
        upstream: Upstream,
        cfg: NotifyConfig | None = None,
        admin_token: str = "",
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg = cfg or NotifyConfig()
        self.upstream = upstream
        self.admin_token = admin_token
        self.rng = rng or random.Random()
        self.hub = Hub(cfg.max_watchers, cfg.max_cached_namespaces, cfg.tick_s)
        self.secret: bytes | None = None
        self.secret_known = asyncio.Event()
        self.upstream_connected = False
        self._parked: dict[int, dict[Hashable, _Decide]] = {}  # ns -> waiting for its info
        self._parked_of: dict[Hashable, int] = {}
        self._asked: dict[int, float] = {}  # ns -> deadline for its parked requests
        self._info_waiters: dict[int, set[_Peer]] = {}
        self._peers: set[_Peer] = set()
        self._aio_waiters: dict[_FutureWaiter, web.Request] = {}
        self._next_sweep = 0.0
        self._next_ask_check = 0.0
        self.backoff_answer = (200, b'{"changes": false, "backoff": %d}' % cfg.backoff_s)
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.stats = dict(longpolls=0, true=0, false=0, reset=0, backoff=0, bad=0)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        started = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._main(started), name="notify-service")
        self._task.add_done_callback(self._main_ended)
        await started

    def _main_ended(self, task: asyncio.Task) -> None:
        """Its children retry their own failures, so this only reports a bug (or `stop`)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("the notify service stopped", exc_info=task.exception())

    async def _main(self, started: asyncio.Future) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._run_upstream(), name="notify-upstream")
            tg.create_task(self._ticker(), name="notify-ticker")
            started.set_result(None)

    async def _run_upstream(self) -> None:
        """`upstream.run` until cancelled: if it ever returns or raises, log it and run it
        again after a back-off (a link retries its own connections; this catches bugs)."""
        backoff = Backoff(self.rng, self.cfg.upstream_retry_min_s, self.cfg.upstream_retry_max_s)
        while True:
            try:
                await self.upstream.run(self)
                log.error("notify upstream stopped by itself; restarting it")
            except Exception:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError() from None  # stop() cancelled us meanwhile
                log.exception("notify upstream failed; restarting it")
            if self.upstream_connected:
                self.on_disconnected()
            await backoff.sleep()

    async def stop(self) -> None:
        """Answer every waiting long-poll `false` (its client polls again, elsewhere), close
        every stream, stop the upstream."""
        self._stopping = True
        for key in self.hub.cancel_all():
            self._finish(key, FALSE)
        for ns in list(self._parked):
            for fn in self._parked.pop(ns).values():
                fn(None)
        self._parked_of.clear()
        for peer in list(self._peers):
            peer.closed = True
            peer.wake.set()
            with contextlib.suppress(Exception):
                await peer.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _ticker(self) -> None:
        failed = False
        while True:
            await asyncio.sleep(self.cfg.tick_s)  # the tick period
            try:
                self.tick(self._now())
                failed = False
            except Exception:
                if not failed:  # once per run of failing ticks
                    log.exception("notify tick failed; ticking on")
                failed = True

    def tick(self, now: float) -> None:
        for key in self.hub.expire(now):
            self._finish(key, FALSE)
        if self._aio_waiters and now >= self._next_sweep:
            self._next_sweep = now + 1.0
            for waiter, request in list(self._aio_waiters.items()):
                t = request.transport
                if t is None or t.is_closing():
                    del self._aio_waiters[waiter]
                    self.cancel(waiter)
                    waiter.finish(*FALSE)  # nobody reads it: the handler just returns
        if not self._asked or now < self._next_ask_check:
            return
        self._next_ask_check = now + 1.0
        late = [ns for ns, dl in self._asked.items() if dl <= now]
        for ns in late:
            self._asked[ns] = float("inf")  # still asked: its answer may come later
            for key, fn in (self._parked.pop(ns, None) or {}).items():
                self._parked_of.pop(key, None)
                fn(None)

    # -- long-poll -----------------------------------------------------------------------------
    def longpoll(self, cursor: str, timeout_s: float, waiter: Waiter) -> None:
        """Answer `waiter` (now or later) per the module docstring."""
        self.stats["longpolls"] += 1
        if self._stopping or self.secret is None:
            self._finish(waiter, self.backoff_answer)
            return
        try:
            account, ns, state = self._open(cursor)
        except CursorReset:
            self._finish(waiter, RESET)
            return
        wait_s = timeout_s
        if self.cfg.longpoll_wait_cap_s is not None:
            wait_s = min(wait_s, self.cfg.longpoll_wait_cap_s)
        deadline = self._now() + wait_s * (1 + self.cfg.jitter_fraction * self.rng.random())

        def decide(info: tuple[str | None, int] | None) -> None:
            if info is None:
                self._finish(waiter, self.backoff_answer)
                return
            owner, pos = info
            if pos == GONE or owner is None or owner != account:
                self._finish(waiter, RESET)
            elif state.resume is not None or pos > state.position:
                self._finish(waiter, TRUE)
            else:
                try:
                    ready = self.hub.wait(ns, waiter, state.position, deadline)
                except HubFull:
                    self._finish(waiter, self.backoff_answer)
                    return
                if ready is not None:
                    self._finish(waiter, TRUE)

        self._with_info(ns, waiter, decide)

    def cancel(self, waiter: Hashable) -> None:
        """The waiter's client went away."""
        if not self.hub.cancel(waiter):
            ns = self._parked_of.pop(waiter, None)
            if ns is not None:
                parked = self._parked.get(ns)
                if parked is not None:
                    parked.pop(waiter, None)
                    if not parked:
                        del self._parked[ns]

    def _open(self, cursor: str) -> tuple[str, int, CursorState]:
        assert self.secret is not None
        try:
            obj = open_signed_cursor(self.secret, cursor)
            account, ns, raw = obj
            state = msgspec.convert(raw, CursorState)
        except (CursorInvalid, ValueError, TypeError, msgspec.ValidationError):
            raise CursorReset() from None
        if not isinstance(account, str) or not isinstance(ns, int) or isinstance(ns, bool):
            raise CursorReset()
        return account, ns, state

    def _finish(self, waiter: Any, answer: tuple[int, bytes]) -> None:
        status, body = answer
        if status == 409:
            self.stats["reset"] += 1
        elif body == TRUE[1]:
            self.stats["true"] += 1
        elif body == FALSE[1]:
            self.stats["false"] += 1
        else:
            self.stats["backoff"] += 1
        waiter.finish(status, body)

    def _with_info(self, ns: int, key: Hashable, fn: _Decide) -> None:
        """Call `fn((owner, position))` once both are known — now, or when upstream answers —
        or `fn(None)` if upstream cannot answer in time."""
        i = self.hub.info(ns)
        if i is not None and (i.position == GONE or (i.owner is not None and i.position >= 0)):
            fn((i.owner, i.position))
            return
        if len(self._parked_of) >= self.cfg.max_parked or (
            ns not in self._asked and len(self._asked) >= self.cfg.max_parked
        ):
            fn(None)
            return
        self._parked.setdefault(ns, {})[key] = fn
        self._parked_of[key] = ns
        self._ask(ns)

    def _ask(self, ns: int) -> None:
        """Ask upstream about `ns` — again if an earlier ask went unanswered too long."""
        if self._asked.get(ns, float("inf")) == float("inf"):
            self._asked[ns] = self._now() + self.cfg.lookup_timeout_s
            self.upstream.request({ns: self.hub.position(ns)})

    # -- upstream callbacks --------------------------------------------------------------------
    def on_secret(self, secret: bytes) -> None:
        if self.secret is not None and secret != self.secret:
            log.warning("the cluster secret changed: every position is forgotten")
            for key in self.hub.cancel_all():
                self._finish(key, TRUE)  # the client's `continue` will tell it to reset
            self.hub.forget()
        self.secret = secret
        self.secret_known.set()

    def on_connected(self) -> None:
        """Upstream (re)connected: ask again for everything we need from it."""
        self.upstream_connected = True
        want: dict[int, int] = {ns: self.hub.position(ns) for ns in self._asked}
        if not self.upstream.follows_all:
            for ns in self.hub.namespaces():
                want[ns] = self.hub.position(ns)
        if want:
            self.upstream.request(want)

    def on_disconnected(self) -> None:
        self.upstream_connected = False

    def on_events(self, events: list[tuple[int, int]]) -> None:
        follows_all = self.upstream.follows_all
        hub = self.hub
        for ns, pos in events:
            if not follows_all and hub.info(ns) is None and ns not in self._asked:
                continue  # released: a late event
            self._dispatch(hub.publish(ns, pos))
        self._release_evicted()

    def on_info(self, infos: list[tuple[int, str | None, int]]) -> None:
        for ns, owner, pos in infos:
            if not self.upstream.follows_all and ns not in self._asked and not self.hub.info(ns):
                continue
            self._asked.pop(ns, None)
            if owner is None:
                pos = GONE
            self._dispatch(self.hub.learn(ns, pos, owner))
            i = self.hub.info(ns)
            answer = (owner, pos) if i is None else (i.owner, i.position)
            parked = self._parked.pop(ns, None)
            if parked:
                for key, fn in parked.items():
                    self._parked_of.pop(key, None)
                    fn(answer)
            for peer in self._info_waiters.pop(ns, ()):
                if not peer.closed and ns in peer.ns:
                    peer.info(ns, answer[0], answer[1])
        self._release_evicted()

    def on_resync(self) -> None:
        """Upstream cannot vouch for the positions we hold: look every watched one up again."""
        log.info("resync from upstream: re-reading every watched namespace")
        for ns in self.hub.forget():
            self._asked.pop(ns, None)
            self._ask(ns)
        for peer in self._peers:
            peer.note(F.Resync())

    def _dispatch(self, wakes: list[Wake]) -> None:
        for w in wakes:
            if w.subscriber:
                w.key.push(w.ns, w.position)  # type: ignore[attr-defined]
            else:
                self._finish(w.key, RESET if w.position == GONE else TRUE)

    def _release_evicted(self) -> None:
        gone = [ns for ns in self.hub.take_evicted() if ns not in self._asked]
        if gone and not self.upstream.follows_all:
            self.upstream.release(gone)

    # -- aiohttp: the long-poll route (meta processes) and the push stream --------------------
    async def api_longpoll(self, request: web.Request, who: Any = None) -> web.StreamResponse:
        """`ApiServer` route handler (auth "none": the cursor is the credential)."""
        raw = await request.content.read(LONGPOLL_BODY_MAX_BYTES + 1)
        try:
            if len(raw) > LONGPOLL_BODY_MAX_BYTES:
                raise BadRequest("request body: too large")
            cursor, timeout_s = parse_longpoll(raw, self.cfg.longpoll_min_timeout_s)
        except BadRequest as e:
            self.stats["bad"] += 1
            return web.Response(status=400, text=str(e), content_type="text/plain")
        waiter = _FutureWaiter(asyncio.get_running_loop().create_future())
        self.longpoll(cursor, timeout_s, waiter)
        if not waiter.fut.done():
            # aiohttp does not cancel a handler whose client left (handler_cancellation is off
            # in the shared runner): `tick` sweeps these, so a gone client frees its slot.
            self._aio_waiters[waiter] = request
        try:
            status, body = await waiter.fut
        finally:
            self._aio_waiters.pop(waiter, None)
            if not waiter.fut.done():
                self.cancel(waiter)
        return web.Response(status=status, body=body, content_type="application/json")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(STREAM_PATH, self.stream)

    def status(self) -> dict:
        up = self.upstream
        return {
            "upstream": getattr(up, "connected_url", "local") if self.upstream_connected else None,
            "follows_all": up.follows_all,
            "index": getattr(up, "index", None),
            "sessions": getattr(up, "sessions", 1),
            "waiting": self.hub.waiting,
            "watchers": self.hub.watchers,
            "namespaces": len(self.hub.namespaces()),
            "parked": len(self._parked_of),
            "streams": len(self._peers),
            **self.stats,
        }

    async def api_status(self, request: web.Request, who: Any = None) -> web.Response:
        """`raftbox/notify/status` (admin): what this notify process holds and follows."""
        if not self._is_admin(request):
            return web.Response(status=401, text="admin token required")
        return web.Response(body=_json.encode(self.status()), content_type="application/json")

    def _is_admin(self, request: web.Request) -> bool:
        h = request.headers.get("Authorization", "")
        token = h[7:].strip() if h.startswith("Bearer ") else ""
        return bool(token) and hmac.compare_digest(token.encode(), self.admin_token.encode())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        cluster = self._is_admin(request)
        if request.headers.get("Authorization") and not cluster:
            return web.Response(status=401, text="bad admin token")
        if len(self._peers) >= self.cfg.max_streams or self._stopping:
            return web.Response(
                status=503,
                text="too many streams",
                headers={"Retry-After": str(self.cfg.backoff_s)},
            )
        max_ns = self.cfg.max_peer_namespaces if cluster else self.cfg.max_stream_namespaces
        ws = web.WebSocketResponse(
            heartbeat=self.cfg.stream_heartbeat_s,
            max_msg_size=(64 << 20) if cluster else 256 * 1024,
        )
        await ws.prepare(request)
        peer = _Peer(ws, cluster, max_ns)
        self._peers.add(peer)
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._peer_writer(peer))
                try:
                    await self._peer_reader(peer)
                finally:
                    peer.closed = True
                    peer.wake.set()
                    writer.cancel()
        except* (ConnectionError, RuntimeError) as eg:
            log.debug("stream closed: %s", eg.exceptions)
        finally:
            self._peers.discard(peer)
            self.hub.unsubscribe_all(peer, peer.ns)
            for ns in peer.ns:
                waiting = self._info_waiters.get(ns)
                if waiting is not None:
                    waiting.discard(peer)
                    if not waiting:
                        del self._info_waiters[ns]
            for key in [k for k in self._parked_of if isinstance(k, tuple) and k[0] is peer]:
                self.cancel(key)
            self._release_evicted()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _peer_reader(self, peer: _Peer) -> None:
        async for msg in peer.ws:
            if msg.type != WSMsgType.TEXT:
                break
            try:
                frame = F.decode_stream_up(msg.data)
                if isinstance(frame, F.Watch):
                    self._watch(peer, frame.cursors)
                elif isinstance(frame, F.Sub) and peer.cluster:
                    self._sub(peer, frame.ns)
                elif isinstance(frame, F.Unsub) and peer.cluster:
                    for ns in frame.ns:
                        self._unsub(peer, ns)
                else:
                    raise F.BadFrame(f"{type(frame).__name__.lower()}: for cluster peers only")
            except (F.BadFrame, ValueError) as e:
                log.info("push stream: a bad frame (%s): closing the connection", e)
                await peer.ws.close(code=1008, message=f"bad frame: {e}"[:120].encode())
                break
            if peer.closed:
                break

    def _sub(self, peer: _Peer, items: list[tuple[int, int]]) -> None:
        for ns, seen in items:
            if ns not in peer.ns and len(peer.ns) >= peer.max_ns:
                raise ValueError("too many namespaces")
            try:
                self.hub.subscribe(ns, peer, seen)
            except HubFull:
                peer.closed = True  # the leaf fails over to another root
                return
            peer.ns.add(ns)
            i = self.hub.info(ns)
            if i is not None and (i.position == GONE or (i.owner is not None and i.position >= 0)):
                peer.info(ns, i.owner, i.position)
            else:
                self._info_waiters.setdefault(ns, set()).add(peer)
                self._ask(ns)

    def _unsub(self, peer: _Peer, ns: int) -> None:
        if ns in peer.ns:
            peer.ns.discard(ns)
            self.hub.unsubscribe(ns, peer)
            peer.events.pop(ns, None)
            peer.infos.pop(ns, None)
            waiting = self._info_waiters.get(ns)
            if waiting is not None:
                waiting.discard(peer)
        self._release_evicted()

    def _watch(self, peer: _Peer, cursors: list[F.WatchCursor]) -> None:
        busy = self.cfg.backoff_s
        if self.secret is None:
            for idx in range(len(cursors)):
                peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
            return
        if len(cursors) > peer.max_ns or len(peer.notes) > 4 * peer.max_ns:
            raise ValueError("too many cursors (or answers it does not read)")
        for idx, c in enumerate(cursors):
            try:
                account, ns, state = self._open(c.cursor)
            except CursorReset:
                peer.note(F.Reset(cursor=idx))
                continue
            seen = c.position
            if seen is None:
                seen = -1 if state.resume is not None else state.position

            def decide(info, idx=idx, account=account, ns=ns, seen=seen) -> None:
                if peer.closed:
                    return
                if info is None:
                    peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
                    return
                owner, pos = info
                if pos == GONE or owner is None or owner != account:
                    peer.note(F.Reset(cursor=idx))
                    return
                if ns not in peer.ns and len(peer.ns) >= peer.max_ns:
                    peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
                    return
                try:
                    self.hub.subscribe(ns, peer, seen)
                except HubFull:
                    peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
                    return
                peer.ns.add(ns)
                peer.note(F.Watching(cursor=idx, ns=ns))
                if pos > seen:
                    peer.push(ns, pos)

            self._with_info(ns, (peer, idx), decide)

    async def _peer_writer(self, peer: _Peer) -> None:
        ws = peer.ws
        if peer.cluster:
            await self.secret_known.wait()
            assert self.secret is not None
            hello = F.Hello(secret=base64.b64encode(self.secret).decode())
        else:
            hello = F.Hello()
        await ws.send_str(F.encode(hello))
        step = self.cfg.frame_max_events
        while not peer.closed:
            await peer.wake.wait()
            peer.wake.clear()
            if peer.notes:
                notes, peer.notes = peer.notes, []
                for n in notes:
                    await ws.send_str(F.encode(n))
            if peer.infos:
                infos, peer.infos = peer.infos, {}
                items = [(ns, o, p) for ns, (o, p) in infos.items()]
                for k in range(0, len(items), step):
                    await ws.send_str(F.encode(F.Info(ns=items[k : k + step])))
            if peer.events:
                events, peer.events = peer.events, {}
                evs = list(events.items())
                for k in range(0, len(evs), step):
                    await ws.send_str(F.encode(F.Ev(ev=evs[k : k + step])))


__all__ = [
    "API_MAX_TIMEOUT_S",
    "API_MIN_TIMEOUT_S",
    "BadRequest",
    "NotifyConfig",
    "NotifyService",
    "UNKNOWN",
    "parse_longpoll",
]
