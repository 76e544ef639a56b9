"""The notify role: `files/list_folder/longpoll`, the root/leaf tree, and what the push stream
(`stream.py`) shares with them.

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
   the local MetaStore, or sent in the `hello` of an admin-authenticated stream) — else `reset`.
   A process serves before its link's `hello` (its address is up first): a long-poll that
   arrives before the secret waits for it (counted with the parked requests, up to
   `lookup_timeout_s`), then goes on from here. Shedding it would make its client wait
   `backoff` seconds for a change that may already be committed (a leaf that restarts);
2. the owner of its namespace must be the cursor's account (a shared folder's info names all
   its members: `hub.may_watch`), and the namespace must exist — else `reset`. Forged, foreign
   and deleted-namespace cursors get the same 409 body: nothing tells them apart. An unknown
   namespace is **parked** until upstream's info arrives (one read); so is a shared folder whose
   known members do not include the account (it may have just joined). A root in a meta
   process re-reads a shared folder's members with each change of it (`LocalFeed`), so a
   removed member's next long-poll is refused; a leaf learns them when it asks its root;
3. a cursor still in its listing phase (`resume` set: `continue` has entries to give) or behind
   the namespace's position answers `{"changes": true}` at once;
4. else the request waits in the hub until the namespace moves past the cursor (`true`), or its
   deadline passes (`false`). Deadline = timeout (30..480 s) plus up to 10 % jitter, so that
   clients that arrived together do not come back together.

A recursive cursor on an account's tree also covers the shared folders mounted in it (its 4th
element, `raftbox.api.spaces`): the long-poll waits on each of those namespaces too and answers
for the first that moves (`_longpoll_many`); the push stream subscribes to them all.

`changes` is per namespace: a cursor on a sub-folder wakes for a change anywhere in its
namespace, and `continue` then returns no entries and a newer cursor (Dropbox allows this; a
spurious wake costs one `continue`, a missed one costs a sync).

Load shedding: past `max_watchers` (hub) or `max_parked`, or when the secret is still unknown
or upstream cannot answer within `lookup_timeout_s`, the answer is `{"changes": false,
"backoff": N}`; the connection cap is in the front (`front.py`). Nothing a client sends grows
state without a bound: watchers, parked requests, asked namespaces and stream subscriptions are
all counted and capped, and a slow stream reader gets coalesced positions (one per namespace),
not a growing queue.

The push stream (`GET /2/raftbox/notify/stream`, a WebSocket for sync clients and leaves) is
`stream.py`: it holds the connections, and asks this service for what long-poll asks it (a
cursor opened, a namespace's info, a place in the hub).

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
import contextlib
import hmac
import json
import logging
import random
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from aiohttp import web

from raftbox.backoff import Backoff
from raftbox.meta.commands import CursorState
from raftbox.meta.cursors import CursorInvalid, open_signed_cursor

from .hub import GONE, SHARED, UNKNOWN, Hub, HubFull, Wake, may_watch
from .stream import STREAM_PATH, Decide, PushStreams

log = logging.getLogger(__name__)

ROUTE = "files/list_folder/longpoll"
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


MAX_MOUNTS_PER_CURSOR = 1000  # shared folders one long-poll may wait on (a bound, not a limit
# anyone meets: an account's mounts)


class _Fanout:
    """One long-poll waiting on several namespaces (`NotifyService._longpoll_many`): answered
    once, by whichever part moves first; then the other parts leave the hub."""

    def __init__(self, svc: NotifyService, waiter: Waiter) -> None:
        self.svc = svc
        self.waiter = waiter
        self.parts: list[_Part] = []
        self.done = False

    def drop(self) -> None:
        self.done = True
        self.svc._fanouts.pop(self.waiter, None)
        for p in self.parts:
            self.svc.cancel(p)

    def answer(self, answer: tuple[int, bytes]) -> None:
        if not self.done:
            self.drop()
            self.svc._finish(self.waiter, answer)

    def finished(self, status: int, body: bytes) -> None:
        if not self.done:  # the hub woke or expired a part (it counted the answer)
            self.drop()
            self.waiter.finish(status, body)


class _Part:
    """One namespace of a `_Fanout`: its key in the hub."""

    __slots__ = ("fan",)

    def __init__(self, fan: _Fanout) -> None:
        self.fan = fan

    def finish(self, status: int, body: bytes) -> None:
        self.fan.finished(status, body)


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
        self._parked: dict[int, dict[Hashable, Decide]] = {}  # ns -> waiting for its info
        self._parked_of: dict[Hashable, int] = {}
        self._asked: dict[int, float] = {}  # ns -> deadline for its parked requests
        # long-polls that came before the secret: waiter -> (cursor, timeout_s, arrived, give up)
        self._no_secret: dict[Hashable, tuple[str, float, float, float]] = {}
        self._aio_waiters: dict[_FutureWaiter, web.Request] = {}
        self._next_sweep = 0.0
        self._next_ask_check = 0.0
        self.backoff_answer = (200, b'{"changes": false, "backoff": %d}' % cfg.backoff_s)
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.stats = dict(longpolls=0, true=0, false=0, reset=0, backoff=0, bad=0)
        self._fanouts: dict[Hashable, _Fanout] = {}  # long-polls on several namespaces
        self.streams = PushStreams(self)
        self.metrics: Any = None  # wake-ups and fan-out latency (raftbox.ops.metrics)

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
        for key in list(self._no_secret):
            del self._no_secret[key]
            self._finish(key, self.backoff_answer)
        await self.streams.close_all()
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
        if self._no_secret:
            late = [k for k, (_c, _t, _a, give_up) in self._no_secret.items() if give_up <= now]
            for key in late:
                del self._no_secret[key]
                self._finish(key, self.backoff_answer)
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
        if self._stopping:
            self._finish(waiter, self.backoff_answer)
            return
        now = self._now()
        if self.secret is None:  # upstream has not said hello yet: wait for it (`on_secret`)
            if len(self._no_secret) + len(self._parked_of) >= self.cfg.max_parked:
                self._finish(waiter, self.backoff_answer)
            else:
                self._no_secret[waiter] = (cursor, timeout_s, now, now + self.cfg.lookup_timeout_s)
            return
        self._longpoll(cursor, timeout_s, waiter, now)

    def _longpoll(self, cursor: str, timeout_s: float, waiter: Waiter, arrived: float) -> None:
        """`longpoll` once the secret is known; its deadline counts from `arrived`."""
        try:
            account, ns, state = self._open(cursor)
            mounts = self._mounts(cursor)
        except CursorReset:
            self._finish(waiter, RESET)
            return
        wait_s = timeout_s
        if self.cfg.longpoll_wait_cap_s is not None:
            wait_s = min(wait_s, self.cfg.longpoll_wait_cap_s)
        deadline = arrived + wait_s * (1 + self.cfg.jitter_fraction * self.rng.random())
        if mounts:
            self._longpoll_many(account, ns, state, mounts, waiter, deadline)
            return

        def decide(info: tuple[str | None, int] | None) -> None:
            if info is None:
                self._finish(waiter, self.backoff_answer)
                return
            owner, pos = info
            if pos == GONE or not may_watch(owner, account):
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

        self.with_info(ns, waiter, decide, account)

    def _longpoll_many(
        self,
        account: str,
        ns: int,
        state: CursorState,
        mounts: list[tuple[int, int]],
        waiter: Waiter,
        deadline: float,
    ) -> None:
        """A cursor that covers mounted shared folders (`raftbox.api.spaces`): wait on its
        namespace and on each mount's, one hub place each (`_Part`), and answer once, when
        the first moves past its position. A mount this account may no longer watch (left,
        unshared) answers `true` at once: the client's `continue` drops it."""
        if len(mounts) > MAX_MOUNTS_PER_CURSOR:
            self._finish(waiter, self.backoff_answer)
            return
        fan = _Fanout(self, waiter)
        self._fanouts[waiter] = fan
        seen0 = state.position
        for n, seen, home in [(ns, seen0, True)] + [(m, p, False) for m, p in mounts]:
            part = _Part(fan)
            fan.parts.append(part)

            def decide(info: Any, part=part, n=n, seen=seen, home=home) -> None:
                if fan.done:
                    return
                if info is None:
                    fan.answer(self.backoff_answer)
                    return
                owner, pos = info
                allowed = pos != GONE and may_watch(owner, account)
                if home and not allowed:
                    fan.answer(RESET)
                elif not allowed or pos > seen or (home and state.resume is not None):
                    fan.answer(TRUE)
                else:
                    try:
                        ready = self.hub.wait(n, part, seen, deadline)
                    except HubFull:
                        fan.answer(self.backoff_answer)
                        return
                    if ready is not None:
                        fan.answer(TRUE)

            self.with_info(n, part, decide, account)
            if fan.done:
                break

    def cancel(self, waiter: Hashable) -> None:
        """The waiter's client went away."""
        if self._no_secret.pop(waiter, None) is not None:
            return
        fan = self._fanouts.pop(waiter, None)
        if fan is not None:
            fan.drop()
            return
        if not self.hub.cancel(waiter):
            ns = self._parked_of.pop(waiter, None)
            if ns is not None:
                parked = self._parked.get(ns)
                if parked is not None:
                    parked.pop(waiter, None)
                    if not parked:
                        del self._parked[ns]

    @property
    def stopping(self) -> bool:
        return self._stopping

    def open_cursor(self, cursor: str) -> tuple[str, int, CursorState] | None:
        """(account, namespace, state) of a cursor signed under the cluster secret, else None."""
        try:
            return self._open(cursor)
        except CursorReset:
            return None

    def cursor_mounts(self, cursor: str) -> list[tuple[int, int]]:
        """(ns, position) of the mounted shared folders a cursor covers ([] if none, or if
        it is no cursor: `open_cursor` tells that)."""
        try:
            return self._mounts(cursor)
        except CursorReset:
            return []

    def cancel_parked(self, owner: object) -> None:
        """Forget every parked request keyed `(owner, ...)` (a stream that closed)."""
        for key in [k for k in self._parked_of if isinstance(k, tuple) and k[0] is owner]:
            self.cancel(key)

    def _mounts(self, cursor: str) -> list[tuple[int, int]]:
        """(ns, position) of each mounted shared folder a cursor covers (its optional 4th
        element, `raftbox.api.spaces`: `[ns, key, position]` each); [] for most cursors."""
        assert self.secret is not None
        try:
            obj = open_signed_cursor(self.secret, cursor)
            if len(obj) < 4:
                return []
            out = [(int(m[0]), int(m[2])) for m in obj[3]]
        except (CursorInvalid, ValueError, TypeError, IndexError):
            raise CursorReset() from None
        return out

    def _open(self, cursor: str) -> tuple[str, int, CursorState]:
        assert self.secret is not None
        try:
            obj = open_signed_cursor(self.secret, cursor)
            account, ns, raw, *rest = obj
            if len(rest) > 1:
                raise ValueError("not a cursor")
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

    def with_info(self, ns: int, key: Hashable, fn: Decide, account: str | None = None) -> None:
        """Call `fn((owner, position))` once both are known — now, or when upstream answers —
        or `fn(None)` if upstream cannot answer in time. With `account`: a known owner that
        does not name it is asked again if it is a shared folder's (its members change: a new
        member's first long-poll must not be refused on an answer from before it joined)."""
        i = self.hub.info(ns)
        if i is not None and (i.position == GONE or (i.owner is not None and i.position >= 0)):
            if (
                account is None
                or i.position == GONE
                or may_watch(i.owner, account)
                or not str(i.owner).startswith(SHARED)  # a home namespace's owner never changes
            ):
                fn((i.owner, i.position))
                return
        if len(self._parked_of) >= self.cfg.max_parked or (
            ns not in self._asked and len(self._asked) >= self.cfg.max_parked
        ):
            fn(None)
            return
        self._parked.setdefault(ns, {})[key] = fn
        self._parked_of[key] = ns
        self.ask(ns)

    def ask(self, ns: int) -> None:
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
        waiting, self._no_secret = self._no_secret, {}
        for waiter, (cursor, timeout_s, arrived, _give_up) in waiting.items():
            self._longpoll(cursor, timeout_s, waiter, arrived)  # type: ignore[arg-type]

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
        self.release_evicted()

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
            self.streams.on_info(ns, answer[0], answer[1])
        self.release_evicted()

    def on_resync(self) -> None:
        """Upstream cannot vouch for the positions we hold: look every watched one up again."""
        log.info("resync from upstream: re-reading every watched namespace")
        for ns in self.hub.forget():
            self._asked.pop(ns, None)
            self.ask(ns)
        self.streams.resync()

    def _dispatch(self, wakes: list[Wake]) -> None:
        if not wakes:
            return
        t0 = time.perf_counter()
        pushed = 0
        for w in wakes:
            if w.subscriber:
                pushed += 1
                w.key.push(w.ns, w.position)  # type: ignore[attr-defined]
            else:
                self._finish(w.key, RESET if w.position == GONE else TRUE)
        m = self.metrics
        if m is not None:  # raftbox.ops.metrics.NotifyMetrics
            m.fanout_seconds.observe(time.perf_counter() - t0)
            if pushed:
                m.wakeups.labels("stream").inc(pushed)
            if len(wakes) > pushed:
                m.wakeups.labels("longpoll").inc(len(wakes) - pushed)

    def release_evicted(self) -> None:
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
        app.router.add_get(STREAM_PATH, self.streams.handle)

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
            "parked": len(self._parked_of) + len(self._no_secret),
            "streams": self.streams.count,
            **self.stats,
        }

    async def api_status(self, request: web.Request, who: Any = None) -> web.Response:
        """`raftbox/notify/status` (admin): what this notify process holds and follows."""
        if not self.is_admin(request):
            return web.Response(status=401, text="admin token required")
        return web.Response(body=_json.encode(self.status()), content_type="application/json")

    def is_admin(self, request: web.Request) -> bool:
        """The request carries the cluster's admin token."""
        h = request.headers.get("Authorization", "")
        token = h[7:].strip() if h.startswith("Bearer ") else ""
        return bool(token) and hmac.compare_digest(token.encode(), self.admin_token.encode())


__all__ = [
    "STREAM_PATH",
    "API_MAX_TIMEOUT_S",
    "API_MIN_TIMEOUT_S",
    "BadRequest",
    "NotifyConfig",
    "NotifyService",
    "UNKNOWN",
    "parse_longpoll",
]
