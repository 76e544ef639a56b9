"""The public HTTPS API: the Dropbox v2 subset (DROPBOX_API.md §6), routed by path on any host.

`ApiServer` builds one aiohttp application whose single route `POST /2/{route}` dispatches on
the route name, whatever the Host header, so one address serves the "api", "content" and
"notify" hosts of the SDK alike. Each handler:

1. authenticates (Bearer token → account; long-poll has none: its cursor is the credential),
2. parses its argument (JSON body for rpc routes, the `Dropbox-API-Arg` header for content
   routes) with stone defaults, answering 400 with a plain-text message when it cannot,
3. calls the meta role and the block role (`BlockService`: streaming bytes in and out of
   content-addressed blocks). The metadata routes use `MetaService` (proposals and ReadIndex
   reads); the content routes — upload, download, upload sessions, and the native block
   protocol (`native.py`) — reach meta only through a `MetaClient` (`metaclient.py`): the
   `MetaService` of this process, or, in a block-only process (a blockserver, `meta=None`),
   the meta members over HTTP. Blocks stored for a write carry the GC generation read before
   storing them (`raftbox.blocks.gc`); a `gc_retry` answer becomes a 503 the SDKs retry,
4. answers with exact Dropbox JSON (`wire.py`), or a route error (409 + error union).

Files written through these routes cannot say whether they are symlinks or executable: their
commits ask to keep the executable bit of the file they replace (`CommitFile.keep_executable`)
and never make a symlink (the native `commit_batch` states both).

`files/upload_session/finish_batch_v2` checks every entry's arguments before anything is read
(a malformed one is a 400 for the whole request: nothing changed), reads all the sessions in one
query, and then proposes ONE `FinishBatch`: each entry succeeds or fails on its own in the same
raft entry, as Dropbox's finish_batch does, so no request ends half-applied.

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
logged, and no state changed (every write is one state machine command).

No client input reaches that 500 (issue 11): every header, argument and body is checked where
it is parsed (`args.load_json`, `Args`, `args.ns_path` for paths, `parse_range`), every stored value
within `raftbox.meta.values`. A client that hangs up mid-request (`ConnectionError` while its
body is read or the answer written) is logged at INFO, one line, no traceback; a body the
client breaks off or garbles (`ClientPayloadError`, a bad chunked encoding) is a 400.

Downloads (`files/download`) read the file's first block before the status line is sent: a
block this member cannot read (missing from its store — a cluster whose members do not share
one — or corrupt) is a 503, which the SDKs retry (another member may serve it), not a 409: the
file exists, and a client must not take it for gone. A block that fails later, once `200` and
the length are sent, is logged once at ERROR (the file's path and id, the rev, the block id; no
traceback) and the connection is aborted, so the client sees a truncated transfer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from raftbox.blocks.errors import BlockStoreError
from raftbox.blocks.service import BlockService, Ingested, PayloadTooLarge
from raftbox.meta import commands as C
from raftbox.meta import values as V
from raftbox.meta.service import AccountError, CursorInvalid, MetaService

from . import wire
from .accesslog import ACCOUNT_KEY
from .args import (
    LIST_PATH,
    READ_PATH,
    RPC_BODY_MAX_BYTES,
    WRITE_PATH,
    Args,
    header_args,
    ns_path,
    parse_ts,
    path_arg,
    resolve_write_path,
    rpc_args,
    write_mode,
)
from .errors import ApiError, AuthFailed, BadInput, RateLimited, Unavailable, from_lower, raise_meta
from .limits import FailedAuthLimiter, TokenBucket
from .metaclient import LocalMetaClient, MetaClient
from .wire import json_response

log = logging.getLogger(__name__)

UPLOAD_MAX_BYTES = 150 * 1024 * 1024
WINDOW = 4 * 1024 * 1024
TOKEN_MAX_BYTES = 1024  # ours are 47; longer (or non-ASCII) is refused without a lookup
MAX_FINISH_BATCH_ENTRIES = 1000

Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]

# Served by a blockserver (no meta role): every other route needs the meta role.
CONTENT_ROUTES = (
    "files/upload",
    "files/download",
    "files/upload_session/start",
    "files/upload_session/append_v2",
    "files/upload_session/finish",
    "files/upload_session/finish_batch_v2",
)


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
        self.routes: dict[str, tuple[str, Handler]] = {
            "users/get_current_account": ("user", self.get_current_account),
            "files/get_metadata": ("user", self.get_metadata),
            "files/list_folder": ("user", self.list_folder),
            "files/list_folder/continue": ("user", self.list_folder_continue),
            "files/list_folder/get_latest_cursor": ("user", self.get_latest_cursor),
            "files/upload": ("user", self.upload),
            "files/download": ("user", self.download),
            "files/delete_v2": ("user", self.delete),
            "files/move_v2": ("user", self.move),
            "files/copy_v2": ("user", self.copy),
            "files/create_folder_v2": ("user", self.create_folder),
            "files/upload_session/start": ("user", self.session_start),
            "files/upload_session/append_v2": ("user", self.session_append),
            "files/upload_session/finish": ("user", self.session_finish),
            "files/upload_session/finish_batch_v2": ("user", self.session_finish_batch),
            "files/list_revisions": ("user", self.list_revisions),
            "files/restore": ("user", self.restore),
            "raftbox/admin/create_account": ("admin", self.admin_create_account),
            "raftbox/admin/status": ("admin", self.admin_status),
        }
        if meta is None:  # a blockserver: content routes only
            self.routes = {k: v for k, v in self.routes.items() if k in CONTENT_ROUTES}
        from .native import NativeRoutes

        self.native = NativeRoutes(self)
        self.native.register()
        if meta is not None:
            from .accounts import AccountRoutes

            AccountRoutes(self).register()

    def add_route(self, name: str, auth: str, handler: Handler) -> None:
        self.routes[name] = (auth, handler)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=RPC_BODY_MAX_BYTES, handler_args={"logger": ProtocolLog()}
        )
        app.router.add_post("/2/{route:.+}", self.dispatch)
        return app

    # -- dispatch ------------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        entry = self.routes.get(route)
        if entry is None:
            return web.Response(status=404, text=f"Unknown API function: {route!r}")
        auth, handler = entry
        try:
            who: Any = None
            if auth == "user":
                who = await self._authenticate(request)
                wait = self.limiter.take(who.account_id)
                if wait:
                    raise RateLimited(max(1, int(wait + 0.999)))
            elif auth == "admin":
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

    def _authenticate_admin(self, request: web.Request) -> None:
        token = _bearer(request)
        if not token or not hmac.compare_digest(token.encode(), self.admin_token.encode()):
            raise AuthFailed("invalid_access_token")

    async def _mwrite(self, cmd: Any) -> Any:
        """A write through the MetaClient; `gc_retry` (a block this request stored was caught
        by garbage collection) refreshes the GC generation and answers 503: retry."""
        r = await self.mc.write(cmd)
        if isinstance(r, C.MetaError) and r.tags[:1] == ["gc_retry"]:
            await self.mc.gc_generation(fresh=True)
            raise Unavailable(f"blocks being garbage-collected: {r.extra.get('ids', [])[:4]}")
        return r

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
        path = ns_path(who, path_arg(a, "path", READ_PATH), ["path"])
        include_deleted = a.bool("include_deleted")
        ns = who.namespace_id
        m = await self.meta.read(lambda s: s.get_metadata(ns, path, include_deleted))
        return json_response(wire.metadata_json(raise_meta(m), tagged=True))

    async def list_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_folder")
        path = path_arg(a, "path", LIST_PATH, default="")
        if path == "/":
            raise BadInput(a.route, "path: root folder is the empty string, not '/'")
        path = ns_path(who, path, ["path"])
        recursive = a.bool("recursive")
        include_deleted = a.bool("include_deleted")
        limit = a.int("limit", default=None, lo=1, hi=2000) or 2000
        ns = who.namespace_id
        page = await self.meta.read(
            lambda s: s.list_folder(ns, path, recursive, include_deleted, limit)
        )
        return self._page(who, raise_meta(page))

    def _page(self, who: Any, page: Any) -> web.Response:
        cursor = self.meta.sign_cursor([who.account_id, who.namespace_id, page.cursor_state])
        return json_response(
            {
                "entries": [wire.metadata_json(m, tagged=True) for m in page.entries],
                "cursor": cursor,
                "has_more": page.has_more,
            }
        )

    def open_cursor(self, who: Any, cursor: str) -> Any:
        try:
            account_id, ns, state = self.meta.open_cursor(cursor)
        except (CursorInvalid, ValueError, TypeError):
            raise ApiError(["reset"]) from None
        if who is not None and (account_id != who.account_id or ns != who.namespace_id):
            raise ApiError(["reset"])
        return ns, state

    async def list_folder_continue(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_folder/continue")
        cursor = a.str("cursor", required=True)
        ns, state = self.open_cursor(who, cursor)
        page = await self.meta.read(lambda s: s.list_folder_continue(ns, state, 2000))
        return self._page(who, raise_meta(page))

    async def get_latest_cursor(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_folder/get_latest_cursor")
        path = ns_path(who, path_arg(a, "path", LIST_PATH, default=""), ["path"])
        recursive = a.bool("recursive")
        include_deleted = a.bool("include_deleted")
        ns = who.namespace_id
        state = await self.meta.read(
            lambda s: s.get_latest_cursor(ns, path, recursive, include_deleted)
        )
        state = raise_meta(state)
        cursor = self.meta.sign_cursor([who.account_id, who.namespace_id, state])
        return json_response({"cursor": cursor})

    async def list_revisions(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/list_revisions")
        path = ns_path(who, path_arg(a, "path", WRITE_PATH), ["path"])
        mode, _ = a.tag("mode", "path")
        if mode not in ("path", "id"):
            raise BadInput(a.route, f"mode: unknown tag '{mode}'")
        limit = a.int("limit", default=10, lo=1, hi=100)
        before_rev = a.rev("before_rev")
        ns = who.namespace_id
        r = await self.meta.read(lambda s: s.list_revisions(ns, path, mode, limit, before_rev))
        r = raise_meta(r)
        body: dict = {
            "is_deleted": r.is_deleted,
            "entries": [wire.metadata_json(m, tagged=False) for m in r.entries],
            "has_more": r.has_more,
        }
        if r.server_deleted:
            body["server_deleted"] = r.server_deleted
        return json_response(body)

    # -- metadata writes -----------------------------------------------------------------------
    async def create_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/create_folder_v2")
        path = ns_path(who, path_arg(a, "path", WRITE_PATH), ["path"], write=True)
        if path.startswith("id:"):
            raise ApiError(["path", "malformed_path"])
        m = await self.meta.write(C.CreateFolder(who.namespace_id, path, a.bool("autorename")))
        return json_response({"metadata": wire.metadata_json(raise_meta(m), tagged=False)})

    async def delete(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/delete_v2")
        path = await resolve_write_path(
            self.mc, who, path_arg(a, "path", WRITE_PATH), ["path_lookup"]
        )
        m = await self.meta.write(C.Delete(who.namespace_id, path, a.rev("parent_rev")))
        return json_response({"metadata": wire.metadata_json(raise_meta(m), tagged=True)})

    async def _relocate(self, request: web.Request, who: Any, route: str, copy: bool) -> Any:
        a = await rpc_args(request, route)
        src = await resolve_write_path(
            self.mc, who, path_arg(a, "from_path", WRITE_PATH), ["from_lookup"]
        )
        dst = ns_path(who, path_arg(a, "to_path", WRITE_PATH), ["to"], write=True)
        if dst.startswith("id:"):
            raise ApiError(["to", "malformed_path"])
        cls = C.Copy if copy else C.Move
        m = await self.meta.write(cls(who.namespace_id, src, dst, a.bool("autorename")))
        return json_response({"metadata": wire.metadata_json(raise_meta(m), tagged=True)})

    async def move(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate(request, who, "files/move_v2", copy=False)

    async def copy(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate(request, who, "files/copy_v2", copy=True)

    async def restore(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/restore")
        path = await resolve_write_path(
            self.mc, who, path_arg(a, "path", WRITE_PATH), ["path_lookup"]
        )
        rev = a.rev("rev", required=True)
        m = await self.meta.write(C.Restore(who.namespace_id, path, rev))
        return json_response(wire.metadata_json(raise_meta(m), tagged=False))

    # -- content -------------------------------------------------------------------------------
    def _commit_info(
        self, who: Any, a: Args, ing: Ingested, path: str, gc_gen: int | None = None
    ) -> C.CommitFile:
        mode, rev = write_mode(a)
        cm = a.obj.get("client_modified")
        if cm is not None:
            cm = parse_ts(a.route, "client_modified", cm)
        if a.obj.get("property_groups"):
            raise ApiError(["properties_error", "does_not_fit_template"])
        return C.CommitFile(
            ns=who.namespace_id,
            path=path,
            blocks=[C.BlockRef(b, s) for b, s in ing.blocks],
            size=ing.size,
            content_hash=ing.content_hash,
            mode=mode,
            update_rev=rev,
            autorename=a.bool("autorename"),
            strict_conflict=a.bool("strict_conflict"),
            client_modified=cm,
            uploaded=True,
            gc_gen=gc_gen,
            keep_executable=True,  # the Dropbox routes cannot state the bit: keep it
        )

    async def _ingest(
        self, request: web.Request, a: Args, limit: int = UPLOAD_MAX_BYTES
    ) -> tuple[Ingested, int]:
        """Store the body as blocks: (what was stored, the GC generation read before)."""
        want = a.str("content_hash")
        if want is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", want):
            raise BadInput(a.route, "content_hash: expected 64 hex characters")
        if (request.content_length or 0) > limit:  # refused before reading (and while reading)
            raise ApiError(["payload_too_large"])
        gen = await self.mc.gc_generation()
        try:
            ing = await self.blocks.ingest(request.content, limit)
        except PayloadTooLarge:
            raise ApiError(["payload_too_large"]) from None
        if want is not None and want.lower() != ing.content_hash:
            raise ApiError(["content_hash_mismatch"])
        return ing, gen

    async def upload(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload")
        path = path_arg(a, "path", WRITE_PATH)
        write_mode(a)  # validate before reading the body
        try:
            path = await resolve_write_path(self.mc, who, path, ["path"])
        except ApiError as e:  # UploadError.path is the struct UploadWriteFailed: flatten it
            raise_meta(C.MetaError(e.tags, e.extra), upload=True)
        ing, gen = await self._ingest(request, a)
        m = await self._mwrite(self._commit_info(who, a, ing, path, gen))
        return json_response(wire.metadata_json(raise_meta(m, upload=True), tagged=False))

    async def download(self, request: web.Request, who: Any) -> web.StreamResponse:
        a = header_args(request, "files/download")
        path = ns_path(who, path_arg(a, "path", READ_PATH), ["path"])
        rev = a.rev("rev")
        if rev is not None:
            path = "rev:" + rev
        ns = who.namespace_id
        r = await self.mc.query("file_blocks", ns, path)
        meta, blocks = raise_meta(r)
        size = meta.size
        start, end = 0, size - 1
        status = 200
        rng = request.headers.get("Range")
        # An empty file has no byte to range over: ignore Range (RFC 9110 allows it) and send
        # 200 with the empty body; the SDK's parallel Downloader asks for bytes=0-0 of every file.
        if rng and size:
            parsed = parse_range(rng, size)
            if parsed is None:
                raise ApiError(["range", "not_satisfiable"], status=416)
            start, end = parsed
            status = 206
        resp = web.StreamResponse(status=status)
        resp.content_type = "application/octet-stream"
        resp.headers["Dropbox-API-Result"] = wire.dumps(
            wire.metadata_json(meta, tagged=False)
        ).decode()
        resp.headers["Accept-Ranges"] = "bytes"
        length = max(0, end - start + 1)
        resp.content_length = length
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        chunks = self.blocks.read_range(blocks, start, end + 1) if length else _no_chunks()
        what = f"{meta.path_display} ({meta.id}) rev {meta.rev}"
        try:
            first = await anext(chunks, b"")  # before the status line: a 503 still possible
        except BlockStoreError as e:
            await chunks.aclose()
            log.error("files/download: %s: cannot read block %s: %r", what, _block_of(e), e)
            return web.Response(status=503, text="service unavailable: a block of this file "
                                "cannot be read on this server")  # fmt: skip
        sent = 0
        try:
            await resp.prepare(request)
            if first:
                await resp.write(first)
                sent += len(first)
            async for chunk in chunks:
                await resp.write(chunk)
                sent += len(chunk)
        except ConnectionError as e:
            if not client_gone(request):
                log.exception("files/download: %s: failed after the headers were sent", what)
                abort_connection(request)
                return resp
            log.info("files/download: %s: the client went away after %d of %d bytes: %s",
                     what, sent, length, e)  # fmt: skip
            return resp  # aiohttp finds the connection gone and says nothing more
        except BlockStoreError as e:
            # Too late for an error answer: the status and length are sent. Abort the
            # connection so the client sees a truncated transfer, never a short file.
            log.error("files/download: %s: block %s failed after %d of %d bytes were sent "
                      "(connection aborted): %r", what, _block_of(e), sent, length, e)  # fmt: skip
            abort_connection(request)
            return resp
        except Exception:
            log.exception("files/download: %s: failed after the headers were sent", what)
            abort_connection(request)
            return resp
        finally:
            await chunks.aclose()
        await resp.write_eof()
        return resp

    # -- upload sessions -----------------------------------------------------------------------
    async def session_start(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload_session/start")
        close = a.bool("close")
        stype, _ = a.tag("session_type", "sequential")
        if stype not in ("sequential", "concurrent"):
            raise BadInput(a.route, f"session_type: unknown tag '{stype}'")
        concurrent = stype == "concurrent"
        ing, gen = await self._ingest(request, a)
        if concurrent and ing.size:
            raise ApiError(["concurrent_session_data_not_allowed"])
        if concurrent and close:
            raise ApiError(["concurrent_session_close_not_allowed"])
        session_id = "pid_upload_session:" + secrets.token_urlsafe(24)
        ns = who.namespace_id
        raise_meta(await self._mwrite(C.SessionStart(session_id, ns, concurrent)))
        if ing.size or close:
            r = await self._mwrite(
                C.SessionAppend(
                    session_id, ns, 0, _refs(ing), ing.size, close, ing.window_digests, gen
                )
            )
            raise_meta(r)
        return json_response({"session_id": session_id})

    def _session_cursor(self, a: Args, prefix: list[str]) -> tuple[str, int]:
        c = a.obj_("cursor", required=True)
        assert c is not None
        return c.str("session_id", required=True), c.int(
            "offset", required=True, hi=C.MAX_FILE_BYTES
        )

    async def session_append(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload_session/append_v2")
        session_id, offset = self._session_cursor(a, [])
        close = a.bool("close")
        ns = who.namespace_id
        head = await self.mc.query("session_head", session_id)
        if head is None or head[0] != ns:
            raise ApiError(["not_found"])
        concurrent = head[1]
        if concurrent and offset % WINDOW:
            raise ApiError(["concurrent_session_invalid_offset"])
        ing, gen = await self._ingest(request, a)
        if concurrent and not close and ing.size % WINDOW:
            raise ApiError(["concurrent_session_invalid_data_size"])
        r = await self._mwrite(
            C.SessionAppend(
                session_id, ns, offset, _refs(ing), ing.size, close, ing.window_digests, gen
            )
        )
        raise_meta(r)
        return json_response(None)

    def _finish_args(self, a: Args) -> tuple[str, int, Args, str]:
        """(session id, offset, commit arguments, commit path) of an UploadSessionFinishArg,
        every argument checked (`BadInput`) before anything is read or written."""
        session_id, offset = self._session_cursor(a, ["lookup_failed"])
        commit = a.obj_("commit", required=True)
        assert commit is not None
        path = path_arg(commit, "path", WRITE_PATH)
        write_mode(commit)
        if commit.obj.get("client_modified") is not None:
            parse_ts(a.route, "client_modified", commit.obj["client_modified"])
        commit.bool("autorename")
        commit.bool("strict_conflict")
        return session_id, offset, commit, path

    async def _finish_cmd(
        self, who: Any, session_id: str, offset: int, commit: Args, path: str, st: Any
    ) -> C.SessionFinish | C.MetaError:
        """The `SessionFinish` of one entry, given its session's state `st` (None: gone), or
        the entry's own failure."""
        ns = who.namespace_id
        try:
            path = ns_path(who, path, ["path"])
            if path.startswith("id:"):
                path = await resolve_write_path(self.mc, who, path, ["path"])
        except ApiError as e:
            return C.MetaError(e.tags, e.extra)
        if st is None or st.ns != ns:
            return C.MetaError(["lookup_failed", "not_found"])
        blocks = [(b.id, b.size) for b in st.blocks]
        digests = st.window_digests()
        if digests is not None and sum(p.length for p in st.pieces) == st.length:
            content_hash = hashlib.sha256(b"".join(digests)).hexdigest()
        else:  # a piece without window digests, or one that ends off a 4 MiB boundary
            content_hash = await self.blocks.content_hash_of(blocks)
        size = sum(s for _, s in blocks)
        try:
            info = self._commit_info(who, commit, Ingested(blocks, size, content_hash), path)
        except ApiError as e:  # property_groups
            return C.MetaError(e.tags, e.extra)
        return C.SessionFinish(session_id, ns, offset, info)

    async def session_finish(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload_session/finish")
        session_id, offset, commit, path = self._finish_args(a)
        ns = who.namespace_id
        ns_path(who, path, ["path"], write=True)  # a malformed path changes nothing
        # Check the session before storing any of the body (up to 150 MiB) for it.
        head = await self.mc.query("session_head", session_id)
        if head is None or head[0] != ns:
            raise ApiError(["lookup_failed", "not_found"])
        ing, gen = await self._ingest(request, a)
        if ing.size:
            if head[1]:
                raise ApiError(["concurrent_session_data_not_allowed"])
            r = await self._mwrite(
                C.SessionAppend(
                    session_id, ns, offset, _refs(ing), ing.size, False, ing.window_digests, gen
                )
            )
            if isinstance(r, C.MetaError):
                raise ApiError(
                    ["lookup_failed"] + r.tags if r.tags[0] != "lookup_failed" else r.tags,
                    r.extra,
                )
            offset += ing.size
        st = await self.mc.query("session", session_id)
        cmd = raise_meta(await self._finish_cmd(who, session_id, offset, commit, path, st))
        m = await self._mwrite(cmd)
        return json_response(wire.metadata_json(raise_meta(m), tagged=False))

    async def session_finish_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/upload_session/finish_batch_v2")
        entries = a.obj.get("entries")
        if not isinstance(entries, list):
            raise BadInput(a.route, "entries: expected a list")
        if len(entries) > MAX_FINISH_BATCH_ENTRIES:
            raise BadInput(a.route, f"entries: at most {MAX_FINISH_BATCH_ENTRIES}")
        parsed = [self._finish_args(Args(a.route, e)) for e in entries]  # 400 before any work
        states = await self.mc.query("sessions", [sid for sid, _, _, _ in parsed]) if parsed else []
        results: list[Any] = []
        cmds: list[C.SessionFinish] = []
        for (sid, offset, commit, path), st in zip(parsed, states, strict=True):
            r = await self._finish_cmd(who, sid, offset, commit, path, st)
            if isinstance(r, C.SessionFinish):
                cmds.append(r)
                r = None  # filled in from the batch's answer below
            results.append(r)
        if cmds:
            done = iter(raise_meta(await self._mwrite(C.FinishBatch(cmds))))
            results = [next(done) if r is None else r for r in results]
        out = []
        for r in results:
            if isinstance(r, C.MetaError):
                out.append({".tag": "failure", "failure": wire.union(r.tags, r.extra)})
            else:
                out.append({".tag": "success", **wire.metadata_json(r, tagged=False)})
        return json_response({"entries": out})


def _admitted(request: web.Request, acct: Any) -> Any:
    """`acct` may use the API (a disabled account answers `user_suspended`); its id goes on the
    request for the access log (`raftbox.accesslog`)."""
    request[ACCOUNT_KEY] = acct.account_id
    if acct.disabled:
        raise AuthFailed("user_suspended")
    return acct


async def _no_chunks() -> Any:
    return
    yield b""


def _block_of(e: BaseException) -> str:
    """The block id a block store error names (`BlockNotFound(id)`), else "?"."""
    arg = e.args[0] if e.args else ""
    return arg if isinstance(arg, str) and re.fullmatch(r"[0-9a-f]{64}", arg) else "?"


def abort_connection(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def client_gone(request: web.Request) -> bool:
    """True once the client's connection is closed or closing (it hung up)."""
    t = request.transport
    return t is None or t.is_closing()


def _bearer(request: web.Request) -> str:
    """The bearer token, or "" when there is none that could be valid (none, another scheme,
    not ASCII — aiohttp decodes header bytes with surrogateescape —, or over TOKEN_MAX_BYTES):
    refused without looking anything up."""
    h = request.headers.get("Authorization", "")
    token = h[7:].strip() if h.startswith("Bearer ") else ""
    if not token.isascii() or len(token) > TOKEN_MAX_BYTES:
        return ""
    return token


def _refs(ing: Ingested) -> list:
    return [C.BlockRef(b, s) for b, s in ing.blocks]


_RANGE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")
_RANGE_BIG = 2**63  # stands for any number of 19 digits or more: past the end of any file


def _range_int(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else _RANGE_BIG


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive (start, end); None if unsatisfiable,
    malformed, or several ranges (ASCII digits only; any number of digits)."""
    m = _RANGE.fullmatch(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if a == "":
        n = _range_int(b)
        if n == 0 or size == 0:
            return None
        return max(0, size - n), size - 1
    start = _range_int(a)
    end = _range_int(b) if b else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)
