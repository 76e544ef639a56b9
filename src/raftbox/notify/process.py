"""A process whose only role is notify: a root (`--meta URL,...`) or a leaf (`--notify-root
URL,...`). Its public address is served by the lean `Front` (long-poll) with everything else —
the push stream, unusual requests — handed to a small aiohttp application."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

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
    max_connections: int = 1_000_000
    backlog: int = 4096
    # the access log's aiohttp middleware (`raftbox.api.accesslog`), None: off. The front's
    # own long-polls are not logged (they never reach aiohttp; see `front`)
    access_log: Any = None


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
        self.runner: web.AppRunner | None = None
        self.server: asyncio.Server | None = None
        self.front: Front | None = None
        self.url = ""

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
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        await self.service.start()
        self.front = Front(
            self.service, self.runner.server, max_connections=self.cfg.max_connections
        )
        loop = asyncio.get_running_loop()
        host, port = self.cfg.listen
        self.server = await loop.create_server(
            self.front, host, port, ssl=self.cfg.ssl_context, backlog=self.cfg.backlog
        )
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.cfg.ssl_context is not None else "http"
        self.url = f"{scheme}://{host}:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        await self.service.stop()
        if self.front is not None:
            self.front.close_all()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.server is not None:
            await self.server.wait_closed()
