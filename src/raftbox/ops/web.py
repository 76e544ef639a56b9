"""The cluster view's routes on the public HTTPS port, all for administrators.

| route                                    | what                                                |
| ---------------------------------------- | --------------------------------------------------- |
| `GET /admin/cluster`                     | the page (static HTML; `static/cluster.html`)       |
| `GET /admin/cluster.js`, `.css`          | its one script and one stylesheet                   |
| `GET /admin/cluster/status`              | the live feed: `?since=1:5,2:7&wait_s=2` long-poll   |
| `POST /2/raftbox/admin/cluster_status`   | the same answer for scripts: `{"since": {...}, "wait_s": 0}` |

Every one passes the process's admin check (`check_admin`: today the cluster's admin token as
`Authorization: Bearer`; an administrator's browser session once sign-in exists) or is answered
401 before anything else happens. The page has no inline script or style and loads nothing from
elsewhere: its Content-Security-Policy says so, and it may not be framed. The feed is a GET so
that it changes nothing (no CSRF token needed); `wait_s` is bounded (`ClusterView.wait_max_s`),
and `since` is parsed strictly (`parse_since`): garbage is a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from .cluster import ClusterView, parse_since
from .metrics import admitted

__all__ = ["PAGE_HEADERS", "add_cluster_routes"]

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_FILES = {
    "/admin/cluster": ("cluster.html", "text/html"),
    "/admin/cluster.js": ("cluster.js", "text/javascript"),
    "/admin/cluster.css": ("cluster.css", "text/css"),
}
STATUS_BODY_MAX_BYTES = 16 * 1024


def _static(name: str) -> bytes:
    return resources.files("raftbox.ops").joinpath("static", name).read_bytes()


def _refused() -> web.Response:
    return web.Response(
        status=401,
        text='{"error_summary": "invalid_access_token/", "error": {".tag": "invalid_access_token"}}',
        content_type="application/json",
        headers=PAGE_HEADERS,
    )


def _wait_s(raw: Any) -> float:
    try:
        w = float(raw)
    except (TypeError, ValueError):
        raise ValueError("wait_s: a number of seconds") from None
    if not 0 <= w <= 60:
        raise ValueError("wait_s: 0 to 60")
    return w


def add_cluster_routes(
    app: web.Application, view: ClusterView, check_admin: Callable[[web.Request], Any]
) -> None:
    """The GET routes above on `app`; see `cluster_status_route` for the POST one."""
    for path, (name, ctype) in _FILES.items():
        body = _static(name)

        async def page(request: web.Request, body=body, ctype=ctype, path=path) -> web.Response:
            if not await admitted(check_admin, request):
                anonymous = "Authorization" not in request.headers and not request.cookies
                if ctype.startswith("text/html") and anonymous:
                    raise web.HTTPSeeOther(f"/login?next={path}")  # a browser: sign in first
                return _refused()
            return web.Response(body=body, content_type=ctype, headers=PAGE_HEADERS)

        app.router.add_get(path, page)

    async def feed(request: web.Request) -> web.Response:
        if not await admitted(check_admin, request):
            return _refused()
        try:
            since = parse_since(request.query.get("since", ""))
            wait_s = _wait_s(request.query.get("wait_s", "0"))
        except ValueError as e:
            return web.Response(status=400, text=str(e), headers=PAGE_HEADERS)
        await view.wait_changed(since.get(view.node.id, 0), wait_s)
        return web.json_response(await view.status(since), headers=PAGE_HEADERS)

    app.router.add_get("/admin/cluster/status", feed)


def cluster_status_route(view: ClusterView):
    """`raftbox/admin/cluster_status` as an `ApiServer` handler (auth "admin")."""

    async def handler(request: web.Request, who: Any) -> web.Response:
        raw = await request.content.read(STATUS_BODY_MAX_BYTES + 1)
        if len(raw) > STATUS_BODY_MAX_BYTES:
            return _bad("request body: too large")
        try:
            args = json.loads(raw or b"{}") if raw.strip() not in (b"", b"null") else {}
            if not isinstance(args, dict) or set(args) - {"since", "wait_s"}:
                raise ValueError("arguments: an object with since and wait_s")
            since = parse_since(args.get("since"))
            wait_s = _wait_s(args.get("wait_s", 0))
        except (ValueError, UnicodeDecodeError) as e:
            return _bad(str(e))
        await view.wait_changed(since.get(view.node.id, 0), wait_s)
        return web.json_response(await view.status(since))

    return handler


def _bad(msg: str) -> web.Response:
    return web.Response(
        status=400,
        text=f'Error in call to API function "raftbox/admin/cluster_status": {msg}',
        content_type="text/plain",
    )
