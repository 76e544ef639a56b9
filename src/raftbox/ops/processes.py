"""How a meta member knows the blockservers and notify processes: they announce themselves.

Theory of operation
-------------------
A blockserver and a notify root know the meta members (`--meta`); a notify leaf knows its roots
(`--notify-root`). Each runs an `Announcer`, owned by its process: every `interval_s` it posts
`{kind, url, status, downstream}` to `POST /2/raftbox/internal/announce` (admin token) of the
first of its upstream URLs that answers. A root keeps its leaves' announcements in its own
`ProcessTable` and passes them on as `downstream`, so a meta member learns of leaves too.

`ProcessTable` (pure, time from outside) keeps the newest announcement per URL, at most
`max_entries`, and says a process is `up` while its last announcement is younger than
`stale_after_s`, else `unreachable` (kept `forget_after_s`, then dropped): a dead blockserver
shows as unreachable on the cluster view for a while, then disappears.

Each meta member has its own table (announcements land on whichever member answered first); the
cluster view merges every member's table (`raftbox.ops.cluster`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

log = logging.getLogger(__name__)

__all__ = ["ANNOUNCE_ROUTE", "Announcement", "Announcer", "ProcessTable", "announce_handler"]

ANNOUNCE_ROUTE = "raftbox/internal/announce"
ANNOUNCE_BODY_MAX_BYTES = 256 * 1024
KINDS = ("blockserver", "notify_root", "notify_leaf")


class Announcement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: str
    url: str
    status: dict[str, Any] = {}
    downstream: list[Announcement] = []

    def validate(self, depth: int = 0) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: one of {', '.join(KINDS)}")
        if not self.url.startswith(("https://", "http://")) or len(self.url) > 300:
            raise ValueError("url: an http(s) URL of at most 300 characters")
        if depth > 1 or len(self.downstream) > 256:
            raise ValueError("downstream: at most 256, one level deep")
        for d in self.downstream:
            d.validate(depth + 1)


class ProcessTable:
    """The newest announcement per URL. See the module docstring."""

    def __init__(
        self, stale_after_s: float = 6.0, forget_after_s: float = 300.0, max_entries: int = 1024
    ) -> None:
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self.max_entries = max_entries
        self._by_url: dict[str, tuple[float, Announcement, str]] = {}

    def record(self, now_s: float, a: Announcement, via: str = "") -> None:
        for d in a.downstream:
            self.record(now_s, d, via=a.url)
        top = msgspec.structs.replace(a, downstream=[])
        self._by_url.pop(a.url, None)
        self._by_url[a.url] = (now_s, top, via)
        while len(self._by_url) > self.max_entries:
            self._by_url.pop(next(iter(self._by_url)))

    def snapshot(self, now_s: float) -> list[dict[str, Any]]:
        out = []
        for url, (seen, a, via) in list(self._by_url.items()):
            age = now_s - seen
            if age > self.forget_after_s:
                del self._by_url[url]
                continue
            out.append(
                {
                    "kind": a.kind,
                    "url": url,
                    "state": "up" if age <= self.stale_after_s else "unreachable",
                    "seen_s_ago": round(age, 1),
                    "via": via,
                    "status": a.status,
                }
            )
        return sorted(out, key=lambda p: (p["kind"], p["url"]))

    def announcements(self, now_s: float) -> list[Announcement]:
        """The live entries, to pass on upstream (a root passes its leaves on)."""
        return [a for seen, a, _ in self._by_url.values() if now_s - seen <= self.stale_after_s]


def announce_handler(table: ProcessTable, check_admin: Callable[[web.Request], None]):
    """`POST /2/raftbox/internal/announce` for an aiohttp app that is not an `ApiServer`."""

    from .metrics import admitted

    async def handler(request: web.Request) -> web.Response:
        if not await admitted(check_admin, request):
            return web.Response(status=401, text="admin token required")
        return await record_announcement(request, table)

    return handler


async def record_announcement(request: web.Request, table: ProcessTable) -> web.Response:
    raw = await request.content.read(ANNOUNCE_BODY_MAX_BYTES + 1)
    if len(raw) > ANNOUNCE_BODY_MAX_BYTES:
        return web.Response(status=400, text="request body: too large")
    try:
        a = msgspec.json.decode(raw, type=Announcement)
        a.validate()
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
        return web.Response(
            status=400, text=f'Error in call to API function "{ANNOUNCE_ROUTE}": {e}'
        )
    table.record(time.monotonic(), a)
    return web.json_response({})


class Announcer:
    """Posts this process's announcement upstream every `interval_s`; `run()` is owned by the
    process (it never raises: an unreachable upstream is logged once and tried again)."""

    def __init__(
        self,
        kind: str,
        url: Callable[[], str],
        status: Callable[[], dict],
        upstream: list[str],
        admin_token: str,
        ssl_context: ssl.SSLContext | None,
        downstream: ProcessTable | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.kind = kind
        self.url = url
        self.status = status
        self.upstream = list(upstream)
        self.admin_token = admin_token
        self.ssl_context = ssl_context
        self.downstream = downstream
        self.interval_s = interval_s
        self.sent = 0
        self._failing = False

    def announcement(self) -> Announcement:
        down = self.downstream.announcements(time.monotonic()) if self.downstream else []
        return Announcement(self.kind, self.url(), self.status(), down)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(1.0, self.interval_s))
        # No context given: the system's CAs, verified (never an unverified https link).
        conn = aiohttp.TCPConnector(ssl=self.ssl_context if self.ssl_context is not None else True)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as http:
            while True:
                await self._once(http)
                await asyncio.sleep(self.interval_s)

    async def _once(self, http: aiohttp.ClientSession) -> None:
        try:
            body = msgspec.json.encode(self.announcement())
        except Exception:  # noqa: BLE001 - a status we cannot encode: skip this round
            log.exception("announce: cannot encode this process's status")
            return
        headers = {
            "Authorization": f"Bearer {self.admin_token}",
            "Content-Type": "application/json",
        }
        for base in self.upstream:
            try:
                async with http.post(f"{base}/2/{ANNOUNCE_ROUTE}", data=body, headers=headers) as r:
                    if r.status == 200:
                        self.sent += 1
                        if self._failing:
                            log.info("announce: %s reached again", base)
                        self._failing = False
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                continue
        if not self._failing:
            log.warning(
                "announce: no upstream answered (%s); trying again", ", ".join(self.upstream)
            )
        self._failing = True
