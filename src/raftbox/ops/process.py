"""What every raftbox process adds for operators, in one place: `Ops`.

A `Server` makes one `Ops` and calls one of `for_member`, `for_blockserver`, `for_notify` with
its aiohttp app before serving, then `start()` after, and `stop()` when it stops:

- every role: a Prometheus registry (`raftbox.ops.metrics`), the per-request middleware, and
  `GET /metrics` on the public port behind the admin check; `--metrics-listen` serves it on its
  own plain-HTTP address without authentication (`MetricsListener`);
- a meta member: Raft metrics on the node, the cluster view (`ClusterView`, its page and feed,
  `raftbox/admin/cluster_status`), and the announce route blockservers and roots post to;
- a blockserver or a notify root: an `Announcer` to the meta members; a notify leaf: one to its
  roots; a root also takes its leaves' announcements and passes them on.

The one long-lived task here (the announcer) is owned by `Ops`: `start()` starts it, `stop()`
cancels and awaits it; the announcer catches and logs its own failures and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from .metrics import (
    ApiMetrics,
    MetricsListener,
    NotifyMetrics,
    metrics_handler,
    register_cache,
    register_connections,
    register_notify,
)
from .processes import ANNOUNCE_ROUTE, Announcer, ProcessTable, announce_handler
from .processes import record_announcement as _record

log = logging.getLogger(__name__)

__all__ = ["Ops"]


class Ops:
    def __init__(self, admin_token: str, metrics_listen: tuple[str, int] | None = None) -> None:
        self.admin_token = admin_token
        self.registry = CollectorRegistry()
        self.metrics_listen = metrics_listen
        self.listener: MetricsListener | None = None
        self.api_metrics: ApiMetrics | None = None
        self.processes = ProcessTable()
        self.view: Any = None
        self.announcer: Announcer | None = None
        self._task: asyncio.Task | None = None
        self._site: Any = None  # the public HttpSite, for its connection count
        self.worker: tuple[int, int] | None = None  # (i, n): worker i of n (raftbox.workers)

    # -- set-up, before serving ----------------------------------------------------------------
    def _common(self, app: web.Application, check_admin, known_routes: Callable[[], Any]) -> None:
        self.api_metrics = ApiMetrics(self.registry, known_routes)
        app.middlewares.insert(0, self.api_metrics.middleware)
        app.router.add_get("/metrics", metrics_handler(self.registry, check_admin))
        register_connections(self.registry, lambda: self._site.limiter if self._site else None)
        if self.worker is not None:
            from prometheus_client import Gauge

            info = Gauge("raftbox_worker", "This process is worker I of N on a shared port",
                         ["worker", "workers", "pid"], registry=self.registry)  # fmt: skip
            info.labels(str(self.worker[0]), str(self.worker[1]), str(os.getpid())).set(1)

    def _named(self, url: Callable[[], str], status: Callable[[], dict]):
        """`url` and `status` as announced: a worker adds `#worker-I` and who it is."""
        if self.worker is None:
            return url, status
        i, n = self.worker
        extra = {"worker": f"{i}/{n}", "pid": os.getpid()}
        return (lambda: f"{url()}#worker-{i}"), (lambda: {**status(), **extra})

    def rates(self) -> dict:
        return self.api_metrics.rates.per_s(time.time()) if self.api_metrics else {}

    def connections(self) -> int:
        return self._site.limiter.open if self._site is not None else 0

    def attach_site(self, site: Any) -> None:
        self._site = site

    def for_member(self, api: Any, app: web.Application, node: Any, url, notify=None) -> None:
        """A meta member: `api` is its `ApiServer`, `url()` its public URL once serving."""
        from .cluster import ClusterView
        from .web import add_cluster_routes, cluster_status_route

        check = api.authorize_admin_read  # the admin token or an administrator's session
        self._common(app, check, lambda: api.routes)
        node.attach_metrics(self.registry)
        self._store_metrics(api.blocks)
        status = None
        if notify is not None:
            self._notify_metrics(notify, "root")
            status = lambda: {**notify.status(), "connections": self.connections()}  # noqa: E731
        self.view = ClusterView(node, url, self.rates, self.processes, notify_status=status)
        add_cluster_routes(app, self.view, check)
        api.add_route("raftbox/admin/cluster_status", "admin", cluster_status_route(self.view))

        async def announce(request: web.Request, who: Any) -> web.Response:
            return await _record(request, self.processes)

        api.add_route(ANNOUNCE_ROUTE, "admin", announce)

    def for_blockserver(
        self, api: Any, app: web.Application, url, meta_urls, client_ssl: ssl.SSLContext | None
    ) -> None:
        self._common(app, api._authenticate_admin, lambda: api.routes)
        self._store_metrics(api.blocks)
        url, status = self._named(
            url, lambda: {"connections": self.connections(), "requests_per_s": self.rates()}
        )
        self.announcer = Announcer(
            "blockserver",
            url,
            status,
            list(meta_urls),
            self.admin_token,
            client_ssl,
        )

    def for_notify(
        self,
        app: web.Application,
        notify: Any,
        kind: str,
        url,
        upstream,
        client_ssl: ssl.SSLContext | None,
    ) -> None:
        """A notify-only process (`kind` root or leaf); `upstream`: meta URLs or root URLs."""
        check = _token_check(self.admin_token)
        known = {"files/list_folder/longpoll", "raftbox/notify/status", ANNOUNCE_ROUTE}
        self._common(app, check, lambda: known)
        self._notify_metrics(notify, kind)
        app.router.add_post("/2/" + ANNOUNCE_ROUTE, announce_handler(self.processes, check))
        url, status = self._named(
            url, lambda: {**notify.status(), "connections": self.connections()}
        )
        self.announcer = Announcer(
            f"notify_{kind}",
            url,
            status,
            list(upstream),
            self.admin_token,
            client_ssl,
            downstream=self.processes if kind == "root" else None,
        )

    def _store_metrics(self, blocks: Any) -> None:
        store = getattr(blocks, "store", None)
        cache = getattr(store, "cache", None)
        if cache is not None:
            register_cache(self.registry, cache)

    def _notify_metrics(self, notify: Any, kind: str) -> None:
        register_notify(self.registry, notify.status, kind)
        notify.metrics = NotifyMetrics(self.registry)

    # -- running ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.metrics_listen is not None:
            self.listener = MetricsListener(self.registry, self.metrics_listen)
            url = await self.listener.start()
            log.info("metrics without authentication at %s", url)
        if self.announcer is not None:
            self._task = asyncio.create_task(self._announce())

    async def _announce(self) -> None:
        assert self.announcer is not None
        while True:
            try:
                await self.announcer.run()
            except Exception:  # noqa: BLE001 - logged, then the owner runs it again
                log.exception("announcer failed; starting it again")
                await asyncio.sleep(self.announcer.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None


def _token_check(admin_token: str) -> Callable[[web.Request], None]:
    import hmac

    def check(request: web.Request) -> None:
        h = request.headers.get("Authorization", "")
        token = h[7:].strip() if h.startswith("Bearer ") else ""
        if not token or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise PermissionError("admin token required")

    return check
