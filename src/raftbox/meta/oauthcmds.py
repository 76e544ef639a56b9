"""The OAuth2 commands of the metadata state machine (issue 15), and their results. Pure.

Apps, authorization codes, grants and their tokens are replicated state (`raftbox.meta.oauth`
applies these), so a code is single-use and a token expires or is revoked on every member at
once. Every secret in a command is a SHA-256 hash made by the API layer (`raftbox.api.oauth`),
which also draws every random value: apply stays deterministic.

| command          | result                                                            |
| ---------------- | ----------------------------------------------------------------- |
| OAuthAppAdd      | OAuthApp                                                          |
| OAuthAppRemove   | OAuthApp (as it was; its codes, grants and tokens are gone)       |
| OAuthCodeIssue   | OAuthOutcome (the code's scopes)                                  |
| OAuthCodeRedeem  | OAuthOutcome (the tokens issued, or the OAuth error)              |
| OAuthRefresh     | OAuthOutcome (the access token issued, or the OAuth error)        |

An `OAuthOutcome` with `error` set is the token endpoint's own error (`invalid_grant`, ...): it
is a normal result, not a `MetaError`, because a refused redemption may still change state (a
code used twice revokes the grant it made, RFC 6749 §4.1.2) and a `MetaError` rolls back.
"""

from __future__ import annotations

import msgspec


class _Cmd(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=False):
    pass


class OAuthAppAdd(_Cmd, tag="oauth_app_add"):
    """Register an app: `app_key` (public), the SHA-256 of its secret, the redirect URIs it
    may use (exact match), and the scopes it may ask for."""

    app_key: str
    name: str
    secret_hash: bytes
    redirect_uris: list[str]
    scopes: list[str]


class OAuthAppRemove(_Cmd, tag="oauth_app_remove"):
    """Remove an app with every code, grant and token it holds."""

    app_key: str


class OAuthCodeIssue(_Cmd, tag="oauth_code"):
    """The signed-in account allowed the app: a code valid for `ttl_ms`, bound to the app, the
    redirect URI (None: the no-redirect flow) and the PKCE challenge (None: the app must
    authenticate with its secret). `include_granted`: add the scopes this account granted the
    app before."""

    code_hash: bytes
    app_key: str
    account_id: str
    redirect_uri: str | None
    challenge: str | None
    challenge_method: str | None  # "S256" | "plain" when `challenge` is set
    scopes: list[str]
    offline: bool
    include_granted: bool
    ttl_ms: int


class OAuthCodeRedeem(_Cmd, tag="oauth_redeem"):
    """Exchange a code for an access token (and, for an offline code, a refresh token).

    `client_authenticated`: the API layer checked the app's secret. `code_verifier`: the
    PKCE verifier sent (checked here against the code's challenge: pure hashing)."""

    code_hash: bytes
    app_key: str
    redirect_uri: str | None
    client_authenticated: bool
    code_verifier: str | None
    access_hash: bytes
    refresh_hash: bytes  # used only if the code is offline
    access_ttl_ms: int


class OAuthRefresh(_Cmd, tag="oauth_refresh"):
    """A new access token from a refresh token, for the grant's scopes or a subset of them."""

    refresh_hash: bytes
    app_key: str
    client_authenticated: bool
    access_hash: bytes
    scopes: list[str] | None
    access_ttl_ms: int


class _Res(msgspec.Struct, frozen=True, tag_field="kind"):
    """Results are tagged like `commands`' (`kind`), so `commands.decode_result` reads them back
    (a follower's answer, and the client session table when a member restarts)."""


class OAuthApp(_Res, tag="oauth_app"):
    app_key: str
    name: str
    redirect_uris: list[str]
    scopes: list[str]
    created_ms: int = 0
    grants: int = 0  # live grants (list_apps only)


class OAuthOutcome(_Res, tag="oauth_outcome"):
    """What a code or token command did: `error` (an OAuth2 error code) and `description`, or
    the grant's account, scopes, the access token's expiry and whether a refresh token was
    issued."""

    error: str = ""
    description: str = ""
    account_id: str = ""
    scopes: list[str] = []
    expires_ms: int = 0
    refresh: bool = False
