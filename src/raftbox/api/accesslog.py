"""One line per HTTP request: the access log of every role (meta, blockserver, notify).

What a line holds: the time the request ended (UTC, ms), the client address, the method and the
path as sent (`/2/files/upload`: the route, percent-encoded so a line has no stray spaces; never
the query string, which may hold an `arg`), the status,
the bytes read from the request body and the bytes of the response body (of a stream without a
length, such as the push stream, all it wrote, headers included), the milliseconds spent,
and the account id once the request authenticated (`-` before: a refused token, an admin or
internal call, a long-poll). Never a header: no token, no `Dropbox-API-Arg`, no cookie; and
never a shared link's token, which is in its path: `/s/<token>/<name>` is logged as
`/s/h:<the first 12 hex digits of the token's hash>` (what `raftbox.meta.links` stores, so an
operator can still tell which link was fetched), and a temporary link's `/tl/<token>/<name>`
likewise as `/tl/h:<…>`.

    2026-12-07T08:40:00.123Z 127.0.0.1 POST /2/files/upload 200 in=1024 out=412 ms=12.3 account=dbid:AAB…

or, with `--access-log json`, one JSON object per line with the keys `time`, `remote`,
`method`, `route`, `status`, `bytes_in`, `bytes_out`, `ms`, `account_id` (null when none).

How: an aiohttp middleware (`middleware(fmt)`) around every handler of the application, and one
`logging` call per request on the logger `raftbox.access`, which `configure()` points at stderr
or a file (`--access-log-file`, reopened when logrotate moves it) with no other decoration and no
propagation to the root logger. The account id is what the API's authentication put on the
request (`ACCOUNT_KEY`). A handler that raises an HTTP exception is logged with its status; a
request the client abandoned (cancelled, connection reset) with 499, as nginx does; any other
exception with 500 (the API answers those itself, so this is a bug's trace).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from raftbox.meta.links import link_token_hash

ACCOUNT_KEY = web.RequestKey("raftbox.account_id", str)  # set by the API's authentication
FORMATS = ("plain", "json", "off")
CLIENT_GONE = 499

log = logging.getLogger("raftbox.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def configure(fmt: str, path: str | None = None) -> Any | None:
    """Point the access logger at stderr (or `path`) and return the middleware for `fmt`, or
    None for "off" (then nothing is logged and no middleware runs)."""
    if fmt not in FORMATS:
        raise ValueError(f"access log format: one of {', '.join(FORMATS)}")
    if fmt == "off":
        return None
    handler: logging.Handler
    if path:
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return middleware(fmt)


def _bytes_out(resp: web.StreamResponse | None) -> int:
    if resp is None:
        return 0
    if resp.prepared:  # a stream already sent (download: its length; push: all it wrote)
        return resp.content_length if resp.content_length is not None else resp.body_length
    body = getattr(resp, "body", None)
    if isinstance(body, bytes | bytearray):
        return len(body)
    return resp.content_length or 0


def line(fmt: str, request: web.Request, status: int, bytes_out: int, ms: float) -> str:
    """The access log line of a finished request (pure but for the clock read by the caller)."""
    stamp = _stamp(time.time())
    account = request.get(ACCOUNT_KEY)
    try:
        bytes_in = request.content.total_bytes
    except AttributeError:
        bytes_in = 0
    remote = request.remote or "-"
    route = _no_link_token(request.rel_url.raw_path)  # as sent (percent-encoded), no query
    if fmt == "json":
        return json.dumps(
            {
                "time": stamp,
                "remote": remote,
                "method": request.method,
                "route": route,
                "status": status,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "ms": round(ms, 1),
                "account_id": account,
            },
            separators=(",", ":"),
        )
    return (
        f"{stamp} {remote} {request.method} {route} {status} in={bytes_in} "
        f"out={bytes_out} ms={ms:.1f} account={account or '-'}"
    )


_second: list = [None, ""]  # the last whole second formatted, and its text


def _stamp(t: float) -> str:
    """`t` as 2026-12-07T08:40:00.123Z; strftime runs once a second, not once a request."""
    sec = int(t)
    if _second[0] != sec:
        when = datetime.datetime.fromtimestamp(sec, datetime.UTC)
        _second[:] = [sec, when.strftime("%Y-%m-%dT%H:%M:%S.")]
    return f"{_second[1]}{min(round((t - sec) * 1e6) // 1000, 999):03d}Z"


def _no_link_token(path: str) -> str:
    """A shared link's path with its token replaced by a prefix of the token's hash."""
    if path.startswith("/tl/"):  # a temporary link (raftbox.api.templinks): the same rule
        token = path[4:].split("/", 1)[0]
        return "/tl/h:" + link_token_hash(token).hex()[:12]
    if not path.startswith("/s/"):
        return path
    token = path[3:].split("/", 1)[0]
    return "/s/h:" + link_token_hash(token).hex()[:12]


def middleware(fmt: str) -> Any:
    @web.middleware
    async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        except (asyncio.CancelledError, ConnectionResetError):
            status = CLIENT_GONE
            raise
        finally:
            ms = (time.perf_counter() - t0) * 1000
            log.info(line(fmt, request, status, _bytes_out(resp), ms))

    return access_log
