"""Shared links: the Dropbox `sharing` link routes, `files/download_zip`, and the public pages a
link's URL opens with no account.

Routes (`LinkRoutes(meta, blocks, admin_token).routes()`, on a meta member's `ApiServer`):

| route                                        | result / error union (dropbox.sharing)       |
| -------------------------------------------- | -------------------------------------------- |
| `sharing/create_shared_link_with_settings`   | SharedLinkMetadata / CreateSharedLinkWith... |
| `sharing/list_shared_links`                  | ListSharedLinksResult / ListSharedLinksError |
| `sharing/get_shared_link_metadata`           | SharedLinkMetadata / SharedLinkError         |
| `sharing/get_shared_link_file` (content)     | SharedLinkMetadata header, the bytes         |
| `sharing/modify_shared_link_settings`        | SharedLinkMetadata / ModifySharedLinkSet...  |
| `sharing/revoke_shared_link`                 | null / RevokeSharedLinkError                 |
| `files/download_zip` (content)               | DownloadZipResult header, a zip (streamed)   |

The link state is replicated (`raftbox.meta.links`: what a link is, why only the token's hash
is stored, when a link is live). Every use of a link — a public fetch, a route naming its URL —
reads that state with `MetaService.read_current`, the consistency of a bearer token check: a
link revoked (or expired, or whose target was deleted) on any member is gone for the next
request on every member.

Settings (`SharedLinkSettings`): visibility public or password (`requested_visibility`,
`audience`, `require_password` + `link_password`; team audiences answer `settings_error/
not_authorized`: there are no teams), `expires` (in the future, else `settings_error/
invalid_settings`), `allow_download`, access viewer only. Passwords are hashed with argon2id
(argon2-cffi's defaults), in a thread, at most `argon2_concurrent_max` at a time (each takes
64 MiB and tens of milliseconds of a core). One live link per owner and target, as Dropbox keeps
it: creating another answers `shared_link_already_exists` with the existing link's metadata
when no settings are given or they differ from the link's (as Dropbox does); the same explicit
settings return the existing link itself (a retried create is harmless). A link's
`path_lower` and its `can_*` permissions are shown to its owner only. Another account naming your link's URL gets `shared_link_access_denied` on modify and revoke
(it holds the URL: the link's existence is no secret to it), and the link's metadata like any
visitor (a password link asks for the password: `shared_link_access_denied`).

A link to a shared folder's top (its mount point, `/Team`, or `ns:<n>` of a mounted folder, or
the mount point's `id:`) targets the shared namespace itself (`raftbox.meta.links`,
`ROOT_TARGET`): it shows the folder's content whatever the members' mount points are called
or moved to, and every read through it (`path` of `get_shared_link_*`, `?path=` of the page,
the zip) is a "/…" path looked up inside that namespace only. Any member may make one,
viewers too (links are view-only here: Dropbox lets every member of a folder whose link policy
is "anyone" link it); it dies when its owner stops being a member, and when the folder is
unshared — except the owner's, which then names the folder the owner keeps (same items).
An account's home root stays unlinkable (`access_denied`, as Dropbox answers).

Public pages (`add_public_routes(app)`): `GET /s/<token>/<name>` — the name is decoration, the
token is the link. Without `dl=1`, a small HTML page: the file's name and size and a Download
button, or a folder's listing (each file downloadable, sub-folders browsable with
`?path=/sub`); no script at all (`Content-Security-Policy: default-src 'none'`), every name
escaped, `Referrer-Policy: no-referrer` (the URL is the secret). With `dl=1` the file (Range
supported) or the folder as a zip (`zipstream`). A password link shows a form first; `POST` it
the password (rate-limited per client address and per link, `*_per_s`/`*_burst`): right, a
cookie scoped to the link's path (HttpOnly, Secure, SameSite=Strict; its value an HMAC of the
link and its password hash, so changing the password logs every visitor out) and a redirect
to the page; wrong, the form again with 403. A link whose owner turned downloads off shows the
page without the button and answers `dl=1` with 403.

Every token that does not name a live link — malformed, oversize, never issued, revoked,
expired, target deleted, owner removed or disabled — gets the same 404 page, byte for byte.
Looking an unknown token up may cost a ReadIndex round, so an address that misses
`miss_burst` times (refilled at `miss_per_s`) gets 429 until it may again — unless this
member's replica knows the link live (a visitor behind a scanner's NAT keeps working).

The link URL's origin is the `Host` the creating request came in on, with this server's scheme
(`https`), unless the server was given a public URL (`--public-url`, e.g. behind a proxy that
rewrites Host). A Host that is not a host name or address (with a port) is not echoed: the
server's own address is used instead. The access log never shows a token (`accesslog`).

Where these routes are served: on meta members (they read the replicated link state), not on a
block-only process; `files/download_zip` and `get_shared_link_file` are content routes, so an
SDK whose content host is a blockserver must be pointed at a meta member for them.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import hashlib
import hmac
import html
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import argon2
import msgspec
from aiohttp import web

from raftbox.blocks.errors import BlockStoreError
from raftbox.blocks.service import BlockService
from raftbox.meta import commands as C
from raftbox.meta import links as L
from raftbox.meta import paths as P
from raftbox.meta import sharing
from raftbox.meta.service import CursorInvalid, MetaService
from raftbox.raft.node import NodeError

from . import spaces, wire
from .args import LIST_PATH, READ_PATH, Args, header_args, ns_path, parse_ts, path_arg, rpc_args
from .content import abort_connection, client_gone, parse_range
from .errors import ApiError, BadInput, RateLimited, Unavailable
from .limits import FailedAuthLimiter, TokenBucket
from .wire import json_response
from .zipstream import ZipRefused, plan_zip, stream_zip

log = logging.getLogger(__name__)

URL_MAX_CHARS = 4096
LINK_PASSWORD_MAX_CHARS = 1024
FORM_MAX_BYTES = 8 * 1024
LIST_PAGE_LINKS = 1000
PAGE_LIST_MAX_ENTRIES = 2000  # a folder page lists at most this many entries
COOKIE = "rbx_link"
_URL_PATH = re.compile(r"/s/([^/?#]*)(?:/.*)?")

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def link_key(admin_token: str) -> bytes:
    """The key link tokens derive from (`raftbox.meta.links`): every member has the admin token
    in its configuration; no store holds it."""
    return hmac.new(admin_token.encode(), b"raftbox shared link tokens", hashlib.sha256).digest()


def token_of_url(url: str) -> str | None:
    """The token of a link URL (any host), or None if the URL has none that could be ours."""
    if not isinstance(url, str) or len(url) > URL_MAX_CHARS:
        return None
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return None
    m = _URL_PATH.fullmatch(path)
    if m is None or not L.token_well_formed(m.group(1)):
        return None
    return m.group(1)


class LinkRoutes:
    def __init__(
        self,
        meta: MetaService,
        blocks: BlockService,
        admin_token: str,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
        password_per_addr_per_s: float = 0.2,
        password_per_addr_burst: int = 10,
        password_per_link_per_s: float = 0.5,
        password_per_link_burst: int = 20,
        miss_per_s: float = 2.0,
        miss_burst: int = 100,
        argon2_concurrent_max: int = 2,
    ) -> None:
        self.meta = meta
        self.blocks = blocks
        self.key = link_key(admin_token)
        self.set_public_url(public_url)
        self.clock = clock
        self.hasher = argon2.PasswordHasher()
        # each hash or check takes argon2's 64 MiB and a core for tens of ms: a bounded few
        # at a time, whatever the number of visitors (the rest wait their turn)
        self._argon2_slots = asyncio.Semaphore(argon2_concurrent_max)
        self.pw_by_addr = TokenBucket(password_per_addr_per_s, password_per_addr_burst)
        self.pw_by_link = TokenBucket(password_per_link_per_s, password_per_link_burst)
        self.misses = FailedAuthLimiter(miss_per_s, miss_burst)

    def set_public_url(self, url: str | None) -> None:
        """Link URLs start with `url` (e.g. behind a proxy), not the creating request's Host."""
        self.public_url = url.rstrip("/") if url else None

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("sharing/create_shared_link_with_settings", "user", self.create),
            ("sharing/list_shared_links", "user", self.list_links),
            ("sharing/get_shared_link_metadata", "user", self.get_metadata),
            ("sharing/get_shared_link_file", "user", self.get_file),
            ("sharing/modify_shared_link_settings", "user", self.modify),
            ("sharing/revoke_shared_link", "user", self.revoke),
            ("files/download_zip", "user", self.download_zip),
        ]

    def add_public_routes(self, app: web.Application) -> None:
        for path in ("/s/{token}", "/s/{token}/{name:.*}"):
            app.router.add_get(path, self.public_get)
            app.router.add_post(path, self.public_post)
        app.router.add_route("*", "/s{rest:.*}", _no_link)  # "/s", "/s//x": no token at all

    # -- state -----------------------------------------------------------------------------
    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def token(self, link: C.LinkInfo) -> str | None:
        """The URL token of `link`, or None if it no longer derives from this key (the admin
        token was changed since: the link works, its URL cannot be shown again)."""
        t = L.link_token(self.key, link.nonce)
        return t if L.link_token_hash(t) == link.token_hash else None

    async def _live(self, token_hash: bytes) -> tuple[C.LinkInfo, Any] | None:
        """(link, target metadata) of a live link, read as current as a token check."""
        now = self.now_ms()

        def q(s: Any) -> tuple[C.LinkInfo, Any] | None:
            link = L.live_link(s.db, token_hash, now)
            if link is None:
                return None
            return link, L.target_meta(s.db, link)

        return await self.meta.read_current(q)

    def _known_live(self, token_hash: bytes) -> bool:
        return L.live_link(self.meta.store.db, token_hash, self.now_ms()) is not None

    def origin(self, request: web.Request) -> str:
        if self.public_url:
            return self.public_url
        host = request.headers.get("Host", "")
        if not re.fullmatch(
            r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?", host
        ):
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            host = f"{sock[0]}:{sock[1]}" if sock else "localhost"
        return f"{request.scheme}://{host}"

    def url(self, request: web.Request, link: C.LinkInfo, name: str) -> str:
        t = self.token(link)
        if t is None:
            return ""
        return f"{self.origin(request)}/s/{t}/{urllib.parse.quote(name, safe='')}"

    # -- JSON ------------------------------------------------------------------------------
    def link_json(
        self, request: web.Request, link: C.LinkInfo, target: Any, owner: bool, item: Any = None
    ) -> dict:
        """SharedLinkMetadata of `link` (of `item` inside a folder link, if given)."""
        m = item if item is not None else target
        vis = {".tag": "password" if link.password_hash else "public"}
        perms = {
            "can_revoke": owner,
            "resolved_visibility": vis,
            "requested_visibility": vis,
            "effective_audience": vis,
            "link_access_level": {".tag": "viewer"},
            "visibility_policies": [],
            "can_set_expiry": owner,
            "can_remove_expiry": owner,
            "allow_download": link.allow_download,
            "can_allow_download": owner,
            "can_disallow_download": owner,
            "allow_comments": False,
            "team_restricts_comments": False,
            "audience_options": [],
            "can_set_password": owner,
            "can_remove_password": owner,
            "require_password": bool(link.password_hash),
            "can_use_extended_sharing_controls": False,
        }
        if not owner:
            perms["revoke_failure_reason"] = {".tag": "owner_only"}
        d: dict[str, Any] = {
            ".tag": m.kind,
            "url": self.url(request, link, target.name),
            "id": m.id,
            "name": m.name,
            "link_permissions": perms,
        }
        if link.expires_ms is not None:
            d["expires"] = wire.ts_from_ms(link.expires_ms)
        if owner:
            d["path_lower"] = m.path_lower
        if m.kind == "file":
            d.update(
                client_modified=m.client_modified,
                server_modified=m.server_modified,
                rev=m.rev,
                size=m.size,
            )
        return d

    # -- settings --------------------------------------------------------------------------
    def _settings(self, route: str, s: Args) -> dict[str, Any]:
        """The checked `SharedLinkSettings`: {"password": str | None (absent: unchanged),
        "expires_ms", "allow_download"} with only the fields it gave."""
        out: dict[str, Any] = {}
        vis, _ = s.tag("requested_visibility", "")
        aud, _ = s.tag("audience", "")
        acc, _ = s.tag("access", "")
        require = s.obj.get("require_password")
        if require is not None:
            s.bool("require_password")
        pw = s.str("link_password")
        if vis in ("team_only",) or aud in ("team", "members", "no_one", "public_logged_in_only"):
            raise ApiError(["settings_error", "not_authorized"])
        if vis not in ("", "public", "password") or aud not in ("", "public", "password"):
            raise ApiError(["settings_error", "invalid_settings"])
        if acc not in ("", "viewer", "default", "max"):
            raise ApiError(["settings_error", "not_authorized"])
        wants_pw = vis == "password" or aud == "password" or require is True
        wants_public = vis == "public" or aud == "public" or require is False
        if wants_pw and wants_public:
            raise ApiError(["settings_error", "invalid_settings"])
        if wants_pw:
            if not pw or len(pw) > LINK_PASSWORD_MAX_CHARS:
                raise ApiError(["settings_error", "invalid_settings"])
            out["password"] = pw
        elif wants_public:
            out["password"] = None
        elif pw is not None:
            raise ApiError(["settings_error", "invalid_settings"])
        exp = s.obj.get("expires")
        if exp is not None:
            ms = int(_parse_ts_ms(route, parse_ts(route, "expires", exp)))
            if ms <= self.now_ms():
                raise ApiError(["settings_error", "invalid_settings"])
            out["expires_ms"] = ms
        if s.obj.get("allow_download") is not None:
            out["allow_download"] = s.bool("allow_download")
        return out

    async def _hash(self, password: str) -> str:
        async with self._argon2_slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, pw_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self.hasher.verify(pw_hash, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False

        async with self._argon2_slots:
            return await asyncio.to_thread(check)

    async def _same_settings(self, link: C.LinkInfo, want: dict[str, Any]) -> bool:
        if "expires_ms" in want and want["expires_ms"] != link.expires_ms:
            return False
        if want.get("allow_download", link.allow_download) != link.allow_download:
            return False
        if "password" in want:
            pw = want["password"]
            if (pw is None) != (link.password_hash is None):
                return False
            if pw is not None and not await self._verify(link.password_hash, pw):
                return False
        return True

    # -- routes ----------------------------------------------------------------------------
    async def create(self, request: web.Request, who: Any) -> web.Response:
        route = "sharing/create_shared_link_with_settings"
        a = await rpc_args(request, route)
        t = await self._target(who, path_arg(a, "path", READ_PATH))  # shared folders too
        so = a.obj_("settings")
        want = self._settings(route, so) if so is not None else None
        ns, path = t.ns, t.path
        if t.mount is not None and (t.at_mount_point or path in ("", "/")):
            path = ""  # a shared folder's top: the namespace itself
        elif path in ("", "/") or path.startswith("rev:"):
            raise ApiError(["access_denied"] if path in ("", "/") else ["path", "not_found"])
        now = self.now_ms()
        home = who.namespace_id
        mounts = getattr(who, "mounts", [])

        def q(s: Any) -> Any:
            nonlocal ns
            if path == "":
                m = L.root_meta(s.db, ns, who.account_id)
                if m is None:
                    return C.MetaError(["path", "not_found"])
                tid = L.ROOT_TARGET
            else:
                m = s.get_metadata(ns, path)
                if isinstance(m, C.MetaError):
                    return m
                tid = m.id
                if ns == home and m.kind == "folder":  # a mount point named by its id
                    key = P.make_key(m.path_display)
                    at = next((x for x in mounts if x.key == key), None)
                    if at is not None:
                        ns, tid = at.ns, L.ROOT_TARGET
                        m = L.root_meta(s.db, ns, who.account_id)
                        if m is None:
                            return C.MetaError(["path", "not_found"])
            return m, tid, L.link_for_target(s.db, who.account_id, ns, tid, now)

        r = await self.meta.read(q)
        if isinstance(r, C.MetaError):
            raise ApiError(["path", r.tags[-1]] if r.tags[:1] == ["path"] else r.tags)
        target, target_id, existing = r
        target = self._mine(who, ns, target)
        if existing is not None:
            if want is not None and await self._same_settings(existing, want):
                return json_response(self.link_json(request, existing, target, True))
            raise self._already_exists(request, existing, target)
        want = want or {}
        pw = want.get("password")
        nonce = _nonce()
        token = L.link_token(self.key, nonce)
        cmd = C.CreateLink(
            L.link_token_hash(token),
            nonce,
            who.account_id,
            ns,
            target_id,
            await self._hash(pw) if pw else None,
            want.get("expires_ms"),
            want.get("allow_download", True),
        )
        link = await self.meta.write(cmd)
        if isinstance(link, C.MetaError):
            if link.tags == ["shared_link_already_exists"]:
                h = link.extra.get("token_hash", b"")
                ex = await self.meta.read(lambda s: L.get_link(s.db, bytes(h)))
                if ex is not None:
                    raise self._already_exists(request, ex, target)
            raise ApiError(_dropbox_tags(link))
        return json_response(self.link_json(request, link, target, True))

    def _mine(self, who: Any, ns: int, m: Any) -> Any:
        """`m` (paths inside `ns`) with its paths in `who`'s tree, for the link's owner."""
        mount = who.mount_of_ns(ns) if hasattr(who, "mount_of_ns") else None
        if ns == who.namespace_id or mount is None or m is None:
            return m
        return spaces.rebase(m, mount)

    def _already_exists(self, request: web.Request, link: C.LinkInfo, target: Any) -> ApiError:
        return ApiError(
            ["shared_link_already_exists", "metadata"],
            {"metadata": self.link_json(request, link, target, True)},
        )

    async def list_links(self, request: web.Request, who: Any) -> web.Response:
        route = "sharing/list_shared_links"
        a = await rpc_args(request, route)
        path = path_arg(a, "path", READ_PATH, required=False)
        cursor = a.str("cursor")
        direct_only = a.bool("direct_only")
        after = b""
        if cursor:
            try:
                acct, kind, after_hex, cpath, cdirect = self.meta.open_cursor(cursor)
                after = bytes.fromhex(after_hex)
            except (CursorInvalid, ValueError, TypeError):
                raise ApiError(["reset"]) from None
            if acct != who.account_id or kind != "links":
                raise ApiError(["reset"])
            path, direct_only = cpath, cdirect
        ns = who.namespace_id
        # where each readable namespace sits in the account's tree (None: the home namespace)
        mounts: dict[int, Any] = {ns: None}
        mounts.update({mt.ns: mt for mt in getattr(who, "mounts", [])})
        if path is not None:
            t = await self._target(who, path)  # a path in a shared folder: its links
            ns, path = t.ns, t.path
            mounts = {ns: t.mount}
        # a shared folder's top, asked for its direct links: the links to the namespace itself
        top = direct_only and path in ("", "/") and mounts.get(ns) is not None
        now = self.now_ms()

        def q(s: Any) -> Any:
            anchor = None
            if path not in (None, "", "/"):
                anchor = s.get_metadata(ns, path)
                if isinstance(anchor, C.MetaError):
                    return anchor
            found, more = L.links_of(s.db, who.account_id, now, after, LIST_PAGE_LINKS)
            out = []
            for link in found:
                if link.ns not in mounts:  # no path: every folder of the account, mounts too
                    continue
                m = L.target_meta(s.db, link)
                if top and link.target_id != L.ROOT_TARGET:
                    continue  # at a shared folder's top: its link only
                if anchor is not None:
                    if m.id != anchor.id and (
                        direct_only or not anchor.path_lower.startswith(m.path_lower + "/")
                    ):
                        continue
                mount = mounts[link.ns]
                out.append((link, spaces.rebase(m, mount) if mount is not None else m))
            return out, more

        r = await self.meta.read(q)
        if isinstance(r, C.MetaError):
            raise ApiError(["path", r.tags[-1]] if r.tags[:1] == ["path"] else r.tags)
        found, more = r
        body: dict[str, Any] = {
            "links": [self.link_json(request, link, m, True) for link, m in found],
            "has_more": more is not None,
        }
        if more is not None:
            body["cursor"] = self.meta.sign_cursor(
                [who.account_id, "links", more.hex(), path, direct_only]
            )
        return json_response(body)

    async def _named_link(
        self, a: Args, who: Any, url_malformed: list[str] | None = None
    ) -> tuple[C.LinkInfo, Any]:
        """The live link a route's `url` names, or `shared_link_not_found`."""
        url = a.str("url", required=True)
        token = token_of_url(url)
        if token is None:
            raise ApiError(url_malformed or ["shared_link_not_found"])
        found = await self._live(L.link_token_hash(token))
        if found is None:
            raise ApiError(["shared_link_not_found"])
        return found

    async def _visible(
        self, request: web.Request, a: Args, who: Any
    ) -> tuple[C.LinkInfo, Any, Any]:
        """(link, target, item) for get_shared_link_metadata/_file: the link's password is
        checked for anyone but its owner; `path` names an item inside a folder link."""
        link, target = await self._named_link(a, who)
        pw = a.str("link_password")
        sub = a.str("path", path=True)
        if link.owner != who.account_id and link.password_hash:
            addr = request.remote or ""
            if not pw:
                raise ApiError(["shared_link_access_denied"])
            self._password_budget(addr, link)
            if not await self._verify(link.password_hash, pw):
                raise ApiError(["shared_link_access_denied"])
        item = None
        if sub not in (None, "", "/"):
            if target.kind != "folder":
                raise ApiError(["shared_link_not_found"])
            item = await self._item(link, target, sub)
            if item is None:
                raise ApiError(["shared_link_not_found"])
        return link, target, item

    def _password_budget(self, addr: str, link: C.LinkInfo) -> None:
        wait = max(self.pw_by_addr.take(addr), self.pw_by_link.take(link.token_hash.hex()))
        if wait:
            raise RateLimited(max(1, int(wait + 0.999)))

    async def _item(self, link: C.LinkInfo, folder: Any, sub: str) -> Any | None:
        """The live item at `sub` ("/a/b") below a folder link's folder, or None."""
        if not isinstance(sub, str) or not sub.startswith("/") or len(sub) > URL_MAX_CHARS:
            return None
        full = folder.path_display + sub
        try:
            ns_path(_Who(link.ns), full, ["path"])
        except ApiError:
            return None
        m = await self.meta.read(lambda s: s.get_metadata(link.ns, full))
        if isinstance(m, C.MetaError) or not m.path_lower.startswith(folder.path_lower + "/"):
            return None
        return m

    # -- files/list_folder with `shared_link` (hooked in by `http.ApiServer.list_folder`) ---
    async def list_folder(self, request: web.Request, who: Any, a: Args) -> web.Response:
        """A folder link's folder (or `path`, "/…" below it) listed, as `files/list_folder`
        with `shared_link` ({url, password}) lists it: one level (Dropbox supports only that
        through a link), entries without paths (they are the link owner's), a cursor for
        `continue` bound to the caller and the link. A dead link, a missing or wrong password,
        a path that is not a folder below the link's: `path/not_found`, all alike."""
        sl = a.obj_("shared_link", required=True)
        assert sl is not None
        url, pw = sl.str("url", required=True), sl.str("password")
        sub = path_arg(a, "path", LIST_PATH, default="")
        if a.bool("recursive"):
            raise BadInput(a.route, "shared_link: only a non-recursive listing")
        limit = a.int("limit", default=None, lo=1, hi=2000) or 2000
        token = token_of_url(url)
        found = await self._live(L.link_token_hash(token)) if token else None
        if found is None:
            raise ApiError(["path", "not_found"])
        link, target = found
        if link.owner != who.account_id and link.password_hash:
            self._password_budget(request.remote or "", link)
            if not pw or not await self._verify(link.password_hash, pw):
                raise ApiError(["path", "not_found"])
        folder = target if sub in ("", "/") else await self._item(link, target, sub)
        if folder is None or folder.kind != "folder" or target.kind != "folder":
            raise ApiError(["path", "not_found"])
        ref = "" if folder is target and link.target_id == L.ROOT_TARGET else folder.id
        page = await self.meta.read(lambda s: s.list_folder(link.ns, ref, False, False, limit))
        if isinstance(page, C.MetaError):
            raise ApiError(["path", "not_found"])
        return self._link_page(who, link, page)

    def _link_page(self, who: Any, link: C.LinkInfo, page: Any) -> web.Response:
        entries = []
        for m in page.entries:
            d = wire.metadata_json(m, tagged=True)
            d.pop("path_lower", None)
            d.pop("path_display", None)
            entries.append(d)
        state = [who.account_id, "link", link.token_hash.hex(), page.cursor_state]
        return json_response(
            {
                "entries": entries,
                "cursor": self.meta.sign_cursor(state),
                "has_more": page.has_more,
            }
        )

    async def list_folder_continue(self, who: Any, cursor: str) -> web.Response | None:
        """`files/list_folder/continue` of a cursor made by `list_folder` above (None: not
        one of those). The link must still be live: else `reset`, as for any dead cursor."""
        try:
            acct, kind, h, state = self.meta.open_cursor(cursor)
            if kind != "link":
                return None
            state = msgspec.convert(state, C.CursorState)
            token_hash = bytes.fromhex(h)
        except (CursorInvalid, ValueError, TypeError, msgspec.ValidationError):
            return None
        if acct != who.account_id:
            raise ApiError(["reset"])
        found = await self._live(token_hash)
        if found is None:
            raise ApiError(["reset"])
        link, _ = found
        page = await self.meta.read(lambda s: s.list_folder_continue(link.ns, state, 2000))
        if isinstance(page, C.MetaError):
            raise ApiError(["reset"])
        return self._link_page(who, link, page)

    async def get_metadata(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/get_shared_link_metadata")
        link, target, item = await self._visible(request, a, who)
        owner = link.owner == who.account_id
        if owner:
            target, item = self._mine(who, link.ns, target), self._mine(who, link.ns, item)
        return json_response(self.link_json(request, link, target, owner, item))

    async def get_file(self, request: web.Request, who: Any) -> web.StreamResponse:
        a = header_args(request, "sharing/get_shared_link_file")
        link, target, item = await self._visible(request, a, who)
        m = item if item is not None else target
        if m.kind != "file":
            raise ApiError(["shared_link_is_directory"])
        if not link.allow_download and link.owner != who.account_id:
            raise ApiError(["shared_link_access_denied"])
        owner = link.owner == who.account_id
        shown = (self._mine(who, link.ns, target), self._mine(who, link.ns, item)) if owner else (
            target, item)  # fmt: skip
        result = wire.dumps(self.link_json(request, link, shown[0], owner, shown[1])).decode()
        return await self._send_file(request, link.ns, m, {"Dropbox-API-Result": result})

    async def modify(self, request: web.Request, who: Any) -> web.Response:
        route = "sharing/modify_shared_link_settings"
        a = await rpc_args(request, route)
        so = a.obj_("settings", required=True)
        assert so is not None
        want = self._settings(route, so)
        remove_exp = a.bool("remove_expiration")
        link, target = await self._named_link(a, who)
        if link.owner != who.account_id:
            raise ApiError(["shared_link_access_denied"])
        pw_hash = None
        if "password" in want:
            pw_hash = await self._hash(want["password"]) if want["password"] else ""
        cmd = C.ModifyLink(
            link.token_hash,
            who.account_id,
            pw_hash,
            want.get("expires_ms"),
            remove_exp,
            want.get("allow_download"),
        )
        r = await self.meta.write(cmd)
        if isinstance(r, C.MetaError):
            raise ApiError(_dropbox_tags(r))
        return json_response(self.link_json(request, r, self._mine(who, r.ns, target), True))

    async def revoke(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/revoke_shared_link")
        link, _ = await self._named_link(a, who, url_malformed=["shared_link_malformed"])
        if link.owner != who.account_id:
            raise ApiError(["shared_link_access_denied"])
        r = await self.meta.write(C.RevokeLink(link.token_hash, who.account_id))
        if isinstance(r, C.MetaError):
            raise ApiError(_dropbox_tags(r))
        return json_response(None)

    async def download_zip(self, request: web.Request, who: Any) -> web.StreamResponse:
        a = header_args(request, "files/download_zip")
        t = await self._target(who, path_arg(a, "path", READ_PATH))  # shared folders too
        if t.path.startswith("rev:"):
            raise ApiError(["path", "not_folder"])
        if t.at_mount_point and t.mount is not None:  # a shared folder's top: its mount point
            home, display = who.namespace_id, t.mount.display
            root = await self.meta.read(lambda s: s.get_metadata(home, display))
            if isinstance(root, C.MetaError) or root.kind != "folder":
                raise ApiError(["path", "not_found"])
            return await self._zip(request, t.ns, "", True, root=root, show=t.show)
        return await self._zip(request, t.ns, t.path or "", tagged_result=True)

    async def _target(self, who: Any, path: str) -> spaces.Target:
        """Where `path` lives for `who`, across mount points (`raftbox.api.spaces`); `id:`
        and `rev:` in the namespace that holds them among the caller's."""
        t = spaces.target(who, path, ["path"])
        if t.path.startswith(("id:", "rev:")):
            nss = who.readable() if hasattr(who, "readable") else [who.namespace_id]
            ns = await self.meta.read(lambda s: sharing.locate(s.db, nss, t.path))
            if ns is None:
                raise ApiError(["path", "not_found"])
            m = who.mount_of_ns(ns) if ns != who.namespace_id else None
            t = spaces.Target(ns, t.path, m)
        return t

    async def _zip(
        self,
        request: web.Request,
        ns: int,
        folder: str,
        tagged_result: bool = False,
        root: Any = None,
        show: Any = None,
    ) -> web.StreamResponse:
        try:
            plan = await plan_zip(self.meta, ns, folder, root=root, show=show)
        except ZipRefused as e:
            raise ApiError([e.tag]) from None
        if isinstance(plan, C.MetaError):
            raise ApiError(["path", plan.tags[-1]])
        resp = web.StreamResponse()
        resp.content_type = "application/zip"
        if tagged_result:
            result = {"metadata": wire.metadata_json(plan.folder, tagged=False)}
            resp.headers["Dropbox-API-Result"] = wire.dumps(result).decode()
        resp.headers["Content-Disposition"] = _attachment(plan.folder.name + ".zip")
        return await stream_zip(request, resp, plan, self.blocks, self.meta)

    # -- bytes -----------------------------------------------------------------------------
    async def _send_file(
        self, request: web.Request, ns: int, m: Any, headers: dict[str, str]
    ) -> web.StreamResponse:
        r = await self.meta.read(lambda s: s.file_blocks(ns, "rev:" + m.rev), stale=True)
        if isinstance(r, C.MetaError):
            raise ApiError(["shared_link_not_found"])
        _, refs = r
        size = m.size
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("Range")
        if rng and size:
            parsed = parse_range(rng, size)
            if parsed is None:
                raise ApiError(["range", "not_satisfiable"], status=416)
            start, end = parsed
            status = 206
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = "application/octet-stream"
        resp.headers["Accept-Ranges"] = "bytes"
        resp.content_length = length = max(0, end - start + 1)
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        chunks = self.blocks.read_range(refs, start, end + 1) if length else _nothing()
        try:
            first = await anext(chunks, b"")
        except BlockStoreError as e:
            await chunks.aclose()
            log.error("shared link: %s: cannot read a block: %r", m.id, e)
            raise Unavailable("a block of this file cannot be read on this server") from None
        try:
            await resp.prepare(request)
            if first:
                await resp.write(first)
            async for chunk in chunks:
                await resp.write(chunk)
            await resp.write_eof()
        except ConnectionError as e:
            if not client_gone(request):
                log.exception("shared link: %s: failed after the headers were sent", m.id)
            else:
                log.info("shared link: %s: the client went away: %s", m.id, e)
            abort_connection(request)
        except Exception:
            log.exception("shared link: %s: failed after the headers were sent", m.id)
            abort_connection(request)
        finally:
            await chunks.aclose()
        return resp

    # -- public pages ----------------------------------------------------------------------
    async def _public_link(self, request: web.Request) -> tuple[C.LinkInfo, Any] | None:
        token = request.match_info["token"]
        if not L.token_well_formed(token):
            return None
        h = L.link_token_hash(token)
        addr = request.remote or ""
        wait = self.misses.retry_after_s(addr)
        if wait and not self._known_live(h):
            raise RateLimited(max(1, int(wait + 0.999)))
        found = await self._live(h)
        if found is None:
            self.misses.failed(addr)
        return found

    def _cookie(self, link: C.LinkInfo) -> str:
        mac = hmac.new(
            self.key,
            b"link-cookie:" + link.token_hash + (link.password_hash or "").encode(),
            hashlib.sha256,
        ).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def _unlocked(self, request: web.Request, link: C.LinkInfo) -> bool:
        if not link.password_hash:
            return True
        got = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(got.encode(), self._cookie(link).encode())

    async def public_get(self, request: web.Request) -> web.StreamResponse:
        try:
            found = await self._public_link(request)
        except Exception as e:
            return _failure_page(e)
        if found is None:
            return _not_found()
        link, target = found
        if not self._unlocked(request, link):
            return _page(_password_form(target.name, None), 200)
        try:
            return await self._serve(request, link, target)
        except Exception as e:
            return _failure_page(e)

    async def public_post(self, request: web.Request) -> web.StreamResponse:
        try:
            found = await self._public_link(request)
            if found is None:
                return _not_found()
            link, target = found
            if not link.password_hash:
                raise web.HTTPSeeOther(request.path)
            self._password_budget(request.remote or "", link)
            if (request.content_length or 0) > FORM_MAX_BYTES:
                return _page(_password_form(target.name, "The form is too large."), 413)
            body = await request.content.read(FORM_MAX_BYTES + 1)
            if len(body) > FORM_MAX_BYTES:
                return _page(_password_form(target.name, "The form is too large."), 413)
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
            password = (form.get("password") or [""])[0]
            if not password or not await self._verify(link.password_hash, password):
                return _page(_password_form(target.name, "Wrong password."), 403)
            resp = web.HTTPSeeOther(request.path)
            resp.set_cookie(
                COOKIE,
                self._cookie(link),
                path=f"/s/{request.match_info['token']}",
                httponly=True,
                secure=True,
                samesite="Strict",
            )
            raise resp
        except web.HTTPSeeOther:
            raise
        except Exception as e:
            return _failure_page(e)

    async def _serve(
        self, request: web.Request, link: C.LinkInfo, target: Any
    ) -> web.StreamResponse:
        item = target
        sub = request.query.get("path")
        if sub not in (None, "", "/"):
            item = await self._item(link, target, sub) if target.kind == "folder" else None
            if item is None:
                return _not_found()
        dl = request.query.get("dl") == "1"
        if dl:
            if not link.allow_download:
                return _page(_message("Downloads are turned off for this link."), 403)
            if item.kind == "file":
                headers = {"Content-Disposition": _attachment(item.name), **_HEADERS}
                return await self._send_file(request, link.ns, item, headers)
            if item is target and link.target_id == L.ROOT_TARGET:  # a shared folder's top
                return await self._zip(request, link.ns, "", root=target)
            return await self._zip(request, link.ns, item.id)
        base = request.path
        if item.kind == "file":
            return _page(_file_page(item, base, sub, link.allow_download), 200)
        listed = "" if item is target and link.target_id == L.ROOT_TARGET else item.id
        page = await self.meta.read(
            lambda s: s.list_folder(link.ns, listed, False, False, PAGE_LIST_MAX_ENTRIES)
        )
        if isinstance(page, C.MetaError):
            return _not_found()
        rel = item.path_display[len(target.path_display) :]
        return _page(_folder_page(item, rel, page.entries, base, link.allow_download), 200)


def _dropbox_tags(e: C.MetaError) -> list[str]:
    """The route error of a refused link command (`invalid_command` is a bug of ours: logged,
    answered with the open unions' `other`)."""
    if e.tags[:1] == ["invalid_command"]:
        log.error("a link command was refused as invalid: %s", e.extra.get("reason"))
        return ["other"]
    return e.tags


class _Who:
    def __init__(self, ns: int) -> None:
        self.namespace_id = ns


def _nonce() -> bytes:
    return secrets.token_bytes(L.NONCE_BYTES)


def _parse_ts_ms(route: str, ts: str) -> int:
    try:
        return calendar.timegm(time.strptime(ts, wire.TS_FORMAT)) * 1000
    except ValueError:
        raise BadInput(route, "expires: not a timestamp") from None


def _attachment(name: str) -> str:
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", name) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''" + urllib.parse.quote(
        name, safe=""
    )


async def _nothing() -> Any:
    return
    yield b""


# -- HTML ------------------------------------------------------------------------------------
_STYLE = (
    "body{font-family:sans-serif;max-width:46em;margin:3em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;width:100%}td{padding:.3em .5em;border-bottom:1px solid #ddd}"
    ".btn{display:inline-block;padding:.5em 1.2em;background:#0061fe;color:#fff;"
    "text-decoration:none;border-radius:4px;border:0;font-size:1em}"
)


def _doc(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _page(text: str, status: int) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


_NOT_FOUND_HTML = _doc(
    "Not found",
    "<h1>This link does not exist</h1><p>It may have been removed or have expired.</p>",
)


async def _no_link(request: web.Request) -> web.Response:
    return _not_found()


def _not_found() -> web.Response:
    """The one answer for every token that names no live link."""
    return _page(_NOT_FOUND_HTML, 404)


def _failure_page(e: BaseException) -> web.Response:
    """The page of a public request that failed before its answer started."""
    if isinstance(e, RateLimited):
        r = _page(_message("Too many attempts: wait a little and try again."), 429)
        r.headers["Retry-After"] = str(e.retry_after_s)
        return r
    if isinstance(e, Unavailable | TimeoutError | NodeError):
        return _page(_message("The service is unavailable; try again shortly."), 503)
    if isinstance(e, ApiError) and e.status == 416:
        return _page(_message("Range not satisfiable."), 416)
    if isinstance(e, ApiError) and e.tags == ["shared_link_not_found"]:
        return _not_found()  # gone between the lookup and the read
    log.exception("shared link page failed", exc_info=e)
    return _page(_message("Internal error."), 500)


def _message(text: str) -> str:
    return _doc("raftbox", f"<p>{html.escape(text)}</p>")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _href(base: str, **q: str) -> str:
    return html.escape(base + "?" + urllib.parse.urlencode(q), quote=True)


def _password_form(name: str, error: str | None) -> str:
    err = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    return _doc(
        name,
        f"<h1>{html.escape(name)}</h1><p>This link is protected by a password.</p>{err}"
        '<form method="post"><label>Password <input type="password" name="password" '
        'autocomplete="current-password" required autofocus></label> '
        '<button class="btn" type="submit">Open</button></form>',
    )


def _file_page(m: Any, base: str, sub: str | None, allow_download: bool) -> str:
    q = {"dl": "1"} if not sub else {"path": sub, "dl": "1"}
    button = (
        f'<p><a class="btn" href="{_href(base, **q)}" download>Download</a></p>'
        if allow_download
        else "<p>The owner turned off downloads for this link.</p>"
    )
    return _doc(
        m.name,
        f"<h1>{html.escape(m.name)}</h1><p>{html.escape(_size(m.size))} · modified "
        f"{html.escape(m.server_modified)}</p>{button}",
    )


def _folder_page(folder: Any, rel: str, entries: list, base: str, allow_download: bool) -> str:
    rows_: list[str] = []
    if rel:
        up = rel.rsplit("/", 1)[0]
        rows_.append(f'<tr><td><a href="{_href(base, path=up or "/")}">..</a></td><td></td></tr>')
    for e in sorted(entries, key=lambda e: (e.kind != "folder", e.name.lower())):
        sub = f"{rel}/{e.name}"
        if e.kind == "folder":
            rows_.append(
                f'<tr><td><a href="{_href(base, path=sub)}">{html.escape(e.name)}/</a></td>'
                "<td></td></tr>"
            )
        elif e.kind == "file":
            link = (
                f'<a href="{_href(base, path=sub, dl="1")}" download>{html.escape(e.name)}</a>'
                if allow_download
                else html.escape(e.name)
            )
            rows_.append(f"<tr><td>{link}</td><td>{html.escape(_size(e.size))}</td></tr>")
    q = {"dl": "1"} if not rel else {"path": rel, "dl": "1"}
    button = (
        f'<p><a class="btn" href="{_href(base, **q)}" download>Download as .zip</a></p>'
        if allow_download
        else "<p>The owner turned off downloads for this link.</p>"
    )
    return _doc(
        folder.name,
        f"<h1>{html.escape(folder.name)}</h1>{button}<table>{''.join(rows_)}</table>",
    )
