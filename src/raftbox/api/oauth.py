"""OAuth2 for third-party apps (issue 15): Dropbox's `/oauth2/authorize` and `/oauth2/token`.

What an app sees is Dropbox's flow, so the official SDKs' helpers (`DropboxOAuth2Flow`,
`DropboxOAuth2FlowNoRedirect`, `Dropbox(oauth2_refresh_token=..., app_key=...)`) work unchanged:

1. An operator registers the app: `raftbox app add NAME --redirect-uri URI` prints its app key
   and secret (`raftbox/admin/add_app`; the secret is stored as its SHA-256 — it is 192 random
   bits, so a slow hash would add nothing).
2. The app sends the user's browser to `GET /oauth2/authorize?response_type=code&client_id=KEY`
   (+ `redirect_uri`, `state`, `code_challenge`[`_method` S256|plain], `token_access_type`
   offline|online|legacy, `scope`, `include_granted_scopes=user`). raftbox checks the app and
   the redirect URI (exact match with a registered one) *before* anything else, and never
   redirects anywhere else: an unknown app or URI is an error page, not a redirect (no open
   redirect). Any later error is sent back to the app's redirect URI as `error=...&state=...`.
   A signed-in user (`signed_in`, below) sees the consent page: the app's name, the account,
   the scopes asked, and Allow / Deny — a form POSTed back to `/oauth2/authorize` that carries
   every parameter and a CSRF token: HMAC(cluster secret, the user's session, the parameters,
   the time), valid `CONSENT_TTL_S` and only for that session and those parameters.
3. Allow: a code (`code_ttl_s`, single-use, bound to app, redirect URI and PKCE challenge) is
   stored (`OAuthCodeIssue`) and the browser goes to `redirect_uri?code=C&state=S` (`state`
   echoed byte for byte), or, with no `redirect_uri` (the no-redirect flow), a page shows the
   code to paste into the app. Deny: `error=access_denied`.
4. The app POSTs `/oauth2/token` (a form; the client may authenticate with HTTP Basic or the
   `client_id`/`client_secret` fields): `grant_type=authorization_code` (`code`, `redirect_uri`
   as sent in step 2, and `code_verifier` for a PKCE code or else the client secret) or
   `grant_type=refresh_token` (`refresh_token`, optional `scope` to downscope; the secret too
   unless the grant was made with PKCE). The answer is Dropbox's: `access_token`,
   `token_type` "bearer", `expires_in` (`access_ttl_s`, 4 hours), `scope`, `account_id`,
   `uid`, and `refresh_token` for `token_access_type=offline`. Errors are the JSON
   `{"error": E, "error_description": D}` with E one of `invalid_request`, `invalid_client`,
   `invalid_grant`, `invalid_scope`, `unsupported_grant_type`: 400, or 401 with
   `WWW-Authenticate` when the client authenticated with HTTP Basic (RFC 6749 §5.2). The SDK
   turns a 400 `invalid_grant` into `AuthError(invalid_access_token)`.
   `token_access_type` online and legacy (and none) give a short-lived token without refresh
   token: raftbox issues no long-lived app tokens (Dropbox retired them too).

Access tokens are checked where every token is (`raftbox.api.http`): expired → 401
`expired_access_token`, which makes the SDKs refresh; a route outside the scopes → 401
`missing_scope` (`raftbox.api.scopes`). `auth/token/revoke` with an app's access token revokes
its whole grant: the refresh token and every access token made from it (Dropbox's documented
behaviour for a token that has a refresh token; an online grant just loses its token).

Who is signed in: `signed_in(request)` is the one function that decides: the browser session of
the web sign-in (`raftbox.web.auth`: its cookie; the consent form's own CSRF token stands in for
the page's CSRF header), else an account token of full access in `Authorization: Bearer` (what a
script or a test holds: a header no other site can make a browser send; an app's scoped token is
refused — an app must not grant itself more). The session cookie is SameSite=Strict, so a
browser does not send it on the navigation that comes from the app's site: a GET without a
session answers a page that loads the same URL again from this site (a meta refresh, marked
`_rb_same_site=1`), which does carry the cookie; only if that one has no session either is the
user asked to sign in (`/login?next=` this URL, which brings them back).

A failed client authentication or grant costs the caller's address one unit of a
`FailedAuthLimiter` (20, refilled at 1/s): past it, 429 with `Retry-After`. Codes, refresh tokens
and secrets are 256, 256 and 192 random bits; the limiter is for the Raft writes a flood of
bogus requests would otherwise cause (an unknown code or refresh token is refused after a read,
without a write).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import logging
import re
import secrets
import string
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from multidict import MultiMapping

from raftbox.meta import commands as C
from raftbox.meta import oauth as O
from raftbox.meta.oauthcmds import (
    OAuthApp,
    OAuthAppAdd,
    OAuthAppRemove,
    OAuthCodeIssue,
    OAuthCodeRedeem,
    OAuthOutcome,
    OAuthRefresh,
)
from raftbox.meta.service import MetaService
from raftbox.meta.tokens import token_hash

from .args import rpc_args
from .errors import ApiError, AuthFailed, BadInput, Unavailable, from_lower
from .limits import FailedAuthLimiter
from .scopes import SCOPES
from .wire import json_response

log = logging.getLogger(__name__)

ACCESS_TTL_S = 4 * 3600
CODE_TTL_S = 600
CONSENT_TTL_S = 3600  # how long a consent page's form may be submitted
CLOCK_SKEW_S = 60  # how far ahead another member's clock may be (the form's time is its)
PARAM_MAX_CHARS = 2000  # any one query or form value
FORM_MAX_BYTES = 64 * 1024
APP_KEY_CHARS = string.ascii_lowercase + string.digits
APP_KEY_LEN = 15  # Dropbox's app keys are 15 characters of [a-z0-9]
PKCE_CHARS = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1 / §4.2
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")

AccountLookup = Callable[[web.Request], Awaitable[tuple[C.AccountInfo, bytes] | None]]


class OAuthFailure(Exception):
    """An error of the token endpoint (RFC 6749 §5.2): `error`, `description`."""

    def __init__(self, error: str, description: str, basic: bool = False) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.basic = basic

    def response(self) -> web.Response:
        status = 401 if self.error == "invalid_client" and self.basic else 400
        resp = json_response({"error": self.error, "error_description": self.description}, status)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="raftbox"'
        resp.headers["Cache-Control"] = "no-store"
        return resp


class AuthorizeFailure(Exception):
    """An error of `/oauth2/authorize`. With `redirect` (a registered redirect URI) it goes
    back to the app as `error=...&state=...`; without, it is shown to the user."""

    def __init__(self, error: str, description: str, redirect: str | None = None,
                 state: str | None = None, status: int = 400) -> None:  # fmt: skip
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect = redirect
        self.state = state
        self.status = status


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be registered as a redirect URI, or None: absolute, no fragment, https
    (http only to a loopback host, for apps on the user's machine), at most PARAM_MAX_CHARS."""
    if not uri or len(uri) > PARAM_MAX_CHARS or not uri.isprintable() or " " in uri:
        return "empty, too long or not printable"
    try:
        p = urllib.parse.urlsplit(uri)
    except ValueError:
        return "not a URI"
    if p.fragment or "#" in uri:
        return "a redirect URI has no fragment"
    if p.scheme == "https" and p.hostname:
        return None
    if p.scheme == "http" and (p.hostname or "") in LOOPBACK_HOSTS:
        return None
    return "must be https://HOST/... (or http:// to localhost)"


def with_params(uri: str, params: dict[str, str]) -> str:
    """`uri` with `params` added to its query (a registered URI may have a query already)."""
    q = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    return (
        uri + ("&" if urllib.parse.urlsplit(uri).query else ("" if uri.endswith("?") else "?")) + q
    )


def new_app_key() -> str:
    return "".join(secrets.choice(APP_KEY_CHARS) for _ in range(APP_KEY_LEN))


class AuthorizeRequest(msgspec.Struct, frozen=True):
    """The parameters of one authorization request, checked (`parse`)."""

    app: OAuthApp
    redirect_uri: str | None
    state: str | None
    challenge: str | None
    challenge_method: str | None
    offline: bool
    token_access_type: str | None
    scopes: list[str]  # asked (the app's scopes when none were)
    scope_param: str | None
    include_granted: bool

    def fields(self) -> dict[str, str]:
        """The request as form fields (the consent form sends them back)."""
        out = {"response_type": "code", "client_id": self.app.app_key}
        for k, v in (
            ("redirect_uri", self.redirect_uri),
            ("state", self.state),
            ("code_challenge", self.challenge),
            ("code_challenge_method", self.challenge_method if self.challenge else None),
            ("token_access_type", self.token_access_type),
            ("scope", self.scope_param),
            ("include_granted_scopes", "user" if self.include_granted else None),
        ):
            if v is not None:
                out[k] = v
        return out


def _one(params: MultiMapping[str], name: str) -> str | None:
    vals = params.getall(name, [])
    if not vals:
        return None
    if len(vals) > 1:
        raise ValueError(f"{name}: given more than once")
    v = vals[0]
    if not isinstance(v, str) or len(v) > PARAM_MAX_CHARS:
        raise ValueError(f"{name}: too long or not text")
    return v


class OAuthRoutes:
    def __init__(
        self,
        meta: MetaService,
        access_ttl_s: float = ACCESS_TTL_S,
        code_ttl_s: float = CODE_TTL_S,
        signed_in: AccountLookup | None = None,
        web: Any = None,
    ) -> None:
        self.meta = meta
        self.web = web  # raftbox.web.auth.WebAuth: browser sessions, if this process has them
        self.access_ttl_s = access_ttl_s
        self.code_ttl_s = code_ttl_s
        self.signed_in: AccountLookup = signed_in or self.session_or_bearer
        self.failures = FailedAuthLimiter(1.0, 20)

    # -- registration -----------------------------------------------------------------------
    def admin_routes(self) -> list[tuple[str, str, Any]]:
        """(route, auth, handler) of the operator's app routes (`raftbox app ...`)."""
        return [
            ("raftbox/admin/add_app", "admin", self.add_app),
            ("raftbox/admin/list_apps", "admin", self.list_apps),
            ("raftbox/admin/remove_app", "admin", self.remove_app),
        ]

    def install(self, api: Any, app: web.Application) -> None:
        """Register the admin routes on `api` (an `ApiServer`) and the OAuth2 endpoints on
        `app`, its aiohttp application."""
        api.add_routes(self.admin_routes())
        app.router.add_get("/oauth2/authorize", _guarded(self.authorize_get, page=True))
        app.router.add_post("/oauth2/authorize", _guarded(self.authorize_post, page=True))
        app.router.add_post("/oauth2/token", _guarded(self.token, page=False))
        # rclone 1.60 (golang.org/x/oauth2 with Dropbox's old endpoint) refreshes at /1/oauth2/token
        app.router.add_post("/1/oauth2/token", _guarded(self.token, page=False))

    # -- who is signed in ---------------------------------------------------------------------
    async def session_or_bearer(self, request: web.Request) -> tuple[C.AccountInfo, bytes] | None:
        """The signed-in account and the binding of the consent form's CSRF token to it (the
        session's hash, or the bearer token's), or None (module docstring)."""
        if self.web is not None and self.web.has_cookie(request):
            h = self.web._cookie_hash(request)
            try:
                acct = await self.web.authenticate(request, csrf=False)  # our form has its own
            except (AuthFailed, ApiError):
                acct = None
            if acct is not None and h is not None:
                return acct, b"session:" + h
        return await self.bearer_account(request)

    async def bearer_account(self, request: web.Request) -> tuple[C.AccountInfo, bytes] | None:
        """The account whose full-access token is in `Authorization: Bearer`, and the binding
        for the consent form's CSRF token (the token's hash); None if there is none."""
        h = request.headers.get("Authorization", "")
        token = h[7:].strip() if h.startswith("Bearer ") else ""
        if not token or not token.isascii() or len(token) > 1024:
            return None
        acct = await self.meta.auth(token)
        if acct is None or acct.disabled or acct.scopes is not None:
            return None
        return acct, b"bearer:" + token_hash(token)

    # -- admin: apps --------------------------------------------------------------------------
    async def add_app(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "raftbox/admin/add_app")
        name = (a.str("name", required=True) or "").strip()
        if not name or len(name) > O.APP_NAME_MAX_CHARS or not name.isprintable():
            raise BadInput(a.route, f"name: 1 to {O.APP_NAME_MAX_CHARS} printable characters")
        uris = _str_list(a, "redirect_uris", O.REDIRECT_URIS_MAX)
        for u in uris:
            why = redirect_uri_problem(u)
            if why:
                raise BadInput(a.route, f"redirect_uris: {u!r}: {why}")
        scopes = _str_list(a, "scopes", len(SCOPES)) or sorted(SCOPES)
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise BadInput(a.route, f"scopes: unknown {unknown} (known: {sorted(SCOPES)})")
        key, secret = new_app_key(), secrets.token_urlsafe(24)
        r = await self.meta.write(
            OAuthAppAdd(key, name, hashlib.sha256(secret.encode()).digest(), uris, scopes)
        )
        app = _typed(r, OAuthApp)
        return json_response({**_app_json(app), "app_secret": secret})

    async def list_apps(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "raftbox/admin/list_apps")
        apps = await self.meta.read(lambda s: O.list_apps(s.db))
        return json_response({"apps": [_app_json(x) for x in apps]})

    async def remove_app(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "raftbox/admin/remove_app")
        key = a.str("app_key", required=True) or ""
        r = await self.meta.write(OAuthAppRemove(key))
        return json_response(_app_json(_typed(r, OAuthApp)))

    # -- /oauth2/authorize --------------------------------------------------------------------
    async def parse_authorize(self, params: MultiMapping[str]) -> AuthorizeRequest:
        """Check an authorization request in the order that keeps redirects safe: the app and
        its redirect URI first (errors shown, never redirected), then the rest (errors sent
        back to that URI)."""
        try:
            client_id = _one(params, "client_id")
            redirect_uri = _one(params, "redirect_uri")
            state = _one(params, "state")
        except ValueError as e:
            raise AuthorizeFailure("invalid_request", str(e)) from None
        if not client_id:
            raise AuthorizeFailure("invalid_request", "client_id is missing")
        app = await self.meta.read(lambda s: O.get_app(s.db, client_id))
        if app is None:
            raise AuthorizeFailure("invalid_request", "unknown client_id (no such app)")
        if redirect_uri is not None and redirect_uri not in app.redirect_uris:
            raise AuthorizeFailure(
                "invalid_request", "redirect_uri is not one registered for this app"
            )

        def fail(error: str, description: str) -> AuthorizeFailure:
            return AuthorizeFailure(error, description, redirect_uri, state)

        try:
            response_type = _one(params, "response_type")
            challenge = _one(params, "code_challenge")
            method = _one(params, "code_challenge_method")
            access_type = _one(params, "token_access_type")
            scope_param = _one(params, "scope")
            include = _one(params, "include_granted_scopes")
        except ValueError as e:
            raise fail("invalid_request", str(e)) from None
        if response_type != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        if challenge is not None:
            method = method or "plain"  # RFC 7636 §4.3
            if method not in ("S256", "plain"):
                raise fail("invalid_request", "code_challenge_method must be S256 or plain")
            if not PKCE_CHARS.match(challenge):
                raise fail("invalid_request", "code_challenge: 43 to 128 of [A-Za-z0-9-._~]")
        elif method is not None:
            raise fail("invalid_request", "code_challenge_method without code_challenge")
        if access_type not in (None, "offline", "online", "legacy"):
            raise fail("invalid_request", "token_access_type must be offline, online or legacy")
        if scope_param is not None:
            asked = scope_param.split()
            if not asked:
                raise fail("invalid_scope", "scope is empty")
            bad = [s for s in asked if s not in app.scopes]
            if bad:
                raise fail("invalid_scope", "not available to this app: " + " ".join(bad)[:500])
        else:
            asked = list(app.scopes)
        if include not in (None, "user"):
            raise fail("invalid_request", "include_granted_scopes must be user")
        if include is not None and scope_param is None:
            raise fail("invalid_request", "include_granted_scopes needs scope")
        return AuthorizeRequest(
            app=app,
            redirect_uri=redirect_uri,
            state=state,
            challenge=challenge,
            challenge_method=method if challenge is not None else None,
            offline=access_type == "offline",
            token_access_type=access_type,
            scopes=sorted(set(asked)),
            scope_param=scope_param,
            include_granted=include is not None,
        )

    async def authorize_get(self, request: web.Request) -> web.StreamResponse:
        try:
            req = await self.parse_authorize(request.query)
            who = await self.signed_in(request)
            if who is None:
                return _sign_in_page(request)
            acct, binding = who
            return _page(_consent_html(req, acct, self._csrf(binding, req, _now_ms())))
        except AuthorizeFailure as f:
            return _authorize_error(f)

    async def authorize_post(self, request: web.Request) -> web.StreamResponse:
        try:
            if (request.content_length or 0) > FORM_MAX_BYTES:
                raise AuthorizeFailure("invalid_request", "form too large", status=413)
            try:
                form = await request.post()
            except (ValueError, web.HTTPException):
                raise AuthorizeFailure("invalid_request", "malformed form") from None
            req = await self.parse_authorize(form)
            who = await self.signed_in(request)
            if who is None:
                raise AuthorizeFailure("login_required", "sign in to raftbox first", status=401)
            acct, binding = who
            try:
                csrf, decision = _one(form, "csrf") or "", _one(form, "decision")
            except ValueError as e:
                raise AuthorizeFailure("invalid_request", str(e)) from None
            if not self._csrf_ok(binding, req, csrf):
                raise AuthorizeFailure(
                    "invalid_request", "the consent form expired or was not ours: start again",
                    status=403,
                )  # fmt: skip
            if decision != "allow":
                raise AuthorizeFailure(
                    "access_denied", "the user denied the request", req.redirect_uri, req.state
                )
            code = secrets.token_urlsafe(32)
            r = await self.meta.write(
                OAuthCodeIssue(
                    code_hash=token_hash(code),
                    app_key=req.app.app_key,
                    account_id=acct.account_id,
                    redirect_uri=req.redirect_uri,
                    challenge=req.challenge,
                    challenge_method=req.challenge_method,
                    scopes=req.scopes,
                    offline=req.offline,
                    include_granted=req.include_granted,
                    ttl_ms=int(self.code_ttl_s * 1000),
                )
            )
            if isinstance(r, C.MetaError):
                raise AuthorizeFailure("server_error", r.summary, req.redirect_uri, req.state)
            if req.redirect_uri is None:
                return _page(_code_html(req.app, code))
            params = {"code": code}
            if req.state is not None:
                params["state"] = req.state
            raise web.HTTPFound(with_params(req.redirect_uri, params), headers=_NO_STORE)
        except AuthorizeFailure as f:
            return _authorize_error(f)

    def _csrf_key(self) -> bytes:
        return hmac.new(self.meta.store.secret(), b"oauth2 consent form", hashlib.sha256).digest()

    def _csrf(self, binding: bytes, req: AuthorizeRequest, at_ms: int) -> str:
        msg = msgspec.msgpack.encode([binding, sorted(req.fields().items()), at_ms])
        mac = hmac.new(self._csrf_key(), msg, hashlib.sha256).hexdigest()
        return f"{at_ms}.{mac}"

    def _csrf_ok(self, binding: bytes, req: AuthorizeRequest, csrf: str) -> bool:
        at, _, _ = csrf.partition(".")
        if not (at.isascii() and at.isdigit()) or len(at) > 15:
            return False
        age_ms = _now_ms() - int(at)
        # The page may have come from another member, whose clock may be a little ahead.
        if not -CLOCK_SKEW_S * 1000 <= age_ms <= CONSENT_TTL_S * 1000:
            return False
        want = self._csrf(binding, req, int(at))
        return hmac.compare_digest(csrf.encode("utf-8", "replace"), want.encode())

    # -- /oauth2/token ------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        addr = request.remote or ""
        wait = self.failures.retry_after_s(addr)
        if wait:
            resp = json_response(
                {"error": "too_many_requests", "error_description": "too many failed requests"},
                429,
            )
            resp.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
            return resp
        try:
            return await self._token(request)
        except OAuthFailure as f:
            if f.error in ("invalid_client", "invalid_grant"):
                self.failures.failed(addr)
            return f.response()

    async def _token(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > FORM_MAX_BYTES:
            raise OAuthFailure("invalid_request", "request body too large")
        try:
            form = await request.post()
        except (ValueError, web.HTTPException):
            raise OAuthFailure("invalid_request", "malformed form body") from None
        try:
            grant_type = _one(form, "grant_type")
            client_id = _one(form, "client_id")
            client_secret = _one(form, "client_secret")
        except ValueError as e:
            raise OAuthFailure("invalid_request", str(e)) from None
        basic = _basic_auth(request.headers.get("Authorization", ""))
        if basic is not None:
            if (client_id and client_id != basic[0]) or client_secret is not None:
                raise OAuthFailure("invalid_request", "client credentials given twice", True)
            client_id, client_secret = basic
        if not grant_type:
            raise OAuthFailure("invalid_request", "grant_type is missing")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise OAuthFailure("unsupported_grant_type", f"unsupported grant_type {grant_type!r}")
        if not client_id:
            raise OAuthFailure("invalid_request", "client_id is missing")
        secret_hash = await self.meta.read(lambda s: O.app_secret_hash(s.db, client_id))
        if secret_hash is None:
            raise OAuthFailure("invalid_client", "invalid client_id or client_secret", bool(basic))
        authenticated = False
        if client_secret is not None:
            given = hashlib.sha256(client_secret.encode("utf-8", "replace")).digest()
            if not hmac.compare_digest(given, secret_hash):
                raise OAuthFailure(
                    "invalid_client", "invalid client_id or client_secret", bool(basic)
                )
            authenticated = True
        if grant_type == "authorization_code":
            out = await self._redeem(form, client_id, authenticated)
        else:
            out = await self._refresh(form, client_id, authenticated)
        if out[0].error:
            raise OAuthFailure(out[0].error, out[0].description, bool(basic))
        outcome, access, refresh = out
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": int(self.access_ttl_s),
            "scope": " ".join(outcome.scopes),
        }
        if grant_type == "authorization_code":
            acct = await self.meta.read(lambda s: s.get_account(outcome.account_id), stale=True)
            body["account_id"] = outcome.account_id
            body["uid"] = str(acct.home_ns) if acct is not None else ""
            if outcome.refresh:
                body["refresh_token"] = refresh
        resp = json_response(body)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def _redeem(self, form: MultiMapping[str], client_id: str, authenticated: bool
                      ) -> tuple[OAuthOutcome, str, str]:  # fmt: skip
        try:
            code = _one(form, "code")
            redirect_uri = _one(form, "redirect_uri")
            verifier = _one(form, "code_verifier")
        except ValueError as e:
            raise OAuthFailure("invalid_request", str(e)) from None
        if not code:
            raise OAuthFailure("invalid_request", "code is missing")
        if verifier is not None and not PKCE_CHARS.match(verifier):
            raise OAuthFailure("invalid_request", "code_verifier: 43 to 128 of [A-Za-z0-9-._~]")
        h = token_hash(code)
        known = await self.meta.read(
            lambda s: s.db.execute("SELECT 1 FROM oauth_codes WHERE code_hash = ?", (h,)).fetchone()
        )
        if known is None:  # no write for a code that does not exist
            raise OAuthFailure("invalid_grant", "code doesn't exist or has expired")
        access, refresh = new_access_token(), new_refresh_token()
        r = await self.meta.write(
            OAuthCodeRedeem(
                code_hash=h,
                app_key=client_id,
                redirect_uri=redirect_uri,
                client_authenticated=authenticated,
                code_verifier=verifier,
                access_hash=token_hash(access),
                refresh_hash=token_hash(refresh),
                access_ttl_ms=int(self.access_ttl_s * 1000),
            )
        )
        return _typed(r, OAuthOutcome), access, refresh

    async def _refresh(self, form: MultiMapping[str], client_id: str, authenticated: bool
                       ) -> tuple[OAuthOutcome, str, str]:  # fmt: skip
        try:
            refresh = _one(form, "refresh_token")
            scope = _one(form, "scope")
        except ValueError as e:
            raise OAuthFailure("invalid_request", str(e)) from None
        if not refresh:
            raise OAuthFailure("invalid_request", "refresh_token is missing")
        asked: list[str] | None = None
        if scope is not None:
            asked = scope.split()
            bad = [s for s in asked if s not in SCOPES]
            if not asked or bad:
                raise OAuthFailure("invalid_scope", "unknown scope: " + " ".join(bad)[:500])
        h = token_hash(refresh)
        known = await self.meta.read(
            lambda s: s.db.execute(
                "SELECT 1 FROM oauth_grants WHERE refresh_hash = ?", (h,)
            ).fetchone()
        )
        if known is None:
            raise OAuthFailure("invalid_grant", "refresh token is invalid or revoked")
        access = new_access_token()
        r = await self.meta.write(
            OAuthRefresh(
                refresh_hash=h,
                app_key=client_id,
                client_authenticated=authenticated,
                access_hash=token_hash(access),
                scopes=asked,
                access_ttl_ms=int(self.access_ttl_s * 1000),
            )
        )
        return _typed(r, OAuthOutcome), access, refresh


def _guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], page: bool) -> Any:
    """`handler`, with what the layers below raise answered as the API answers it: no majority
    or a timeout is a 503 the client may retry (`temporarily_unavailable` for the token
    endpoint, RFC 6749 §5.2's nearest), anything else a logged 500 (`server_error`)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise  # a redirect, or aiohttp's own answer
        except Exception as e:
            failure = from_lower(request.path, e)
            if isinstance(failure, Unavailable):
                log.warning("%s: unavailable: %s", request.path, e)
                error, status = "temporarily_unavailable", 503
            else:
                log.exception("internal error in %s", request.path)
                error, status = "server_error", 500
            if page:
                return _page(f"<h1>Try again later</h1><p>{error}</p>", status=status)
            return json_response({"error": error, "error_description": error}, status)

    return guarded


def new_access_token() -> str:
    """An app's short-lived access token: "sl." (Dropbox's prefix for them) and 256 bits."""
    return "sl.rbx_" + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    return "rbx_rt_" + secrets.token_urlsafe(32)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _typed(r: Any, cls: type) -> Any:
    """A command's result as `cls` (a follower's answer crossed the propose RPC as a dict), or
    its `MetaError` raised as a route error."""
    if isinstance(r, C.MetaError):
        raise ApiError(r.tags, r.extra)
    return r if isinstance(r, cls) else msgspec.convert(r, cls)


def _app_json(app: OAuthApp) -> dict[str, Any]:
    return {
        "app_key": app.app_key,
        "name": app.name,
        "redirect_uris": app.redirect_uris,
        "scopes": app.scopes,
        "grants": app.grants,
    }


def _str_list(a: Any, name: str, max_items: int) -> list[str]:
    v = a.obj.get(name)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v) or len(v) > max_items:
        raise BadInput(a.route, f"{name}: a list of at most {max_items} strings")
    return v


def _basic_auth(h: str) -> tuple[str, str] | None:
    if not h.startswith("Basic "):
        return None
    try:
        raw = base64.b64decode(h[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = raw.partition(":")
    if not sep:
        return None
    return urllib.parse.unquote(key), urllib.parse.unquote(secret)


# -- pages ------------------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _page(body: str, status: int = 200, head: str = "") -> web.Response:
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>Authorize an app · raftbox</title><link rel="stylesheet" href="/static/style.css">'
        f'<link rel="stylesheet" href="/static/oauth.css">{head}</head>'
        f'<body class="oauth"><main>{body}</main></body></html>'
    )
    return web.Response(
        status=status, text=doc, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def _consent_html(req: AuthorizeRequest, acct: C.AccountInfo, csrf: str) -> str:
    e = html.escape
    scopes = "".join(
        f"<li><strong>{e(SCOPES.get(s, s))}</strong> <small>({e(s)})</small></li>"
        for s in req.scopes
    )
    hidden = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in req.fields().items()
    )
    lasting = (
        "It keeps this access until you revoke it."
        if req.offline
        else "Its access ends after a few hours."
    )
    return (
        f"<h1>Allow “{e(req.app.name)}” to use your raftbox?</h1>"
        f"<p>Signed in as <strong>{e(acct.email)}</strong>.</p>"
        f"<p>“{e(req.app.name)}” asks to:</p><ul>{scopes}</ul><p>{lasting}</p>"
        f'<form method="post" action="/oauth2/authorize">{hidden}'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        '<button type="submit" name="decision" value="allow">Allow</button>'
        '<button type="submit" name="decision" value="deny">Deny</button></form>'
    )


def _code_html(app: OAuthApp, code: str) -> str:
    e = html.escape
    return (
        f"<h1>“{e(app.name)}” is allowed</h1>"
        f"<p>Copy this code into “{e(app.name)}” to finish:</p>"
        f'<p><code id="code">{e(code)}</code></p>'
        f"<p>It works once, within {CODE_TTL_S // 60} minutes.</p>"
    )


SAME_SITE_MARK = "_rb_same_site"


def _sign_in_page(request: web.Request) -> web.Response:
    """No session: load the URL again from this site first (the SameSite=Strict cookie is sent
    then), and if that was already done, ask the user to sign in and come back."""
    e = html.escape
    if request.query.get(SAME_SITE_MARK) != "1":
        again = with_params(str(request.rel_url), {SAME_SITE_MARK: "1"})
        return _page(
            f'<p><a href="{e(again)}">Continue</a> to authorize the app.</p>',
            head=f'<meta http-equiv="refresh" content="0; url={e(again)}">',
        )
    back = urllib.parse.quote(str(request.rel_url), safe="")
    return _page(
        "<h1>Sign in to raftbox first</h1><p>An app asks to use your raftbox.</p>"
        f'<p><a href="/login?next={e(back)}">Sign in</a> and you will come back here.</p>',
        status=401,
    )


def _authorize_error(f: AuthorizeFailure) -> web.StreamResponse:
    if f.redirect is not None:
        params = {"error": f.error, "error_description": f.description}
        if f.state is not None:
            params["state"] = f.state
        raise web.HTTPFound(with_params(f.redirect, params), headers=_NO_STORE)
    e = html.escape
    return _page(
        f"<h1>This app cannot be authorized</h1><p>{e(f.description)}</p>"
        f"<p><small>{e(f.error)}</small></p>",
        status=f.status,
    )
