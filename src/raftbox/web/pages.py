"""The web pages: static files, the security headers every page gets, the download endpoint.

`add_web(app, api, auth)` mounts, on the API's aiohttp app (same HTTPS port):

- `GET /` → `static/files.html` (the file browser), `GET /login` → `static/login.html`;
- `GET /static/{name}` → a file of `static/` (names `[a-z0-9_-]+.(js|css|html|svg|png)` only);
- `GET /web/download?arg={"path": P}` → `files/download` of the session's account, as an
  attachment (`auth.download_disposition`), so a browser saves it and never renders it;
  `GET /web/download_zip?arg={"path": P}` → a folder as a streamed zip (`raftbox.api.zipstream`, through `files/download_zip` of `raftbox.api.links`);
- the sign-in routes of `WebAuth` (`raftbox.web.auth`).

Pages are static: they hold no data and no secret; each page's script asks `/web/session` who
is signed in (and goes to `/login` when nobody is), then calls the ordinary `/2/...` routes.

Every answer outside `/2/` gets `SECURITY_HEADERS` (added when the response is prepared, so
errors and streamed downloads too): a CSP with no inline script or style and no source but this
origin, `frame-ancestors 'none'` (and `X-Frame-Options: DENY` for old browsers), `nosniff`,
`Referrer-Policy: no-referrer`, `Cross-Origin-Opener-Policy: same-origin`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import web

from raftbox.api import spaces
from raftbox.api.accesslog import ACCOUNT_KEY
from raftbox.api.errors import from_lower

from .auth import WebAuth, download_disposition

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
STATIC_NAME = re.compile(r"[a-z0-9_-]+\.(js|css|html|svg|png)")
CONTENT_TYPES = {
    "js": "text/javascript",
    "css": "text/css",
    "html": "text/html",
    "svg": "image/svg+xml",
    "png": "image/png",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def add_web(app: web.Application, api: Any, auth: WebAuth) -> None:
    auth.add_routes(app)
    app.router.add_get("/", _page("files.html"))
    app.router.add_get("/login", _page("login.html"))
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/web/download", _download(api, auth, api.content.download))
    app.router.add_get("/web/download_zip", _download(api, auth, api.links.download_zip))
    app.on_response_prepare.append(_headers)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/2/"):
        return
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    if request.path.startswith("/web/download") and response.status in (200, 206):
        disp = download_disposition(request, ".zip" if request.path.endswith("_zip") else "")
        if disp:
            response.headers["Content-Disposition"] = disp
        response.headers["Cache-Control"] = "private, no-store"


def _file(name: str) -> web.Response:
    ext = name.rsplit(".", 1)[1]
    try:
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            body = f.read()
    except FileNotFoundError:
        raise web.HTTPNotFound() from None
    resp = web.Response(body=body, content_type=CONTENT_TYPES[ext])
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _page(name: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return _file(name)

    return handler


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not STATIC_NAME.fullmatch(name):
        raise web.HTTPNotFound()
    return _file(name)


def _download(api: Any, auth: WebAuth, route: Any) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            who = await auth.authenticate(request, csrf=False)
            request[ACCOUNT_KEY] = who.account_id
            who = await spaces.with_mounts(api.mc, who)  # its shared folders, as for /2/
            return await route(request, who)
        except Exception as e:
            failure = from_lower("files/download", e)
            if failure is None:
                raise
            return failure.response()

    return handler
