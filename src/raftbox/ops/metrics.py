"""`/metrics` on every role: one Prometheus registry per process, and how it is served.

What is counted, and where
--------------------------
- Raft (`raftbox_raft_*`, meta members): `raft/metrics.py`, observed by the node's driver.
- API (`raftbox_http_*`, every process with an aiohttp app): `ApiMetrics.middleware` times every
  request and labels it with its route (the `/2/` route name, or the path's first segment for
  anything else, so a client cannot create labels at will: unknown routes are `other`) and its
  status; it counts request bytes (the declared `Content-Length`: a chunked body without one
  is not counted) and answer bytes; `raftbox_http_connections` is the public port's open
  connections (the notify front's long-poll connections included).
  `RequestRates` keeps a short per-second window of the same requests for the cluster view.
- Blocks (`raftbox_blockstore_*`): `blocks/wrappers.MetricsStore`, built into the store stack
  with this registry; the fact cache's hits and misses are read at scrape time
  (`raftbox_blockcache_*`).
- Notify (`raftbox_notify_*`): waiting long-polls, streams and the upstream link are read from the
  service at scrape time; wake-ups and fan-out latency are observed by `NotifyService` through
  `NotifyMetrics` (a wake-up: a long-poll answered `changes` or a stream pushed).

Who may read it
---------------
On the public port, `GET /metrics` needs the cluster's admin token (`Authorization: Bearer`):
the same check as every admin route (`check_admin`, handed in by the process). With
`--metrics-listen HOST:PORT` (default off) the process also serves `/metrics` alone, without
authentication, on a plain-HTTP address meant for a Prometheus on a private network.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from raftbox.raft.metrics import MetricsListener

__all__ = [
    "ApiMetrics",
    "MetricsListener",
    "NotifyMetrics",
    "RequestRates",
    "admitted",
    "metrics_handler",
    "register_cache",
    "register_notify",
]

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
_KNOWN_PREFIXES = ("metrics", "admin", "static", "s", "web")


async def admitted(check_admin: Callable[[web.Request], Any], request: web.Request) -> bool:
    """Whether `request` passes the process's admin check. The check refuses by raising (or by
    returning False); it may be a coroutine function (a session looked up in a store): it is
    awaited, so that a check that became async can never let a request through unawaited."""
    try:
        result = check_admin(request)
        if inspect.isawaitable(result):
            result = await result
    except Exception:  # noqa: BLE001 - any refusal is the same 401 to the client
        return False
    return result is not False


class RequestRates:
    """Requests per second over the last `window_s` seconds, by kind (pure; time from outside)."""

    def __init__(self, window_s: int = 10) -> None:
        self.window_s = window_s
        self._buckets: deque[tuple[int, dict[str, int]]] = deque()

    def add(self, now_s: float, kind: str) -> None:
        sec = int(now_s)
        if not self._buckets or self._buckets[-1][0] != sec:
            self._buckets.append((sec, {}))
            while self._buckets and self._buckets[0][0] <= sec - self.window_s:
                self._buckets.popleft()
        b = self._buckets[-1][1]
        b[kind] = b.get(kind, 0) + 1

    def per_s(self, now_s: float) -> dict[str, float]:
        sec = int(now_s)
        out: dict[str, int] = {}
        for s, b in self._buckets:
            if s > sec - self.window_s:
                for k, v in b.items():
                    out[k] = out.get(k, 0) + v
        return {k: round(v / self.window_s, 2) for k, v in sorted(out.items())}


def route_label(request: web.Request, known_routes: Callable[[], Any]) -> str:
    """A bounded label for a request: a registered `/2/` route, a known prefix, or `other`."""
    path = request.path
    if path.startswith("/2/"):
        name = path[3:]
        return name if name in known_routes() else "other"
    first = path.strip("/").split("/", 1)[0]
    return first if first in _KNOWN_PREFIXES else "other"


def rate_kind(route: str) -> str:
    """The cluster view's request-rate groups."""
    if route.startswith("files/list_folder/longpoll") or route == "notify":
        return "longpoll"
    if route.startswith("files/upload") or route.startswith("files/download"):
        return "content"
    if route.startswith("raftbox/") or route in _KNOWN_PREFIXES:
        return "admin"
    return "api"


class ApiMetrics:
    """Per-request metrics for one aiohttp app. `known_routes()` returns the registered names."""

    def __init__(self, registry: CollectorRegistry, known_routes: Callable[[], Any]) -> None:
        self.known_routes = known_routes
        self.rates = RequestRates()
        self.seconds = Histogram(
            "raftbox_http_request_seconds",
            "Time from request head to the end of the answer, by route and status",
            ["route", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.bytes_in = Counter(
            "raftbox_http_request_bytes",
            "Request body bytes, by route",
            ["route"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "raftbox_http_response_bytes",
            "Answer body bytes, by route",
            ["route"],
            registry=registry,
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        resp: web.StreamResponse | None = None
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            route = route_label(request, self.known_routes)
            self.seconds.labels(route, str(status)).observe(time.perf_counter() - t0)
            n_in = request.content_length or 0
            if n_in:
                self.bytes_in.labels(route).inc(n_in)
            if resp is not None:
                n_out = resp.body_length if resp.prepared else getattr(resp, "content_length", 0)
                if n_out:
                    self.bytes_out.labels(route).inc(n_out)
            self.rates.add(time.time(), rate_kind(route))


class NotifyMetrics:
    """What `NotifyService` observes itself: wake-ups and the time to fan one change out."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.wakeups = Counter(
            "raftbox_notify_wakeups",
            "Waiters woken by a change (long-polls answered, stream pushes)",
            ["kind"],
            registry=registry,
        )
        self.fanout_seconds = Histogram(
            "raftbox_notify_fanout_seconds",
            "Time to wake every waiter of one batch of changes",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=registry,
        )


class _Collector:
    def __init__(self, fn: Callable[[], list]) -> None:
        self.fn = fn

    def collect(self):
        return self.fn()


def register_notify(registry: CollectorRegistry, status: Callable[[], dict], kind: str) -> None:
    """Gauges read from a notify service's `status()` at scrape time."""

    def collect() -> list:
        st = status()
        out = []
        for name, key, doc in (
            ("raftbox_notify_longpolls_waiting", "waiting", "Long-polls parked here now"),
            ("raftbox_notify_streams", "streams", "Push streams open now"),
            ("raftbox_notify_namespaces", "namespaces", "Namespaces watched here"),
        ):
            g = GaugeMetricFamily(name, doc, labels=["kind"])
            g.add_metric([kind], float(st.get(key) or 0))
            out.append(g)
        g = GaugeMetricFamily(
            "raftbox_notify_upstream_connected",
            "1 if the upstream feed is connected",
            labels=["kind"],
        )
        g.add_metric([kind], 1.0 if st.get("upstream") else 0.0)
        out.append(g)
        return out

    registry.register(_Collector(collect))


def register_connections(registry: CollectorRegistry, limiter: Callable[[], Any]) -> None:
    """The public port's open connections (the `ConnectionLimiter`), read at scrape time."""

    def collect() -> list:
        lim = limiter()
        g = GaugeMetricFamily("raftbox_http_connections", "Open connections on the public port")
        g.add_metric([], float(getattr(lim, "open", 0) if lim is not None else 0))
        return [g]

    registry.register(_Collector(collect))


def register_cache(registry: CollectorRegistry, cache: Any) -> None:
    """The block fact cache's hits and misses (an LRU or memcached cache), at scrape time."""
    inner = getattr(cache, "inner", cache)

    def collect() -> list:
        c = CounterMetricFamily(
            "raftbox_blockcache_lookups", "Block fact cache look-ups by result", labels=["result"]
        )
        c.add_metric(["hit"], float(getattr(inner, "hits", 0)))
        c.add_metric(["miss"], float(getattr(inner, "misses", 0)))
        return [c]

    registry.register(_Collector(collect))


def metrics_handler(
    registry: CollectorRegistry, check_admin: Callable[[web.Request], None] | None
) -> Callable:
    """`GET /metrics`: the registry in Prometheus text format; `check_admin` raises to refuse."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if check_admin is not None and not await admitted(check_admin, request):
            return web.json_response(
                {
                    "error_summary": "invalid_access_token/",
                    "error": {".tag": "invalid_access_token"},
                },
                status=401,
            )
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
