"""The push stream: `GET /2/raftbox/notify/stream`, a WebSocket over which a sync client
watches its cursors, and a leaf subscribes to the namespaces its clients watch.

Contract. `PushStreams` holds the open connections of one `NotifyService` (a `StreamPeer` each)
and answers them from the service's state: it opens cursors, looks namespaces up, and takes a
place in the hub through the service (`StreamHost`, below), so a stream and a long-poll on the
same cursor get the same answer. The service tells it what upstream said (`on_info`, `resync`)
and closes every connection when it stops (`close_all`). Each connection is served by one task
group of two (its reader and its writer) inside the aiohttp handler, so nothing outlives it.

Frames
------
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

A `watch` that arrives before the service knows the cluster secret (a process serves before its
upstream's `hello`) waits for it, up to `lookup_timeout_s`, as a long-poll does; only then is it
answered `backoff`.

These frames are the typed values of `frames.py` (`StreamUp`, `StreamDown`); a frame that does
not decode, or asks for more than its bounds, is the client's fault: logged and its connection
closed (code 1008).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web

from . import frames as F
from .hub import GONE, Hub, HubFull, may_watch

if TYPE_CHECKING:
    from raftbox.meta.commands import CursorState

    from .service import NotifyConfig

log = logging.getLogger(__name__)

STREAM_PATH = "/2/raftbox/notify/stream"

Decide = Callable[[tuple[str | None, int] | None], None]  # (owner, position), None: no answer


class StreamHost(Protocol):
    """What the push stream needs of the notify service (`NotifyService` is one)."""

    cfg: NotifyConfig
    hub: Hub
    secret: bytes | None
    secret_known: asyncio.Event

    @property
    def stopping(self) -> bool: ...

    def is_admin(self, request: web.Request) -> bool: ...

    def open_cursor(self, cursor: str) -> tuple[str, int, CursorState] | None: ...

    def cursor_mounts(self, cursor: str) -> list[tuple[int, int]]: ...

    def with_info(self, ns: int, key: Hashable, fn: Decide, account: str | None = None) -> None: ...

    def ask(self, ns: int) -> None: ...

    def cancel_parked(self, owner: object) -> None: ...

    def release_evicted(self) -> None: ...


class StreamPeer:
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


class PushStreams:
    """The open push streams of one notify service (see the module docstring)."""

    def __init__(self, svc: StreamHost) -> None:
        self.svc = svc
        self._peers: set[StreamPeer] = set()
        self._info_waiters: dict[int, set[StreamPeer]] = {}  # ns -> leaves waiting for its info
        self.waiting_for_secret = 0  # connections whose `watch` waits for the cluster secret

    @property
    def count(self) -> int:
        return len(self._peers)

    def on_info(self, ns: int, owner: str | None, position: int) -> None:
        """Upstream told `ns`'s owner and position: send it to the leaves that asked."""
        for peer in self._info_waiters.pop(ns, ()):
            if not peer.closed and ns in peer.ns:
                peer.info(ns, owner, position)

    def resync(self) -> None:
        """The service lost continuity: every client re-checks what it watches."""
        for peer in self._peers:
            peer.note(F.Resync())

    async def close_all(self) -> None:
        for peer in list(self._peers):
            peer.closed = True
            peer.wake.set()
            with contextlib.suppress(Exception):
                await peer.ws.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of `STREAM_PATH`."""
        svc = self.svc
        cluster = svc.is_admin(request)
        if request.headers.get("Authorization") and not cluster:
            return web.Response(status=401, text="bad admin token")
        if len(self._peers) >= svc.cfg.max_streams or svc.stopping:
            return web.Response(
                status=503,
                text="too many streams",
                headers={"Retry-After": str(svc.cfg.backoff_s)},
            )
        max_ns = svc.cfg.max_peer_namespaces if cluster else svc.cfg.max_stream_namespaces
        ws = web.WebSocketResponse(
            heartbeat=svc.cfg.stream_heartbeat_s,
            max_msg_size=(64 << 20) if cluster else 256 * 1024,
        )
        await ws.prepare(request)
        peer = StreamPeer(ws, cluster, max_ns)
        self._peers.add(peer)
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._writer(peer))
                try:
                    await self._reader(peer)
                finally:
                    peer.closed = True
                    peer.wake.set()
                    writer.cancel()
        except* (ConnectionError, RuntimeError) as eg:
            log.debug("stream closed: %s", eg.exceptions)
        finally:
            self._peers.discard(peer)
            svc.hub.unsubscribe_all(peer, peer.ns)
            for ns in peer.ns:
                waiting = self._info_waiters.get(ns)
                if waiting is not None:
                    waiting.discard(peer)
                    if not waiting:
                        del self._info_waiters[ns]
            svc.cancel_parked(peer)
            svc.release_evicted()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _reader(self, peer: StreamPeer) -> None:
        async for msg in peer.ws:
            if msg.type != WSMsgType.TEXT:
                break
            try:
                frame = F.decode_stream_up(msg.data)
                if isinstance(frame, F.Watch):
                    if self.svc.secret is None:
                        await self._until_secret()
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

    async def _until_secret(self) -> None:
        """Until the service knows the cluster secret, or `lookup_timeout_s` passed."""
        self.waiting_for_secret += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.svc.secret_known.wait(), self.svc.cfg.lookup_timeout_s)
        finally:
            self.waiting_for_secret -= 1

    def _sub(self, peer: StreamPeer, items: list[tuple[int, int]]) -> None:
        for ns, seen in items:
            if ns not in peer.ns and len(peer.ns) >= peer.max_ns:
                raise ValueError("too many namespaces")
            try:
                self.svc.hub.subscribe(ns, peer, seen)
            except HubFull:
                peer.closed = True  # the leaf fails over to another root
                return
            peer.ns.add(ns)
            i = self.svc.hub.info(ns)
            if i is not None and (i.position == GONE or (i.owner is not None and i.position >= 0)):
                peer.info(ns, i.owner, i.position)
            else:
                self._info_waiters.setdefault(ns, set()).add(peer)
                self.svc.ask(ns)

    def _unsub(self, peer: StreamPeer, ns: int) -> None:
        if ns in peer.ns:
            peer.ns.discard(ns)
            self.svc.hub.unsubscribe(ns, peer)
            peer.events.pop(ns, None)
            peer.infos.pop(ns, None)
            waiting = self._info_waiters.get(ns)
            if waiting is not None:
                waiting.discard(peer)
        self.svc.release_evicted()

    def _watch(self, peer: StreamPeer, cursors: list[F.WatchCursor]) -> None:
        busy = self.svc.cfg.backoff_s
        if self.svc.secret is None:
            for idx in range(len(cursors)):
                peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
            return
        if len(cursors) > peer.max_ns or len(peer.notes) > 4 * peer.max_ns:
            raise ValueError("too many cursors (or answers it does not read)")
        for idx, c in enumerate(cursors):
            opened = self.svc.open_cursor(c.cursor)
            if opened is None:
                peer.note(F.Reset(cursor=idx))
                continue
            account, ns, state = opened
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
                if pos == GONE or not may_watch(owner, account):
                    peer.note(F.Reset(cursor=idx))
                    return
                if ns not in peer.ns and len(peer.ns) >= peer.max_ns:
                    peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
                    return
                try:
                    self.svc.hub.subscribe(ns, peer, seen)
                except HubFull:
                    peer.note(F.BackoffAnswer(cursor=idx, backoff=busy))
                    return
                peer.ns.add(ns)
                peer.note(F.Watching(cursor=idx, ns=ns))
                if pos > seen:
                    peer.push(ns, pos)

            self.svc.with_info(ns, (peer, idx), decide, account)
            for m_ns, m_seen in self.svc.cursor_mounts(c.cursor)[: peer.max_ns]:
                self._watch_mount(peer, idx, account, m_ns, m_seen)

    def _watch_mount(self, peer: StreamPeer, idx: int, account: str, ns: int, seen: int) -> None:
        """A shared folder a watched cursor covers (`raftbox.api.spaces`): its changes are the
        cursor's too. One the account may no longer watch is skipped: the cursor's own
        namespace reports the mount point gone, and `continue` drops it."""

        def decide(info) -> None:
            if peer.closed or info is None:
                return
            owner, pos = info
            if pos == GONE or not may_watch(owner, account):
                return
            if ns not in peer.ns and len(peer.ns) >= peer.max_ns:
                return
            try:
                self.svc.hub.subscribe(ns, peer, seen)
            except HubFull:
                return
            peer.ns.add(ns)
            peer.note(F.Watching(cursor=idx, ns=ns))
            if pos > seen:
                peer.push(ns, pos)

        self.svc.with_info(ns, (peer, idx, ns), decide, account)

    async def _writer(self, peer: StreamPeer) -> None:
        ws = peer.ws
        if peer.cluster:
            await self.svc.secret_known.wait()
            assert self.svc.secret is not None
            hello = F.Hello(secret=base64.b64encode(self.svc.secret).decode())
        else:
            hello = F.Hello()
        await ws.send_str(F.encode(hello))
        step = self.svc.cfg.frame_max_events
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
