"""OAuth2 apps, codes, grants and tokens in the replicated state (issue 15): apply and reads.

Theory of operation
-------------------
An operator registers an app (`OAuthAppAdd`: key, secret hash, redirect URIs, scopes). A signed-in
user who allows it gets a code (`OAuthCodeIssue`): single-use, `ttl_ms` long, bound to the app,
the redirect URI and the PKCE challenge. The app redeems it (`OAuthCodeRedeem`) for a *grant*:
one row in `oauth_grants` (account, app, scopes, the refresh token's hash if the code was
`offline`, `public` if the code had a PKCE challenge — a public client refreshes without a
secret), plus a first access token in `oauth_tokens` that expires at the entry's stamp +
`access_ttl_ms`. `OAuthRefresh` adds another access token to the grant, for its scopes or a
subset (downscoping). Revoking an access token revokes its whole grant — the refresh token and
every access token made from it — as Dropbox's `auth/token/revoke` says it does.

Tables (`schema.SCHEMA`): oauth_apps(app_key, name, secret_hash, redirect_uris JSON, scopes,
created_ms); oauth_codes(code_hash, app_key, account_id, redirect_uri, challenge,
challenge_method, scopes, offline, created_ms, expires_ms, grant_id — set once redeemed);
oauth_grants(grant_id = the raft index of the redeeming entry, app_key, account_id, scopes,
refresh_hash, public, created_ms); oauth_tokens(token_hash, grant_id, scopes, expires_ms);
oauth_consents(account_id, app_key, scopes: what the account allowed the app so far, for
`include_granted_scopes`). Scopes are stored as one space-separated, sorted string.

Checks made here, on every replica alike (so a race between two redemptions has one winner): the
code exists, is not expired, was issued to this app for this redirect URI, its PKCE verifier
matches (S256 or plain) or the app authenticated with its secret; a code redeemed a second time
revokes the grant of its first redemption (RFC 6749 §4.1.2) and fails. Expiry compares with the
entry's stamp (`ctx.now_ms`); readers compare an access token's `expires_ms` with their own
clock (`raftbox.api.http`), so a token expires on every member at the same wall-clock time.

Bounds: every OAuth command first deletes up to `SWEEP_ROWS` expired codes and access tokens
that expired more than `EXPIRED_KEEP_MS` ago (kept that long so that a client holding one is told
`expired_access_token` and refreshes, rather than `invalid_access_token`); a grant keeps its
newest `ACCESS_PER_GRANT_MAX` access tokens; an account holds at most `CODES_PER_ACCOUNT_MAX`
unredeemed codes and `GRANTS_PER_APP_MAX` grants per app (the oldest go first).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3

from .context import ApplyContext
from .oauthcmds import (
    OAuthApp,
    OAuthAppAdd,
    OAuthAppRemove,
    OAuthCodeIssue,
    OAuthCodeRedeem,
    OAuthOutcome,
    OAuthRefresh,
)
from .rows import Fail

SWEEP_ROWS = 100
EXPIRED_KEEP_MS = 7 * 24 * 3600 * 1000
ACCESS_PER_GRANT_MAX = 20
CODES_PER_ACCOUNT_MAX = 100
GRANTS_PER_APP_MAX = 100
APP_NAME_MAX_CHARS = 100
REDIRECT_URIS_MAX = 20
REDIRECT_URI_MAX_CHARS = 2000
CODE_TTL_MS_MAX = 3600 * 1000
ACCESS_TTL_MS_MAX = 24 * 3600 * 1000
VERIFIER_MIN_CHARS, VERIFIER_MAX_CHARS = 43, 128  # RFC 7636 §4.1


def join_scopes(scopes: list[str] | set[str]) -> str:
    return " ".join(sorted(set(scopes)))


def split_scopes(s: str) -> list[str]:
    return s.split() if s else []


def pkce_matches(challenge: str, method: str | None, verifier: str) -> bool:
    """RFC 7636 §4.6: S256 is BASE64URL(SHA256(verifier)) without padding; plain is equality."""
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        want = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    else:
        want = verifier
    return hmac.compare_digest(want.encode(), challenge.encode())


# -- commands -------------------------------------------------------------------------------


def app_add(ctx: ApplyContext, c: OAuthAppAdd) -> OAuthApp:
    if (
        not c.app_key
        or not c.name.strip()
        or len(c.name) > APP_NAME_MAX_CHARS
        or len(c.secret_hash) != 32
        or len(c.redirect_uris) > REDIRECT_URIS_MAX
        or any(not u or len(u) > REDIRECT_URI_MAX_CHARS for u in c.redirect_uris)
        or not c.scopes
    ):
        raise Fail("invalid_command", reason="bad app")
    if ctx.db.execute("SELECT 1 FROM oauth_apps WHERE app_key = ?", (c.app_key,)).fetchone():
        raise Fail("app_exists")
    uris = list(dict.fromkeys(c.redirect_uris))
    ctx.db.execute(
        "INSERT INTO oauth_apps (app_key, name, secret_hash, redirect_uris, scopes, created_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (c.app_key, c.name, c.secret_hash, json.dumps(uris), join_scopes(c.scopes), ctx.now_ms),
    )
    return OAuthApp(c.app_key, c.name, uris, sorted(set(c.scopes)), ctx.now_ms)


def app_remove(ctx: ApplyContext, c: OAuthAppRemove) -> OAuthApp:
    app = get_app(ctx.db, c.app_key)
    if app is None:
        raise Fail("app_not_found")
    db = ctx.db
    db.execute(
        "DELETE FROM oauth_tokens WHERE grant_id IN "
        "(SELECT grant_id FROM oauth_grants WHERE app_key = ?)",
        (c.app_key,),
    )
    for table in ("oauth_grants", "oauth_codes", "oauth_consents", "oauth_apps"):
        db.execute(f"DELETE FROM {table} WHERE app_key = ?", (c.app_key,))
    return app


def code_issue(ctx: ApplyContext, c: OAuthCodeIssue) -> OAuthOutcome:
    _sweep(ctx)
    db = ctx.db
    app = get_app(db, c.app_key)
    if app is None:
        raise Fail("app_not_found")
    if c.redirect_uri is not None and c.redirect_uri not in app.redirect_uris:
        raise Fail("invalid_command", reason="redirect_uri not registered")
    if not set(c.scopes) <= set(app.scopes) or not 0 < c.ttl_ms <= CODE_TTL_MS_MAX:
        raise Fail("invalid_command", reason="bad scopes or ttl")
    if c.challenge is not None and c.challenge_method not in ("S256", "plain"):
        raise Fail("invalid_command", reason="bad challenge method")
    if _account_state(db, c.account_id) != "active":
        raise Fail("account_not_found")
    scopes = set(c.scopes)
    row = db.execute(
        "SELECT scopes FROM oauth_consents WHERE account_id = ? AND app_key = ?",
        (c.account_id, c.app_key),
    ).fetchone()
    before = set(split_scopes(row[0])) if row else set()
    if c.include_granted:
        scopes |= before & set(app.scopes)
    db.execute(
        "INSERT OR REPLACE INTO oauth_consents (account_id, app_key, scopes) VALUES (?, ?, ?)",
        (c.account_id, c.app_key, join_scopes(before | scopes)),
    )
    db.execute(
        "INSERT INTO oauth_codes (code_hash, app_key, account_id, redirect_uri, challenge, "
        "challenge_method, scopes, offline, created_ms, expires_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            c.code_hash,
            c.app_key,
            c.account_id,
            c.redirect_uri,
            c.challenge,
            c.challenge_method if c.challenge is not None else None,
            join_scopes(scopes),
            int(c.offline),
            ctx.now_ms,
            ctx.now_ms + c.ttl_ms,
        ),
    )
    db.execute(
        "DELETE FROM oauth_codes WHERE code_hash IN (SELECT code_hash FROM oauth_codes "
        "WHERE account_id = ? AND grant_id IS NULL ORDER BY created_ms DESC LIMIT -1 OFFSET ?)",
        (c.account_id, CODES_PER_ACCOUNT_MAX),
    )
    return OAuthOutcome(account_id=c.account_id, scopes=sorted(scopes), refresh=c.offline)


def _account_state(db: sqlite3.Connection, account_id: str) -> str | None:
    """ "active", "disabled", or None if there is no such account."""
    row = db.execute("SELECT disabled FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
    return None if row is None else ("disabled" if row[0] else "active")


def _refused(error: str, description: str) -> OAuthOutcome:
    return OAuthOutcome(error=error, description=description)


def code_redeem(ctx: ApplyContext, c: OAuthCodeRedeem) -> OAuthOutcome:
    _sweep(ctx)
    db = ctx.db
    row = db.execute(
        "SELECT app_key, account_id, redirect_uri, challenge, challenge_method, scopes, offline, "
        "expires_ms, grant_id FROM oauth_codes WHERE code_hash = ?",
        (c.code_hash,),
    ).fetchone()
    if row is None or row[7] <= ctx.now_ms:
        return _refused("invalid_grant", "code doesn't exist or has expired")
    app_key, account_id, redirect_uri, challenge, method, scopes, offline, _, grant_id = row
    if app_key != c.app_key:
        return _refused("invalid_grant", "code was issued to another app")
    if grant_id is not None:  # a second redemption: the code leaked; revoke what it gave
        revoke_grant(db, grant_id)
        return _refused("invalid_grant", "code has already been used")
    if redirect_uri != c.redirect_uri:
        return _refused("invalid_grant", "redirect_uri mismatch")
    if challenge is not None:
        if c.code_verifier is None:
            return _refused("invalid_request", "code_verifier is required for a PKCE code")
        if not pkce_matches(challenge, method, c.code_verifier):
            return _refused("invalid_grant", "invalid code verifier")
    elif not c.client_authenticated:
        return _refused("invalid_client", "client_secret is required (the code has no PKCE)")
    if not 0 < c.access_ttl_ms <= ACCESS_TTL_MS_MAX or len(c.access_hash) != 32:
        raise Fail("invalid_command", reason="bad access token")
    if _account_state(db, account_id) is None:
        return _refused("invalid_grant", "the account no longer exists")
    refresh = bool(offline)
    if refresh and len(c.refresh_hash) != 32:
        raise Fail("invalid_command", reason="bad refresh token")
    gid = ctx.index
    db.execute(
        "INSERT INTO oauth_grants (grant_id, app_key, account_id, scopes, refresh_hash, public, "
        "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            gid,
            app_key,
            account_id,
            scopes,
            c.refresh_hash if refresh else None,
            int(challenge is not None),
            ctx.now_ms,
        ),
    )
    db.execute("UPDATE oauth_codes SET grant_id = ? WHERE code_hash = ?", (gid, c.code_hash))
    old = db.execute(
        "SELECT grant_id FROM oauth_grants WHERE account_id = ? AND app_key = ? "
        "ORDER BY grant_id DESC LIMIT -1 OFFSET ?",
        (account_id, app_key, GRANTS_PER_APP_MAX),
    ).fetchall()
    for (g,) in old:
        revoke_grant(db, g)
    expires = _add_access(ctx, gid, c.access_hash, scopes, c.access_ttl_ms)
    return OAuthOutcome(
        account_id=account_id, scopes=split_scopes(scopes), expires_ms=expires, refresh=refresh
    )


def refresh(ctx: ApplyContext, c: OAuthRefresh) -> OAuthOutcome:
    _sweep(ctx)
    db = ctx.db
    row = db.execute(
        "SELECT grant_id, app_key, account_id, scopes, public FROM oauth_grants "
        "WHERE refresh_hash = ?",
        (c.refresh_hash,),
    ).fetchone()
    if row is None:
        return _refused("invalid_grant", "refresh token is invalid or revoked")
    gid, app_key, account_id, granted, public = row
    if app_key != c.app_key:
        return _refused("invalid_grant", "refresh token was issued to another app")
    if not public and not c.client_authenticated:
        return _refused("invalid_client", "client_secret is required for this refresh token")
    scopes = split_scopes(granted)
    if c.scopes is not None:
        if not c.scopes:
            return _refused("invalid_scope", "empty scope")
        extra = set(c.scopes) - set(scopes)
        if extra:
            return _refused("invalid_scope", "not granted: " + join_scopes(extra))
        scopes = sorted(set(c.scopes))
    if not 0 < c.access_ttl_ms <= ACCESS_TTL_MS_MAX or len(c.access_hash) != 32:
        raise Fail("invalid_command", reason="bad access token")
    if _account_state(db, account_id) is None:
        return _refused("invalid_grant", "the account no longer exists")
    expires = _add_access(ctx, gid, c.access_hash, join_scopes(scopes), c.access_ttl_ms)
    return OAuthOutcome(account_id=account_id, scopes=scopes, expires_ms=expires)


def _add_access(ctx: ApplyContext, gid: int, h: bytes, scopes: str, ttl_ms: int) -> int:
    db = ctx.db
    if db.execute("SELECT 1 FROM oauth_tokens WHERE token_hash = ?", (h,)).fetchone():
        raise Fail("token_exists")
    expires = ctx.now_ms + ttl_ms
    db.execute(
        "INSERT INTO oauth_tokens (token_hash, grant_id, scopes, expires_ms) VALUES (?, ?, ?, ?)",
        (h, gid, scopes, expires),
    )
    db.execute(
        "DELETE FROM oauth_tokens WHERE token_hash IN (SELECT token_hash FROM oauth_tokens "
        "WHERE grant_id = ? ORDER BY expires_ms DESC LIMIT -1 OFFSET ?)",
        (gid, ACCESS_PER_GRANT_MAX),
    )
    return expires


def _sweep(ctx: ApplyContext) -> None:
    """Forget up to SWEEP_ROWS expired codes and long-expired access tokens (module docstring),
    and the grants without a refresh token that are left with no access token."""
    db, now = ctx.db, ctx.now_ms
    db.execute(
        "DELETE FROM oauth_codes WHERE code_hash IN "
        "(SELECT code_hash FROM oauth_codes WHERE expires_ms <= ? LIMIT ?)",
        (now, SWEEP_ROWS),
    )
    gone = db.execute(
        "SELECT token_hash, grant_id FROM oauth_tokens WHERE expires_ms <= ? LIMIT ?",
        (now - EXPIRED_KEEP_MS, SWEEP_ROWS),
    ).fetchall()
    for h, _ in gone:
        db.execute("DELETE FROM oauth_tokens WHERE token_hash = ?", (h,))
    for gid in {g for _, g in gone}:
        db.execute(
            "DELETE FROM oauth_grants WHERE grant_id = ? AND refresh_hash IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM oauth_tokens WHERE grant_id = ?)",
            (gid, gid),
        )


def revoke_grant(db: sqlite3.Connection, gid: int) -> None:
    db.execute("DELETE FROM oauth_tokens WHERE grant_id = ?", (gid,))
    db.execute("DELETE FROM oauth_grants WHERE grant_id = ?", (gid,))


def revoke_access(db: sqlite3.Connection, token_hash: bytes) -> bool:
    """`auth/token/revoke` with an app's access token: revoke its grant (the refresh token
    and every access token made from it). False if it is no app's access token."""
    row = db.execute(
        "SELECT grant_id FROM oauth_tokens WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    if row is None:
        return False
    revoke_grant(db, row[0])
    return True


def forget_account(db: sqlite3.Connection, account_id: str) -> int:
    """Every grant, token, code and consent of the account (its removal, or the operator's
    `raftbox token revoke --email E --all`); returns how many grants were revoked."""
    gids = [
        g for (g,) in db.execute("SELECT grant_id FROM oauth_grants WHERE account_id = ?",
                                 (account_id,))
    ]  # fmt: skip
    for g in gids:
        revoke_grant(db, g)
    db.execute("DELETE FROM oauth_codes WHERE account_id = ?", (account_id,))
    db.execute("DELETE FROM oauth_consents WHERE account_id = ?", (account_id,))
    return len(gids)


HANDLERS = {  # registered in `fsm.HANDLERS`
    OAuthAppAdd: app_add,
    OAuthAppRemove: app_remove,
    OAuthCodeIssue: code_issue,
    OAuthCodeRedeem: code_redeem,
    OAuthRefresh: refresh,
}


# -- reads ----------------------------------------------------------------------------------


def get_app(db: sqlite3.Connection, app_key: str) -> OAuthApp | None:
    row = db.execute(
        "SELECT app_key, name, redirect_uris, scopes, created_ms FROM oauth_apps WHERE app_key = ?",
        (app_key,),
    ).fetchone()
    if row is None:
        return None
    return OAuthApp(row[0], row[1], json.loads(row[2]), split_scopes(row[3]), row[4])


def app_secret_hash(db: sqlite3.Connection, app_key: str) -> bytes | None:
    row = db.execute("SELECT secret_hash FROM oauth_apps WHERE app_key = ?", (app_key,)).fetchone()
    return None if row is None else bytes(row[0])


def list_apps(db: sqlite3.Connection) -> list[OAuthApp]:
    rows = db.execute(
        "SELECT a.app_key, a.name, a.redirect_uris, a.scopes, a.created_ms, "
        "(SELECT COUNT(*) FROM oauth_grants g WHERE g.app_key = a.app_key) "
        "FROM oauth_apps a ORDER BY a.name, a.app_key"
    ).fetchall()
    return [OAuthApp(r[0], r[1], json.loads(r[2]), split_scopes(r[3]), r[4], r[5]) for r in rows]


def auth_access(db: sqlite3.Connection, token_hash: bytes) -> tuple[str, list[str], int] | None:
    """An app's access token: its account id, scopes and expiry (possibly past: the caller
    compares it with its clock), or None. (`accounts.auth_token` makes the account of it.)"""
    row = db.execute(
        "SELECT g.account_id, t.scopes, t.expires_ms FROM oauth_tokens t "
        "JOIN oauth_grants g ON g.grant_id = t.grant_id WHERE t.token_hash = ?",
        (token_hash,),
    ).fetchone()
    return None if row is None else (row[0], split_scopes(row[1]), row[2])
