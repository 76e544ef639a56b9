"""Temporary links on the API: `files/get_temporary_link` makes one; `GET /tl/{token}/{name}`
gives the file to anyone holding it, without an account, for four hours.

- `files/get_temporary_link` (rpc, auth user, a meta member): `{"path": ReadPath}` → Dropbox's
  `GetTemporaryLinkResult` `{"metadata": FileMetadata, "link": URL}`. Errors are
  `GetTemporaryLinkError`'s: `path` (LookupError: `not_found`, `not_file` for a folder,
  `malformed_path`). A "rev:" path links that revision (served while it is kept, whatever
  becomes of the file); any other path links the file (module `raftbox.meta.templinks`). The
  URL starts as a shared link's does (`serve|up --public-url`, else the request's Host: every
  member and blockserver serves the links, which is what "the content host" is for raftbox):
  `https://HOST/tl/TOKEN/NAME` — NAME (the file's name, URL-quoted) only makes `curl -O` and
  browsers save it under its name; it is not checked. The path resolves through
  `raftbox.api.spaces`: a file in a mounted shared folder links that folder's namespace (its
  metadata in the caller's tree, with `sharing_info`); a folder the caller is not a member of
  is `not_found`. As on Dropbox, a link made stays valid for its four hours even if its maker
  leaves the folder (it is the file's, not the account's).
- `GET /tl/...` (and HEAD; no authentication: the token is the credential, see
  `raftbox.meta.templinks` for what it carries and when it stops working): the bytes, with `Range`
  (206, 416 as for `files/download`). A token that is not this cluster's, or whose file was
  deleted or changed, is answered 404; an expired one 410 Gone (Dropbox's answer). The answer
  says `Content-Disposition: attachment` and forbids sniffing and scripts (`nosniff`, a CSP
  `sandbox`): a user's HTML must never run as a page of this origin, which also serves the
  API and the web interface. A meta member checks a token's signature itself (one HMAC: a
  forgery costs nothing more, and is never rate-limited, so that clients sharing a balancer's
  address cannot lock each other out); a blockserver, which holds no secret, asks meta, so an
  address that sent `auth_fail_burst` forged tokens recently is answered 429 there before its
  token is looked at (a `FailedAuthLimiter` of its own, with the API's settings: forged links
  do not spend the budget of bad bearer tokens, nor the other way round).

Every member gives the same answer for a link (the signing key derives from the replicated
cluster secret); a blockserver asks meta (`MetaClient.query("temporary_link", ...)`), which
checks the token against its replica after a ReadIndex — so a file deleted a moment ago is
never served from a link.
"""

from __future__ import annotations

import logging
import mimetypes
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta.service import MetaService
from raftbox.meta.templinks import LINK_TTL_MS, TOKEN_MAX_CHARS, make_token, signed_body

from . import spaces
from .args import READ_PATH, path_arg, rpc_args
from .content import ContentRoutes
from .errors import RateLimited, from_lower, raise_meta
from .limits import FailedAuthLimiter
from .metaclient import MetaClient
from .wire import json_response

log = logging.getLogger(__name__)

LINK_PATH = "/tl/{token}/{name:.*}"
ROUTE = "files/get_temporary_link"


def request_origin(request: web.Request) -> str:
    """`https://` + the request's Host (a block-only process makes no links; a meta member
    uses the shared links' origin instead: `--public-url`, else a checked Host)."""
    return f"https://{request.host}"


class TempLinkRoutes:
    def __init__(
        self,
        mc: MetaClient,
        content: ContentRoutes,
        failures: FailedAuthLimiter,
        meta: MetaService | None = None,
    ) -> None:
        self.mc = mc
        self.content = content
        self.failures = failures
        self.meta = meta
        self.clock_ms = lambda: int(time.time() * 1000)
        self.origin: Callable[[web.Request], str] = request_origin  # where link URLs point

    def routes(self) -> list[tuple[str, str, Any]]:
        """The rpc route (on meta members only)."""
        return [(ROUTE, "user", self.get_temporary_link)]

    def add_to(self, app: web.Application) -> None:
        """The GET (and HEAD) route that serves the links."""
        app.router.add_get(LINK_PATH, self.fetch)

    async def get_temporary_link(self, request: web.Request, who: Any) -> web.Response:
        assert self.meta is not None
        a = await rpc_args(request, ROUTE)
        t = await spaces.resolve(self.mc, who, path_arg(a, "path", READ_PATH), ["path"])
        ns, path = t.ns, t.path  # a file in a mounted shared folder: that folder's namespace
        meta, _ = raise_meta(await self.mc.query("file_blocks", ns, path))
        expires_ms = self.clock_ms() + LINK_TTL_MS
        pinned = path.startswith("rev:")  # that revision, not the file as it changes
        token = make_token(
            self.meta.store.secret(), ns, meta.id, meta.rev, expires_ms, pinned=pinned
        )
        return json_response(
            {
                "metadata": t.json(who, meta, tagged=False),
                "link": f"{self.origin(request)}/tl/{token}/"
                + urllib.parse.quote(meta.name, safe=""),
            }
        )

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        addr = request.remote or ""
        try:
            token = request.match_info["token"]
            if self.meta is not None:
                # A meta member holds the secret: a forgery costs one HMAC, and is not counted
                # against the address (behind a balancer every client shares one).
                if signed_body(self.meta.store.secret(), token) is None:
                    return web.Response(status=404, text="no such link")
            else:
                wait = self.failures.retry_after_s(addr)
                if wait:
                    raise RateLimited(max(1, int(wait + 0.999)))
                if len(token) > TOKEN_MAX_CHARS:
                    return self._refused(addr, 404, "no such link")
            r = await self.mc.query("temporary_link", token, self.clock_ms())
            if isinstance(r, C.MetaError):
                if r.tags == ["expired"]:
                    return web.Response(status=410, text="this link has expired")
                if r.tags == ["invalid_token"]:
                    return self._refused(addr, 404, "no such link")
                return web.Response(status=404, text="no such link (or its file changed)")
            meta, blocks = r
            ctype = mimetypes.guess_type(meta.name)[0] or "application/octet-stream"
            headers = {
                "Content-Type": ctype,
                "Dropbox-API-Result": "",
                "Content-Disposition": "attachment; filename*=UTF-8''"
                + urllib.parse.quote(meta.name, safe=""),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "private, max-age=0",
            }
            return await self.content.send_file(request, meta, blocks, "temporary link", headers)
        except Exception as e:  # 416 for a bad Range, 503 if meta cannot answer, 429
            failure = from_lower("temporary link", e)
            if failure is None:
                log.exception("temporary link: internal error")
                return web.Response(status=500, text="internal server error")
            return failure.response()

    def _refused(self, addr: str, status: int, text: str) -> web.Response:
        self.failures.failed(addr)
        return web.Response(status=status, text=text)
