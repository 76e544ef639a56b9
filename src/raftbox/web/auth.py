"""Browser sign-in: sessions in a cookie, CSRF, rate-limited attempts, password admin routes.

Routes (added to the API's aiohttp app by `WebAuth.add_routes`; same HTTPS port):

| method, path         | needs                        | does                                          |
| -------------------- | ---------------------------- | --------------------------------------------- |
| POST /web/login      | JSON {email, password}       | a session: sets the cookie, answers the CSRF  |
| POST /web/logout     | cookie + CSRF header         | ends the session on every member              |
| GET  /web/session    | cookie                       | {email, display_name, account_id, admin, csrf}|
| GET  /web/download   | cookie; `?arg={"path": …}`   | `files/download` as an attachment             |

and, on the API (`admin_routes`, admin token or an administrator's session):
`raftbox/admin/set_password` {email, password?, admin?} → the account.

Sessions. The cookie `__Host-raftbox_session` (HttpOnly, Secure, SameSite=Strict, Path=/, no
Domain) holds a 256-bit random token; the cluster stores only its SHA-256 with an expiry
(`StartWebSession`, `raftbox.meta.webstate`), so any member accepts it, and "Log out"
(`EndWebSession`) ends it everywhere. A session is looked up the way bearer tokens are
(`raftbox.meta.service`, "Authentication"): on the leader's current replica, else after a
ReadIndex round that started after the request arrived (shared by concurrent lookups) — so a
request that arrives after a logout returned, on any member, is refused.

CSRF. Every request authenticated by the cookie must carry `X-Raftbox-CSRF`, the session's CSRF
token: HMAC-SHA256(cluster secret, "csrf:" + session hash), so every member computes it without
storing it. The page gets it from `GET /web/session` (a same-origin read: no CORS header is ever
sent, so another site cannot read it). A cookie without the right header is refused (403
`invalid_csrf_token`) before anything is looked up; `/2/...` routes are all POST, so this covers
every API call a page makes, reads included. Only `GET /web/download` (a read, a top-level
navigation the cookie's SameSite=Strict keeps same-site) and `GET /web/session` take the cookie
alone. Sign-in itself (no session yet) requires a JSON body (a cross-site form cannot send one
without a CORS preflight, which fails) and, when the browser sends `Origin`, the page's own.

Rate limits (per member, in memory): failed sign-ins per client address (`login_fail_burst`
refilled at `login_fail_per_s`) and per email (`account_fail_burst`, `account_fail_per_s`),
whether or not the account exists; over either: 429 with `Retry-After`, before the password is
checked. An unknown email costs the same argon2 time as a wrong password.

The account behind a session reaches the `/2/...` routes through `ApiServer._authenticate`
(the one place the API authenticates): `has_cookie` / `authenticate(request)`; an
administrator's session also passes the admin routes' check (`authenticate(request, admin=True)`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse
from typing import Any

from aiohttp import web

from raftbox.api.args import rpc_args
from raftbox.api.errors import ApiError, AuthFailed, BadInput, RateLimited, from_lower, raise_meta
from raftbox.api.limits import FailedAuthLimiter
from raftbox.api.wire import json_response
from raftbox.meta import values as V
from raftbox.meta import webstate
from raftbox.meta.commands import AccountInfo
from raftbox.meta.webcmds import EndWebSession, SetAuth, StartWebSession

from .passwords import generate_password, hash_password, password_problem, verify_password

log = logging.getLogger(__name__)

COOKIE = "__Host-raftbox_session"
CSRF_HEADER = "X-Raftbox-CSRF"
SESSION_PREFIX = "rbs_"
SESSION_COOKIE_MAX_BYTES = 100
LOGIN_BODY_MAX_BYTES = 4096


def session_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class WebAuth:
    def __init__(
        self,
        meta: Any,
        session_ttl_s: float = 7 * 24 * 3600.0,
        login_fail_per_s: float = 0.1,
        login_fail_burst: int = 20,
        account_fail_per_s: float = 1 / 60,
        account_fail_burst: int = 10,
    ) -> None:
        self.meta = meta
        self.session_ttl_s = session_ttl_s
        self.addr_failures = FailedAuthLimiter(login_fail_per_s, login_fail_burst)
        self.account_failures = FailedAuthLimiter(account_fail_per_s, account_fail_burst)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/web/login", self.login)
        app.router.add_post("/web/logout", self.logout)
        app.router.add_get("/web/session", self.session_info)

    def admin_routes(self) -> list[tuple[str, str, Any]]:
        return [("raftbox/admin/set_password", "admin", self.admin_set_password)]

    # -- the session of a request --------------------------------------------------------------
    @staticmethod
    def has_cookie(request: web.Request) -> bool:
        return COOKIE in request.cookies

    def csrf_token(self, h: bytes) -> str:
        mac = hmac.new(self.meta.store.secret(), b"csrf:" + h, hashlib.sha256).hexdigest()
        return mac

    def _cookie_hash(self, request: web.Request) -> bytes | None:
        token = request.cookies.get(COOKIE, "")
        if (
            not token.startswith(SESSION_PREFIX)
            or not token.isascii()
            or len(token) > SESSION_COOKIE_MAX_BYTES
        ):
            return None
        return session_hash(token)

    async def _lookup(self, h: bytes) -> tuple[AccountInfo, bool] | None:
        """The session's (account, admin), never older than the call (module docstring)."""
        meta = self.meta
        if not meta._replica_is_current():
            await meta._auth_rounds.wait()
        return webstate.session(meta.store.db, h, int(time.time() * 1000))

    async def authenticate(
        self, request: web.Request, admin: bool = False, csrf: bool = True
    ) -> AccountInfo:
        """The account of the request's session cookie (CSRF header checked first unless
        `csrf=False`: safe reads only); `AuthFailed` / 403 otherwise."""
        h = self._cookie_hash(request)
        if h is None:
            raise AuthFailed("invalid_access_token")
        if csrf:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent.encode(), self.csrf_token(h).encode()):
                raise ApiError(["invalid_csrf_token"], status=403)
        found = await self._lookup(h)
        if found is None:
            raise AuthFailed("invalid_access_token")
        acct, is_admin = found
        if acct.disabled:
            raise AuthFailed("user_suspended")
        if admin and not is_admin:
            raise AuthFailed("invalid_access_token")
        return acct

    # -- routes --------------------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        return await _answer(request, "web/login", self._login)

    async def _login(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise ApiError(["bad_origin"], status=403)
        if request.content_type != "application/json":
            raise BadInput("web/login", "send a JSON body (Content-Type: application/json)")
        if (request.content_length or 0) > LOGIN_BODY_MAX_BYTES:
            raise BadInput("web/login", "request too large")
        raw = b""
        while len(raw) <= LOGIN_BODY_MAX_BYTES:  # chunked bodies have no Content-Length
            chunk = await request.content.read(LOGIN_BODY_MAX_BYTES + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
        try:
            body = json.loads(raw)
            email, password = body["email"], body["password"]
            if not isinstance(email, str) or not isinstance(password, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise BadInput("web/login", 'expected {"email": "...", "password": "..."}') from None
        if len(raw) > LOGIN_BODY_MAX_BYTES or V.email_problem(email.strip()) is not None:
            raise ApiError(["invalid_credentials"], status=401)
        addr = request.remote or ""
        key = "email:" + email.strip().casefold()
        wait = max(self.addr_failures.retry_after_s(addr), self.account_failures.retry_after_s(key))
        if wait:
            raise RateLimited(max(1, int(wait + 0.999)))
        found = await self.meta.read(lambda s: webstate.auth_of_email(s.db, email))
        stored = found[1] if found is not None else ""
        ok = await verify_password(stored, password)
        if not ok or found is None:
            self.addr_failures.failed(addr)
            self.account_failures.failed(key)
            log.info("web sign-in failed for %r from %s", email.strip()[:100], addr)
            raise ApiError(["invalid_credentials"], status=401)
        acct, _, is_admin = found
        if acct.disabled:
            raise AuthFailed("user_suspended")
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        h = session_hash(token)
        ttl_ms = int(self.session_ttl_s * 1000)
        raise_meta(await self.meta.write(StartWebSession(h, acct.account_id, ttl_ms)))
        resp = json_response(self._session_json(acct, is_admin, h))
        resp.set_cookie(
            COOKIE,
            token,
            max_age=int(self.session_ttl_s),
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def _session_json(self, acct: AccountInfo, is_admin: bool, h: bytes) -> dict:
        return {
            "email": acct.email,
            "display_name": acct.display_name,
            "account_id": acct.account_id,
            "admin": is_admin,
            "csrf": self.csrf_token(h),
        }

    async def logout(self, request: web.Request) -> web.Response:
        return await _answer(request, "web/logout", self._logout)

    async def _logout(self, request: web.Request) -> web.Response:
        await self.authenticate(request)
        h = self._cookie_hash(request)
        assert h is not None
        raise_meta(await self.meta.write(EndWebSession(h)))
        resp = json_response(None)
        resp.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return resp

    async def session_info(self, request: web.Request) -> web.Response:
        return await _answer(request, "web/session", self._session_info)

    async def _session_info(self, request: web.Request) -> web.Response:
        acct = await self.authenticate(request, csrf=False)
        h = self._cookie_hash(request)
        assert h is not None
        is_admin = webstate.is_admin(self.meta.store.db, acct.account_id)
        resp = json_response(self._session_json(acct, is_admin, h))
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def admin_set_password(self, request: web.Request, who: Any) -> web.Response:
        route = "raftbox/admin/set_password"
        a = await rpc_args(request, route)
        email = a.str("email", required=True)
        password = a.str("password", default=None)
        admin = a.bool("admin") if a.obj.get("admin") is not None else None
        pw_hash = None
        if password is not None:
            why = password_problem(password)
            if why is not None:
                raise BadInput(route, f"password: {why}")
            pw_hash = await hash_password(password)
        acct = raise_meta(await self.meta.write(SetAuth(email, pw_hash, admin)))
        is_admin = await self.meta.read(lambda s: webstate.is_admin(s.db, acct.account_id))
        return json_response(
            {"account_id": acct.account_id, "email": acct.email, "admin": is_admin}
        )


async def ensure_first_password(meta: Any, email: str) -> str | None:
    """`raftbox up`: give the account `email` a generated password and make it an administrator
    if it has no password yet (its first start, or a store made before passwords); the
    password (to print once), else None."""
    found = await meta.read(lambda s: webstate.auth_of_email(s.db, email))
    if found is None or found[1]:
        return None
    password = generate_password()
    raise_meta(await meta.write(SetAuth(email, await hash_password(password), True)))
    return password


async def _answer(request: web.Request, route: str, fn: Any) -> web.Response:
    """`fn(request)`, its failures rendered as the API renders them (`errors.from_lower`)."""
    try:
        return await fn(request)
    except Exception as e:
        failure = from_lower(route, e)
        if failure is None:
            log.exception("internal error in %s", route)
            return web.Response(status=500, text="internal server error")
        return failure.response()


def download_disposition(request: web.Request, suffix: str = "") -> str | None:
    """`Content-Disposition` for `GET /web/download?arg=…`: an attachment named after the file
    (`suffix` appended: ".zip" for a folder)."""
    try:
        path = json.loads(request.query.get("arg", ""))["path"]
        name = (str(path).rstrip("/").rsplit("/", 1)[-1] or "raftbox") + suffix
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return "attachment; filename*=UTF-8''" + urllib.parse.quote(name, safe="")
