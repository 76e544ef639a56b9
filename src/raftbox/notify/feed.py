"""Links of the notification tree: meta members → roots → leaves. Events are `(namespace,
position)`; every link resumes from a position, so a reconnect or a failover loses nothing.

Theory of operation
-------------------
- `MetaFeedServer` runs on every meta member: `GET /2/raftbox/internal/changes?after=INDEX`, a
  WebSocket for admin-token holders (notify roots). It sends `hello` (the cluster secret and the
  raft index it starts after), then, each time entries apply, `{"op": "ev", "ev": [[ns,
  position], ...], "index": I}` — `MetaStore.changed_since(previous index)`: one event per
  namespace however many entries touched it, so a slow root gets coalesced positions, not a
  backlog. Only the last frame of a batch carries `index`: a root that resumes from the last
  index it saw gets everything after it again. Between batches, `{"op": "hb", "index": I,
  "leader": bool}` every second. `{"op": "sub", "ns": [[ns, seen], ...]}` is a lookup: the
  member answers `info` (owner, position; `null, -2` if the namespace does not exist — checked
  again after a ReadIndex, so a lagging member never calls a new namespace gone).

  A root resuming `after` an index this member has not applied yet waits until it has (a lagging
  follower); if the member is the leader and has never committed that index, the root followed
  another history (a restored cluster): the member sends `resync` and starts from its own index.
  The namespaces table keeps every namespace's last index forever, so any older index is served
  exactly: a resync is never needed for age alone.
- `LocalFeed` is the same feed in-process, for a root that runs inside a meta member (`raftbox
  up`, `serve --roles meta,...,notify`): it waits on the node's apply condition and reads the
  local store, so it fails over with nothing — if its member is down, so is the root.
- `StreamLink` is the client side, used by a root for the meta feed (`follows_all`: it tracks the
  raft index and resumes after it) and by a leaf for a root's push stream (it subscribes the
  namespaces its service asks for, with the positions seen; on reconnect the service subscribes
  everything again). It cycles through its URLs: a dead, unreachable or leaderless member, or a
  dead root, costs one reconnect to the next.

Frames are the typed values of `frames.py`, shared by both ends; a frame that does not decode is
the other end's fault (`BadFrame`): logged, and that connection dropped.

Failure and ownership
---------------------
A link lives as long as its owner (the `NotifyService` task group that runs `StreamLink.run`):
every failure of a connection — refused, reset, timed out, a heartbeat missed, a `LinkError`, a
bad frame — ends that connection only. It is logged once (a warning without a traceback for the
expected network and protocol errors; the same failure repeated on the same URL is logged at
debug level until something changes), and the link tries the next URL after a `Backoff` delay,
forever. An unexpected exception (a bug) is logged with its traceback and retried the same way.
Only cancellation, by the owner, ends `run`. The reader and writer of one connection live in a
task group whose errors come out as an `ExceptionGroup`: `run` catches them with `except*`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import ssl
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web

from raftbox.backoff import Backoff
from raftbox.meta import sharing

from . import frames as F
from .hub import GONE

if TYPE_CHECKING:
    from raftbox.meta.fsm import MetaStore
    from raftbox.raft.node import RaftNode

    from .service import NotifyService

log = logging.getLogger(__name__)

CHANGES_PATH = "/2/raftbox/internal/changes"


class LinkError(Exception):
    """The other end misbehaved or cannot serve us: move on to the next URL."""


def _chunks(items: list, n: int):
    for k in range(0, len(items), n):
        yield items[k : k + n]


async def _lookup(node: RaftNode, store: MetaStore, namespaces: list[int]) -> list[list]:
    """[[ns, owner, position] | [ns, None, GONE]]: a namespace missing here is checked again
    after a ReadIndex (this member may lag behind the one that created it)."""
    out, missing = [], []
    for ns in namespaces:
        info = store.namespace_info(ns)
        if info is None:
            missing.append(ns)
        else:
            out.append([ns, info[0], info[1]])
    if missing:
        await node.read_index(timeout_s=5.0)
        for ns in missing:
            info = store.namespace_info(ns)
            out.append([ns, None, GONE] if info is None else [ns, info[0], info[1]])
    return out


class LocalFeed:
    """The change feed of the meta member this process hosts (see the module docstring)."""

    follows_all = True

    def __init__(
        self,
        node: RaftNode,
        store: MetaStore,
        idle_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.idle_s = idle_s
        self.rng = rng or random.Random()
        self._asks: set[int] = set()
        self._asked = asyncio.Event()

    def request(self, ns_seen: dict[int, int]) -> None:
        self._asks.update(ns_seen)
        self._asked.set()

    def release(self, namespaces: list[int]) -> None:
        pass

    async def run(self, sink: NotifyService) -> None:
        store = self.store
        while not store.secret():  # MetaService.start() waited for it: normally already there
            with contextlib.suppress(TimeoutError):
                await self.node.wait_for(lambda: bool(store.secret()), self.idle_s)
        sink.on_secret(store.secret())
        last = store.applied_index()
        sink.on_connected()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._lookups(sink))
            while True:
                try:
                    await self.node.wait_for(
                        lambda last=last: store.applied_index() > last, self.idle_s
                    )
                except TimeoutError:
                    continue
                now = store.applied_index()
                events = store.changed_since(last)
                last = now
                if events:
                    sink.on_events(events)
                    # shared folders: their members, which membership changes change
                    infos = sharing.shared_infos(store, [ns for ns, _ in events])
                    if infos:
                        sink.on_info(infos)

    async def _lookups(self, sink: NotifyService) -> None:
        from raftbox.raft.node import NodeError

        backoff = Backoff(self.rng, min(0.05, self.idle_s), self.idle_s)
        while True:
            await self._asked.wait()
            self._asked.clear()
            asks, self._asks = list(self._asks), set()
            try:
                infos = await _lookup(self.node, self.store, asks)
            except (NodeError, TimeoutError) as e:
                log.info("namespace lookup failed (%s); retrying", e)
                self._asks.update(asks)
                await backoff.sleep()  # no majority right now
                self._asked.set()
                continue
            backoff.reset()
            sink.on_info([(ns, owner, pos) for ns, owner, pos in infos])


class MetaFeedServer:
    """`GET /2/raftbox/internal/changes` on a meta member (see the module docstring)."""

    def __init__(
        self,
        node: RaftNode,
        store: MetaStore,
        admin_token: str,
        heartbeat_s: float = 1.0,
        catch_up_s: float = 10.0,
        frame_max_events: int = 10_000,
    ) -> None:
        self.node = node
        self.store = store
        self.admin_token = admin_token
        self.heartbeat_s = heartbeat_s
        self.catch_up_s = catch_up_s
        self.frame_max_events = frame_max_events
        self._conns: set[web.WebSocketResponse] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CHANGES_PATH, self.handle)

    async def close(self) -> None:
        for ws in list(self._conns):
            with contextlib.suppress(Exception):
                await ws.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        import hmac

        h = request.headers.get("Authorization", "")
        token = h[7:].strip() if h.startswith("Bearer ") else ""
        if not token or not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return web.Response(status=401, text="admin token required")
        try:
            after = int(request.query["after"]) if "after" in request.query else None
        except ValueError:
            return web.Response(status=400, text="after: expected an integer")
        ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=64 << 20)
        await ws.prepare(request)
        self._conns.add(ws)
        try:
            await self._serve(ws, after)
        except* (ConnectionError, RuntimeError, TimeoutError) as eg:
            # the root went away, or this member could not catch up in time: it reconnects
            log.debug("change feed connection ended: %s", eg.exceptions)
        finally:
            self._conns.discard(ws)
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, after: int | None) -> None:
        node, store = self.node, self.store
        if after is not None and after > store.applied_index():
            if node.role.name == "LEADER" and after > node.core.log.committed:
                log.warning("a root resumes after index %d, never committed here: resync", after)
                await ws.send_str(F.encode(F.Resync()))
                after = None
            else:
                await node.wait_for(lambda: store.applied_index() >= after, self.catch_up_s)
        last = store.applied_index() if after is None else after
        secret = base64.b64encode(store.secret()).decode()
        await ws.send_str(F.encode(F.Hello(secret=secret, index=last)))
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self._reader(ws))
            try:
                while not reader.done():
                    try:
                        await node.wait_for(
                            lambda last=last: store.applied_index() > last, self.heartbeat_s
                        )
                    except TimeoutError:
                        leader = node.leader != 0
                        await ws.send_str(F.encode(F.Hb(index=last, leader=leader)))
                        continue
                    now = store.applied_index()
                    events = store.changed_since(last)
                    last = now
                    chunks = list(_chunks(events, self.frame_max_events)) or [[]]
                    for k, chunk in enumerate(chunks):
                        index = now if k == len(chunks) - 1 else None
                        await ws.send_str(F.encode(F.Ev(ev=chunk, index=index)))
            finally:
                reader.cancel()

    async def _reader(self, ws: web.WebSocketResponse) -> None:
        from raftbox.raft.node import NodeError

        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                return
            try:
                frame = F.decode_feed_up(msg.data)
            except F.BadFrame as e:
                log.warning("change feed: a bad frame from a root (%s): dropping it", e)
                await ws.close(code=1008, message=b"bad frame")
                return
            if not isinstance(frame, F.Sub):
                continue  # unsub: a root follows everything anyway
            asks = [ns for ns, _seen in frame.ns]
            try:
                infos = await _lookup(self.node, self.store, asks)
            except (NodeError, TimeoutError):
                continue  # the root's lookup times out; it asks again after a reconnect
            for chunk in _chunks(infos, self.frame_max_events):
                await ws.send_str(F.encode(F.Info(ns=chunk)))


class StreamLink:
    """A notify process's link to its upstream: meta members (a root) or roots (a leaf)."""

    def __init__(
        self,
        urls: list[str],
        admin_token: str,
        *,
        follows_all: bool,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
        heartbeat_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        retry_min_s: float = 0.05,
        retry_max_s: float = 2.0,
        leaderless_s: float = 3.0,
        frame_max_items: int = 10_000,
    ) -> None:
        from .service import STREAM_PATH

        if not urls:
            raise ValueError("a stream link needs at least one URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.admin_token = admin_token
        self.follows_all = follows_all
        self.path = CHANGES_PATH if follows_all else STREAM_PATH
        self.ssl_context = ssl_context
        self.rng = rng or random.Random()
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff = Backoff(self.rng, retry_min_s, retry_max_s)
        self.leaderless_s = leaderless_s
        self.frame_max_items = frame_max_items
        self.index: int | None = None  # follows_all: the raft index received up to
        self.connected_url: str | None = None
        self.sessions = 0  # how many times it connected (tests watch failovers)
        self.failures = 0  # how many connections failed (tests watch retries)
        self.last_failure: str | None = None
        self._logged: dict[str, str] = {}  # url -> the failure last logged for it
        self._want: dict[int, int] = {}
        self._release: set[int] = set()
        self._wake = asyncio.Event()

    def request(self, ns_seen: dict[int, int]) -> None:
        if self.connected_url is None:
            return  # on_connected asks for everything again
        for ns, seen in ns_seen.items():
            self._release.discard(ns)
            self._want[ns] = seen
        self._wake.set()

    def release(self, namespaces: list[int]) -> None:
        if self.connected_url is None:
            return
        for ns in namespaces:
            self._want.pop(ns, None)
            self._release.add(ns)
        self._wake.set()

    async def run(self, sink: NotifyService) -> None:
        """Connect, serve, and on any failure move to the next URL after a back-off — until
        cancelled (see "Failure and ownership" in the module docstring)."""
        i = self.rng.randrange(len(self.urls))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                url = self.urls[i]
                problem, bug = "connection closed by the other end", None
                try:
                    await self._session(session, url, sink)
                except* (LinkError, F.BadFrame) as eg:  # the other end's fault
                    problem = _describe(eg)
                except* (aiohttp.ClientError, OSError, TimeoutError) as eg:  # the network's
                    problem = _describe(eg)
                except* Exception as eg:  # a bug: log where, and keep the link alive
                    problem, bug = _describe(eg), eg
                finally:
                    if self.connected_url is not None:
                        self.connected_url = None
                        self.backoff.reset()  # it was up: the next attempt goes at once
                        sink.on_disconnected()
                _raise_if_cancelled()
                self._failed(url, problem, bug)
                i = (i + 1) % len(self.urls)
                await self.backoff.sleep()

    def _failed(self, url: str, problem: str, bug: BaseException | None) -> None:
        """Count a failure; log it unless it is the one last logged for this URL."""
        self.failures += 1
        self.last_failure = f"{url}: {problem}"
        if self._logged.get(url) == problem:
            log.debug("notify link to %s: %s (again)", url, problem)
            return
        self._logged[url] = problem
        if bug is not None:
            log.error("notify link to %s failed unexpectedly (retrying)", url, exc_info=bug)
        else:
            log.warning("notify link to %s: %s (retrying)", url, problem)

    async def _session(self, session: aiohttp.ClientSession, url: str, sink: NotifyService) -> None:
        params = {}
        if self.follows_all and self.index is not None:
            params["after"] = str(self.index)
        ssl_arg: Any = self.ssl_context if url.startswith("https:") else None
        async with session.ws_connect(
            url + self.path,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            params=params,
            heartbeat=self.heartbeat_s,
            ssl=ssl_arg,
            max_msg_size=64 << 20,
            autoping=True,
        ) as ws:
            self._want, self._release = {}, set()
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._writer(ws))
                try:
                    await self._reader(ws, url, sink)
                finally:
                    writer.cancel()

    async def _reader(self, ws: aiohttp.ClientWebSocketResponse, url: str, sink) -> None:
        """Until the connection closes; raises `LinkError` or `BadFrame` if the other end
        misbehaves."""
        loop = asyncio.get_running_loop()
        decode = F.decode_feed_down if self.follows_all else F.decode_stream_down
        leaderless_since: float | None = None
        while True:
            msg = await ws.receive()
            if msg.type != WSMsgType.TEXT:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    if self.connected_url is None:
                        raise LinkError(f"closed before hello ({ws.close_code})")
                    return
                if msg.type == WSMsgType.ERROR:
                    raise LinkError(f"websocket error: {ws.exception()}")
                raise LinkError(f"unexpected message type {msg.type}")
            frame = decode(msg.data)
            if isinstance(frame, F.Ev):
                sink.on_events(frame.ev)
                if self.follows_all and frame.index is not None:
                    self.index = max(self.index or 0, frame.index)
            elif isinstance(frame, F.Info):
                sink.on_info(frame.ns)
            elif isinstance(frame, F.Hello):
                if frame.secret is None:
                    raise LinkError("no secret in hello: is the admin token right?")
                try:
                    secret = base64.b64decode(frame.secret, validate=True)
                except ValueError:
                    raise F.BadFrame("hello: the secret is not base64") from None
                if self.follows_all and frame.index is None:
                    raise F.BadFrame("hello: no index from a change feed")
                sink.on_secret(secret)
                if self.follows_all and self.index is None:
                    self.index = frame.index
                if self.connected_url is None:
                    self.connected_url = url
                    self.sessions += 1
                    if self._logged.pop(url, None) is not None:
                        log.warning("notify link up again: %s", url)
                    else:
                        log.info("notify link up: %s", url)
                    sink.on_connected()
            elif isinstance(frame, F.Hb):
                if frame.leader:
                    leaderless_since = None
                elif leaderless_since is None:
                    leaderless_since = loop.time()
                elif loop.time() - leaderless_since > self.leaderless_s:
                    raise LinkError("member has had no leader for too long")
            elif isinstance(frame, F.Resync):
                self.index = None
                sink.on_resync()

    async def _writer(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._release:
                rel, self._release = sorted(self._release), set()
                for chunk in _chunks(rel, self.frame_max_items):
                    await ws.send_str(F.encode(F.Unsub(ns=chunk)))
            if self._want:
                want, self._want = self._want, {}
                items = list(want.items())
                for chunk in _chunks(items, self.frame_max_items):
                    await ws.send_str(F.encode(F.Sub(ns=chunk)))


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a task group swallowed: on Python 3.11, a group whose body
    failed while its owner was being cancelled raises only the body's error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def _describe(eg: BaseExceptionGroup) -> str:
    """One line for a connection's failure: its first leaf exception."""
    e: BaseException = eg
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
