"""A process whose only role is notify: a root (`--meta URL,...`) or a leaf (`--notify-root
URL,...`). Its public address is served by the lean `Front` (long-poll) with everything else —
the push stream, unusual requests — handed to a small aiohttp application. The address, its TLS and its limits (connections per
process and per address, header and body timeouts) are `raftbox.httpserve.HttpSite`'s; the
front takes its connection slots from the same `ConnectionLimiter`."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from raftbox.httpserve import ConnectionLimiter, HttpLimits, HttpSite

from .feed import StreamLink
from .front import Front
from .service import ROUTE, NotifyConfig, NotifyService

log = logging.getLogger(__name__)


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (one per connection);
    returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d: %s", soft, e)
    return soft


@dataclass
class NotifyProcessConfig:
    listen: tuple[str, int]
    admin_token: str
    meta_urls: tuple[str, ...] = ()  # a root: follow these meta members
    root_urls: tuple[str, ...] = ()  # a leaf: follow these roots
    ssl_context: ssl.SSLContext | None = None  # None: plain HTTP (behind a TLS load balancer)
    client_ssl: ssl.SSLContext | None = None  # to verify upstream https URLs
    limits: HttpLimits = field(default_factory=lambda: HttpLimits(connections_max=1_000_000))
    backlog: int = 4096
    # the access log's aiohttp middleware (`raftbox.api.accesslog`), None: off. The front's
    # own long-polls are not logged (they never reach aiohttp; see `front`)
    access_log: Any = None
    reuse_port: bool = False  # one of several workers on this port (raftbox.workers)


class NotifyProcess:
    def __init__(self, cfg: NotifyProcessConfig, notify_cfg: NotifyConfig | None = None) -> None:
        if bool(cfg.meta_urls) == bool(cfg.root_urls):
            raise ValueError(
                "a notify-only process needs --meta (a root) or --notify-root (a leaf)"
            )
        self.cfg = cfg
        self.link = StreamLink(
            list(cfg.meta_urls or cfg.root_urls),
            cfg.admin_token,
            follows_all=bool(cfg.meta_urls),
            ssl_context=cfg.client_ssl,
        )
        self.service = NotifyService(self.link, notify_cfg, cfg.admin_token)
        self.site: HttpSite | None = None
        self.front: Front | None = None
        self.url = ""
        # Called with the aiohttp app before serving (routes and middleware of raftbox.ops).
        self.setup_app: Callable[[web.Application], None] | None = None

    @property
    def kind(self) -> str:
        return "root" if self.cfg.meta_urls else "leaf"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024)
        if self.cfg.access_log is not None:
            app.middlewares.append(self.cfg.access_log)
        self.service.add_routes(app)
        app.router.add_post("/2/" + ROUTE, self.service.api_longpoll)
        app.router.add_post("/2/raftbox/notify/status", self.service.api_status)
        if self.setup_app is not None:
            self.setup_app(app)
        await self.service.start()
        self.site = HttpSite(
            app,
            self.cfg.listen,
            self.cfg.ssl_context,
            self.cfg.limits,
            handler_cancellation=True,
            backlog=self.cfg.backlog,
            front=self._make_front,
            reuse_port=self.cfg.reuse_port,
        )
        self.url = await self.site.start()

    def _make_front(
        self, fallback: Callable[[], asyncio.Protocol], limiter: ConnectionLimiter
    ) -> Front:
        self.front = Front(
            self.service,
            fallback,
            limiter=limiter,
            idle_timeout_s=self.cfg.limits.keepalive_timeout_s,
        )
        return self.front

    async def stop(self) -> None:
        if self.site is not None:
            self.site.stop_accepting()
        await self.service.stop()
        if self.front is not None:
            self.front.close_all()
        if self.site is not None:
            await self.site.stop()
