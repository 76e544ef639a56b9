"""The public HTTPS API: the Dropbox v2 subset (DROPBOX_API.md §6), routed by path on any host.

`ApiServer` builds one aiohttp application whose single route `POST /2/{route}` dispatches on
the route name, whatever the Host header, so one address serves the "api", "content" and
"notify" hosts of the SDK alike. Each handler:

1. authenticates (Bearer token → account; long-poll has none: its cursor is the credential),
2. parses its argument (JSON body for rpc routes, the `Dropbox-API-Arg` header for content
   routes) with stone defaults, answering 400 with a plain-text message when it cannot,
3. calls the meta role and the block role (`BlockService`: streaming bytes in and out of
   content-addressed blocks). The metadata routes use `MetaService` (proposals and ReadIndex
   reads); the content routes — upload, download, upload sessions (`content.py`), and the
   native block protocol (`native.py`, whose route table `server.py` registers) — reach meta
   only through a `MetaClient` (`metaclient.py`): the `MetaService` of this process, or, in a
   block-only process (a blockserver, `meta=None`), the meta members over HTTP. Blocks stored for a write carry the GC generation read before
   storing them (`raftbox.gc`); a `gc_retry` answer becomes a 503 the SDKs retry,
4. answers with exact Dropbox JSON (`wire.py`), or a route error (409 + error union).

An OAuth2 app's access token (`raftbox.api.oauth`) carries scopes and an expiry: past its
expiry it is answered 401 `expired_access_token` (the SDKs then refresh it); a route outside its
scopes is answered 401 `missing_scope` with the `required_scope` (`raftbox.api.scopes`, the table
of every user route's scope; a user route without an entry cannot be registered).

Authentication failures are limited per client address (`FailedAuthLimiter`), because looking
an unknown token up may cost a ReadIndex round on the meta group (`raftbox.meta.service`): an
address that failed `auth_fail_burst` times recently (refilled at `auth_fail_per_s`) is answered
429 with `Retry-After` before its token is looked up — unless the token is known good without a
round trip (cached, or on this member's replica), so that the valid users behind a shared address
(a NAT, or a reverse proxy: the address is the peer's, `request.remote`) keep working. A
blockserver (no meta role, no replica) cannot tell, and answers 429 until the bucket refills.

Errors (`raftbox.api.errors`, one hierarchy, rendered in one place by `dispatch`): `BadInput`
400 text; `AuthFailed` 401 JSON; `ApiError` 409 (or its status) JSON; `RateLimited` 429 JSON with
`retry_after`; `Unavailable` (no majority, a Raft `NodeError`, a timeout) 503; anything else 500,
logged, and no state changed (every write is one state machine command). A route this server
does not serve is a 400 `Unknown API function`, as Dropbox answers it: every SDK reads that
(the Python SDKs parse a 404 body as a JSON route error: JSONDecodeError on text).

No client input reaches that 500 (issue 11): every header, argument and body is checked where
it is parsed (`args.load_json`, `Args`, `args.ns_path` for paths, `content.parse_range`), every
stored value within `raftbox.meta.values`. A client that hangs up mid-request (`ConnectionError` while its
body is read or the answer written) is logged at INFO, one line, no traceback; a body the
client breaks off or garbles (`ClientPayloadError`, a bad chunked encoding) is a 400.
"""

from __future__ import annotations

import hmac
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from raftbox.blocks.service import BlockService
from raftbox.meta import commands as C
from raftbox.meta import values as V
from raftbox.meta.service import AccountError, CursorInvalid, MetaService

from . import scopes, spaces
from .accesslog import ACCOUNT_KEY
from .accounts import AccountRoutes
from .args import (
    LIST_PATH,
    READ_PATH,
    RPC_BODY_MAX_BYTES,
    WRITE_PATH,
    path_arg,
    rpc_args,
)
from .batch import BatchRoutes
from .compat import CompatRoutes
from .content import ContentRoutes, client_gone
from .errors import ApiError, AuthFailed, BadInput, RateLimited, Unavailable, from_lower, raise_meta
from .limits import FailedAuthLimiter, TokenBucket
from .links import LinkRoutes
from .metaclient import LocalMetaClient, MetaClient
from .search import SearchRoutes
from .sharing import SharingRoutes
from .templinks import TempLinkRoutes
from .thumbnails import ThumbnailRoutes
from .usage import UsageRoutes
from .wire import json_response

log = logging.getLogger(__name__)

TOKEN_MAX_BYTES = 1024  # ours are 47; longer (or non-ASCII) is refused without a lookup
ROUTE_QUOTE_CHARS = 200  # how much of an unknown route's name its 400 quotes

Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


class ProtocolLog(logging.LoggerAdapter):
    """aiohttp's connection logger for the API: a request its HTTP parser refused (a bad
    chunk size, a control byte in a header, a line too long — `HttpProcessingError`, the
    client's fault; aiohttp answers it 400) is one INFO line, not an ERROR with a traceback.
    Anything else aiohttp reports keeps its level and traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            why = " ".join(str(getattr(exc, "message", "") or exc).split())[:300]
            self.info(f"{msg}: refused by the HTTP parser: %s", *args, why, **kw)
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


class ApiServer:
    def __init__(
        self,
        meta: MetaService | None,
        blocks: BlockService,
        admin_token: str,
        rate_per_s: float = 2000.0,
        rate_burst: int = 4000,
        notify: Any = None,
        metaclient: MetaClient | None = None,
        auth_fail_per_s: float = 1.0,
        auth_fail_burst: int = 20,
    ) -> None:
        if meta is None and metaclient is None:
            raise ValueError("an ApiServer needs the meta role or a MetaClient")
        self.meta = meta
        self.mc: MetaClient = metaclient or LocalMetaClient(meta)  # type: ignore[arg-type]
        self.blocks = blocks
        self.admin_token = admin_token
        self.limiter = TokenBucket(rate_per_s, rate_burst)
        self.auth_failures = FailedAuthLimiter(auth_fail_per_s, auth_fail_burst)
        self.notify = notify
        self.web: Any = None  # raftbox.web.auth.WebAuth: browser sessions (issue 14), if set
        self.routes: dict[str, tuple[str, Handler]] = {}
        if meta is not None:  # a blockserver (no meta role) serves the content routes only
            self.routes = {
                "users/get_current_account": ("user", self.get_current_account),
                "files/get_metadata": ("user", self.get_metadata),
                "files/list_folder": ("user", self.list_folder),
                "files/list_folder/continue": ("user", self.list_folder_continue),
                "files/list_folder/get_latest_cursor": ("user", self.get_latest_cursor),
                "files/delete_v2": ("user", self.delete),
                "files/move_v2": ("user", self.move),
                "files/copy_v2": ("user", self.copy),
                "files/create_folder_v2": ("user", self.create_folder),
                "files/list_revisions": ("user", self.list_revisions),
                "files/restore": ("user", self.restore),
                "raftbox/admin/create_account": ("admin", self.admin_create_account),
                "raftbox/admin/status": ("admin", self.admin_status),
            }
        for name, (auth, _) in self.routes.items():
            scopes.check_registered(name, auth)  # every user route has a scope (api/scopes.py)
        self.content = ContentRoutes(self.mc, blocks)
        self.add_routes(self.content.routes())
        self.add_routes(ThumbnailRoutes(self.mc, blocks).routes())
        link_misses = FailedAuthLimiter(auth_fail_per_s, auth_fail_burst)  # its own budget
        self.templinks = TempLinkRoutes(self.mc, self.content, link_misses, meta)
        if meta is not None:
            self.add_routes(AccountRoutes(meta).routes())
            self.add_routes(CompatRoutes(self).routes())
            self.add_routes(BatchRoutes(self.mc).routes())
            self.add_routes(SharingRoutes(meta, self.mc).routes())  # shared folders
            self.add_routes(UsageRoutes(meta).routes())  # space usage and quotas
            self.add_routes(SearchRoutes(meta, self.mc).routes())  # search by name
            self.add_routes(self.templinks.routes())
        self.links = LinkRoutes(meta, blocks, admin_token) if meta is not None else None
        if self.links is not None:  # shared links: the sharing/*link* routes and /s/ pages
            self.add_routes(self.links.routes())
            self.templinks.origin = self.links.origin  # temporary links: the same origin rule

    def add_routes(self, table: Iterable[tuple[str, str, Handler]]) -> None:
        """Register a route table: (route, auth "user" | "admin" | "none", handler) rows."""
        for name, auth, handler in table:
            self.add_route(name, auth, handler)

    def add_route(self, name: str, auth: str, handler: Handler) -> None:
        scopes.check_registered(name, auth)
        self.routes[name] = (auth, handler)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=RPC_BODY_MAX_BYTES, handler_args={"logger": ProtocolLog()}
        )
        app.router.add_post("/2/{route:.+}", self.dispatch)
        self.templinks.add_to(app)  # GET /tl/...: temporary links, no account needed
        if self.links is not None:
            self.links.add_public_routes(app)
        return app

    # -- dispatch ------------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        entry = self.routes.get(route)
        if entry is None:  # as Dropbox answers it: a 400 every SDK reads (BadInputError)
            shown = route if len(route) <= ROUTE_QUOTE_CHARS else route[:ROUTE_QUOTE_CHARS] + "..."
            return BadInput(shown, f"Unknown API function: /2/{shown}").response()
        auth, handler = entry
        try:
            who: Any = None
            if auth == "user":
                who = await self._authenticate(request)
                need = scopes.missing_scope(
                    route, getattr(who, "scopes", None)
                )  # an app's token (issue 15)
                if need is not None:
                    raise AuthFailed("missing_scope", {"required_scope": need})
                wait = self.limiter.take(who.account_id)
                if wait:
                    raise RateLimited(max(1, int(wait + 0.999)))
                who = await spaces.with_mounts(self.mc, who)  # its shared folders
            elif auth == "admin":
                if self.web is not None and not _bearer(request) and self.web.has_cookie(request):
                    await self.web.authenticate(request, admin=True)  # an administrator's page
                else:
                    self._authenticate_admin(request)
            return await handler(request, who)
        except ConnectionError as e:
            if not client_gone(request):  # a link of ours failed, not the client's
                log.exception("internal error in %s", route)
                return web.Response(status=500, text="internal server error")
            log.info("%s: the client went away: %s", route, e)
            return web.Response(status=400, text="the client went away")  # never sent
        except Exception as e:
            failure = from_lower(route, e)
            if failure is None:
                log.exception("internal error in %s", route)
                return web.Response(status=500, text="internal server error")
            if isinstance(e, RequestPayloadError):
                log.info("%s: broken request body from %s: %s", route, request.remote, e)
            elif isinstance(failure, Unavailable):
                log.warning("%s: unavailable: %s", route, e)
            return failure.response()

    async def _authenticate(self, request: web.Request) -> Any:
        addr = request.remote or ""
        token = _bearer(request)
        if not token and self.web is not None and self.web.has_cookie(request):
            return _admitted(request, await self.web.authenticate(request))  # a page's session
        if not token:  # costs nothing to refuse: not counted
            raise AuthFailed("invalid_access_token")
        wait = self.auth_failures.retry_after_s(addr)
        if wait:
            acct = self.meta.auth_known(token) if self.meta is not None else None
            if acct is None:
                raise RateLimited(max(1, int(wait + 0.999)))
            return _admitted(request, acct)
        acct = await self.mc.auth(token)
        if acct is None:
            self.auth_failures.failed(addr)
            raise AuthFailed("invalid_access_token")
        return _admitted(request, acct)

    async def authorize_admin_read(self, request: web.Request) -> None:
        """The admin check of a safe GET (the cluster page, its feed, `/metrics`): the admin
        token, or an administrator's browser session (no CSRF header: a read changes nothing)."""
        if self.web is not None and not _bearer(request) and self.web.has_cookie(request):
            await self.web.authenticate(request, admin=True, csrf=False)
        else:
            self._authenticate_admin(request)

    def _authenticate_admin(self, request: web.Request) -> None:
        token = _bearer(request)
        if not token or not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            raise AuthFailed("invalid_access_token")

    # -- users ---------------------------------------------------------------------------------
    async def get_current_account(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "users/get_current_account")
        name = who.display_name or who.email.split("@")[0]
        given, _, surname = name.partition(" ")
        ns = str(who.namespace_id)
        return json_response(
            {
                "account_id": who.account_id,
                "name": {
                    "given_name": given,
                    "surname": surname,
                    "familiar_name": given,
                    "display_name": name,
                    "abbreviated_name": "".join(p[0] for p in name.split() if p)[:2].upper()
                    or "RB",
                },
                "email": who.email,
                "email_verified": True,
                "disabled": False,
                "locale": "en",
                "referral_link": "https://raftbox.invalid/referrals",
                "is_paired": False,
                "account_type": {".tag": "basic"},
                "root_info": {".tag": "user", "root_namespace_id": ns, "home_namespace_id": ns},
                "country": "US",
            }
        )

    async def admin_create_account(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "raftbox/admin/create_account")
        email = a.str("email", required=True)
        why = V.email_problem(email)
        if why is not None:
            raise BadInput(a.route, f"email: {why}")
        name = a.str("display_name", default="") or ""
        why = V.text_problem(name, V.DISPLAY_NAME_MAX_CHARS)
        if why is not None:
            raise BadInput(a.route, f"display_name: {why}")
        try:
            acct, token = await self.meta.create_account(email, name)
        except AccountError:
            raise ApiError(["email_taken"]) from None
        return json_response({"account_id": acct.account_id, "email": acct.email, "token": token})

    async def admin_status(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "raftbox/admin/status")
        return json_response(self.meta.node.status())

    # -- metadata reads ------------------------------------------------------------------------
    async def get_metadata(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/get_metadata")
        t = await spaces.resolve(self.mc, who, path_arg(a, "path", READ_PATH), ["path"])
        include_deleted = a.bool("include_deleted")
        if t.at_mount_point:  # the folder entry in the home namespace, with its share
            t = spaces.Target(who.namespace_id, t.mount.display)
        ns, path = t.ns, t.path
        m = await self.meta.read(lambda s: s.get_metadata(ns, path, include_deleted))
        return json_response(t.json(who, raise_meta(m), tagged=True))

    async def list_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_folder")
        if self.links is not None and a.obj.get("shared_link") is not None:
            return await self.links.list_folder(request, who, a)  # raftbox.api.links
        path = path_arg(a, "path", LIST_PATH, default="")
        if path == "/":
            raise BadInput(a.route, "path: root folder is the empty string, not '/'")
        t = await spaces.resolve(self.mc, who, path, ["path"])
        recursive = a.bool("recursive")
        include_deleted = a.bool("include_deleted")
        limit = a.int("limit", default=None, lo=1, hi=2000) or 2000
        ns, path = t.ns, t.path

        def q(s: Any) -> Any:  # one read: the listing and where each covered mount starts
            page = s.list_folder(ns, path, recursive, include_deleted, limit)
            if isinstance(page, C.MetaError):
                return page, [], False
            return page, *spaces.start_positions(s, who, ns, page.cursor_state)

        page, positions, pending = await self.meta.read(q)
        return self._page(who, raise_meta(page), t.ns, positions, pending)

    def _page(
        self,
        who: Any,
        page: Any,
        ns: int | None = None,
        positions: list | None = None,
        pending: bool = False,
        mounted: list | None = None,
    ) -> web.Response:
        """A listing page; with `positions` (a recursive home cursor) the cursor covers those
        mounts, `mounted` holds their entries and `pending` says some have more to send."""
        ns = who.namespace_id if ns is None else ns
        mount = who.mount_of_ns(ns) if ns != who.namespace_id else None
        t = spaces.Target(ns, "", mount)
        state = [who.account_id, ns, page.cursor_state]
        if positions is not None and page.recursive and ns == who.namespace_id:
            state.append(positions)  # the mounts it covers (`spaces`)
        entries = [t.json(who, m, tagged=True) for m in page.entries]
        entries += [spaces.meta_json(who, spaces.rebase(e, m), True, m) for m, e in mounted or []]
        return json_response(
            {
                "entries": entries,
                "cursor": self.meta.sign_cursor(state),
                "has_more": page.has_more or pending,
            }
        )

    def open_cursor(self, who: Any, cursor: str) -> Any:
        """(ns, state, positions of the mounts it covers: `spaces`) of a cursor of `who`."""
        try:
            account_id, ns, state, *rest = self.meta.open_cursor(cursor)
            positions = rest[0] if rest else []
            if len(rest) > 1 or not isinstance(positions, list):
                raise ValueError("not a cursor")
        except (CursorInvalid, ValueError, TypeError):
            raise ApiError(["reset"]) from None
        if who is not None and (account_id != who.account_id or ns not in who.readable()):
            raise ApiError(["reset"])
        return ns, state, positions

    async def list_folder_continue(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_folder/continue")
        cursor = a.str("cursor", required=True)
        if self.links is not None:  # a listing through a shared link (raftbox.api.links)
            through_link = await self.links.list_folder_continue(who, cursor)
            if through_link is not None:
                return through_link
        ns, state, positions = self.open_cursor(who, cursor)

        def q(s: Any) -> Any:  # one read: the namespace's changes, then its mounts'
            page = s.list_folder_continue(ns, state, 2000)
            if isinstance(page, C.MetaError) or page.has_more:
                return page, positions, [], True
            st = page.cursor_state
            mounted, new, more = spaces.mounts_page(
                s, who, ns, st, positions, 2000 - len(page.entries)
            )
            return page, new, mounted, more

        page, new, mounted, more = await self.meta.read(q)
        return self._page(who, raise_meta(page), ns, new, more, mounted)

    async def get_latest_cursor(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_folder/get_latest_cursor")
        t = await spaces.resolve(self.mc, who, path_arg(a, "path", LIST_PATH, default=""), ["path"])
        recursive = a.bool("recursive")
        include_deleted = a.bool("include_deleted")
        ns, path = t.ns, t.path

        def q(s: Any) -> Any:
            st = s.get_latest_cursor(ns, path, recursive, include_deleted)
            if isinstance(st, C.MetaError):
                return st, []
            return st, spaces.latest_positions(s, who, ns, st)

        state, positions = await self.meta.read(q)
        state = raise_meta(state)
        cursor = [who.account_id, ns, state]
        if recursive and ns == who.namespace_id:  # covers the mounts below (`spaces`)
            cursor.append(positions)
        return json_response({"cursor": self.meta.sign_cursor(cursor)})

    async def list_revisions(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_revisions")
        t = await spaces.resolve(self.mc, who, path_arg(a, "path", WRITE_PATH), ["path"])
        mode, _ = a.tag("mode", "path")
        if mode not in ("path", "id"):
            raise BadInput(a.route, f"mode: unknown tag '{mode}'")
        limit = a.int("limit", default=10, lo=1, hi=100)
        before_rev = a.rev("before_rev")
        ns, path = t.ns, t.path
        r = await self.meta.read(lambda s: s.list_revisions(ns, path, mode, limit, before_rev))
        r = raise_meta(r)
        body: dict = {
            "is_deleted": r.is_deleted,
            "entries": [t.json(who, m, tagged=False) for m in r.entries],
            "has_more": r.has_more,
        }
        if r.server_deleted:
            body["server_deleted"] = r.server_deleted
        return json_response(body)

    # -- metadata writes -----------------------------------------------------------------------
    async def create_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/create_folder_v2")
        path = path_arg(a, "path", WRITE_PATH)
        if path.startswith("id:"):
            raise ApiError(["path", "malformed_path"])
        t = spaces.target(who, path, ["path"], write=True)
        if t.at_mount_point:  # the mount point's folder: a conflict (or autorename) at home
            t = spaces.Target(who.namespace_id, t.mount.display)
        m = await self.meta.write(C.CreateFolder(t.ns, t.path, a.bool("autorename")))
        return json_response({"metadata": t.json(who, raise_meta(m), tagged=False)})

    async def delete(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/delete_v2")
        t = await spaces.resolve_write(
            self.mc, who, path_arg(a, "path", WRITE_PATH), ["path_lookup"], deny=["path_write"]
        )
        if t.at_mount_point:  # deleting a mount point unmounts it (the folder stays shared)
            m = await self.meta.read(lambda s: s.get_metadata(who.namespace_id, t.mount.display))
            raise_meta(await self.meta.write(C.UnmountFolder(who.account_id, t.mount.ns)))
            return json_response({"metadata": spaces.meta_json(who, m, True, None)})
        for inner in spaces.mounts_under(who, t):  # so is deleting a folder that holds them
            raise_meta(await self.meta.write(C.UnmountFolder(who.account_id, inner.ns)))
        m = await self.meta.write(C.Delete(t.ns, t.path, a.rev("parent_rev")))
        return json_response({"metadata": t.json(who, raise_meta(m), tagged=True)})

    async def _relocate(self, request: web.Request, who: Any, route: str, copy: bool) -> Any:
        a = await rpc_args(request, route)
        src = await spaces.resolve_write(
            self.mc,
            who,
            path_arg(a, "from_path", WRITE_PATH),
            ["from_lookup"],
            write=not copy,
            deny=["from_write"],
        )
        dst_arg = path_arg(a, "to_path", WRITE_PATH)
        if dst_arg.startswith("id:"):
            raise ApiError(["to", "malformed_path"])
        dst = spaces.target(who, dst_arg, ["to"], write=True)
        if src.at_mount_point and not copy and dst.mount is None:  # moves the mount point
            m = raise_meta(
                await self.meta.write(
                    C.MoveMount(who.account_id, src.mount.ns, dst.path, a.bool("autorename"))
                )
            )
            return json_response({"metadata": dst.json(who, m, tagged=True)})
        if src.at_mount_point or spaces.mounts_under(who, src):
            raise ApiError(["cant_copy_shared_folder" if copy else "cant_move_shared_folder"])
        if dst.at_mount_point:
            dst = spaces.Target(who.namespace_id, dst.mount.display)  # a conflict at home
        cls = C.Copy if copy else C.Move
        if src.ns != dst.ns:  # across namespaces: copy into the target, delete in the source
            m = await self.meta.write(
                C.CopyAcross(src.ns, src.path, dst.ns, dst.path, a.bool("autorename"))
            )
            m = raise_meta(m)
            if not copy:
                raise_meta(await self.meta.write(C.Delete(src.ns, src.path)))
        else:
            m = raise_meta(
                await self.meta.write(cls(src.ns, src.path, dst.path, a.bool("autorename")))
            )
        return json_response({"metadata": dst.json(who, m, tagged=True)})

    async def move(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate(request, who, "files/move_v2", copy=False)

    async def copy(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate(request, who, "files/copy_v2", copy=True)

    async def restore(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/restore")
        t = await spaces.resolve_write(
            self.mc, who, path_arg(a, "path", WRITE_PATH), ["path_lookup"], deny=["path_write"]
        )
        rev = a.rev("rev", required=True)
        m = await self.meta.write(C.Restore(t.ns, t.path, rev))
        return json_response(t.json(who, raise_meta(m), tagged=False))


def _admitted(request: web.Request, acct: Any) -> Any:
    """`acct` may use the API (a disabled account answers `user_suspended`); its id goes on the
    request for the access log (`raftbox.accesslog`)."""
    request[ACCOUNT_KEY] = acct.account_id
    if acct.disabled:
        raise AuthFailed("user_suspended")
    if (
        getattr(acct, "expires_ms", 0) and time.time() * 1000 >= acct.expires_ms
    ):  # an app's short-lived token
        raise AuthFailed("expired_access_token")
    return acct


def _bearer(request: web.Request) -> str:
    """The bearer token, or "" when there is none that could be valid (none, another scheme,
    not ASCII — aiohttp decodes header bytes with surrogateescape —, or over TOKEN_MAX_BYTES):
    refused without looking anything up."""
    h = request.headers.get("Authorization", "")
    token = h[7:].strip() if h.startswith("Bearer ") else ""
    if not token.isascii() or len(token) > TOKEN_MAX_BYTES:
        return ""
    return token
