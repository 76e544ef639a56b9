"""OAuth2 apps, codes, grants and tokens in the state machine (raftbox.meta.oauth): each claim of
its docstring, applied through `MetaStore` as a Raft node would."""

from __future__ import annotations

import base64
import hashlib

import msgspec
import pytest

from raftbox.meta import commands as C
from raftbox.meta import oauth as O
from raftbox.meta.fsm import MetaStore
from raftbox.meta.oauthcmds import (
    OAuthApp,
    OAuthAppAdd,
    OAuthAppRemove,
    OAuthCodeIssue,
    OAuthCodeRedeem,
    OAuthOutcome,
    OAuthRefresh,
)

from .helpers import Driver

SCOPES = ["account_info.read", "files.content.read", "files.metadata.read"]
URI = "https://app.example/cb"
VERIFIER = "v" * 64


def h(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@pytest.fixture
def d() -> Driver:
    d = Driver()
    d.setup()
    assert isinstance(d.apply(OAuthAppAdd("app1", "App", h("secret1"), [URI], SCOPES)), OAuthApp)
    assert isinstance(d.apply(OAuthAppAdd("app2", "Other", h("secret2"), [URI], SCOPES)), OAuthApp)
    return d


def account(d: Driver) -> C.AccountInfo:
    return d.store.auth_token(b"tok-a")


def issue(
    d: Driver, code: str = "c1", app: str = "app1", *, pkce: bool = True, **kw
) -> OAuthOutcome:
    args = dict(
        code_hash=h(code),
        app_key=app,
        account_id=account(d).account_id,
        redirect_uri=URI,
        challenge=s256(VERIFIER) if pkce else None,
        challenge_method="S256" if pkce else None,
        scopes=SCOPES,
        offline=True,
        include_granted=False,
        ttl_ms=600_000,
    )
    args.update(kw)
    return d.apply(OAuthCodeIssue(**args))


def redeem(d: Driver, code: str = "c1", app: str = "app1", n: int = 1, **kw) -> OAuthOutcome:
    args = dict(
        code_hash=h(code),
        app_key=app,
        redirect_uri=URI,
        client_authenticated=False,
        code_verifier=VERIFIER,
        access_hash=h(f"at{n}"),
        refresh_hash=h(f"rt{n}"),
        access_ttl_ms=4 * 3600_000,
    )
    args.update(kw)
    return d.apply(OAuthCodeRedeem(**args))


def refresh(d: Driver, n: int, rt: str = "rt1", app: str = "app1", **kw) -> OAuthOutcome:
    args = dict(
        refresh_hash=h(rt),
        app_key=app,
        client_authenticated=False,
        access_hash=h(f"at{n}"),
        scopes=None,
        access_ttl_ms=4 * 3600_000,
    )
    args.update(kw)
    return d.apply(OAuthRefresh(**args))


def test_a_code_gives_a_scoped_expiring_token_and_a_refresh_token(d):
    assert issue(d).scopes == SCOPES
    out = redeem(d)
    assert (out.error, out.refresh, out.scopes) == ("", True, SCOPES)
    acct = d.store.auth_token(h("at1"))
    assert acct.account_id == account(d).account_id
    assert acct.scopes == SCOPES and acct.expires_ms == out.expires_ms == d.now_ms + 4 * 3600_000
    assert account(d).scopes is None and account(d).expires_ms == 0  # account tokens: full


def test_a_code_works_once_and_its_reuse_revokes_what_it_gave(d):
    issue(d)
    assert redeem(d).error == ""
    again = redeem(d, n=2)
    assert (again.error, again.description) == ("invalid_grant", "code has already been used")
    assert d.store.auth_token(h("at1")) is None  # RFC 6749 §4.1.2
    assert d.store.auth_token(h("at2")) is None
    assert refresh(d, 3).error == "invalid_grant"


@pytest.mark.parametrize(
    "change, error",
    [
        (dict(app="app2"), "invalid_grant"),
        (dict(redirect_uri="https://app.example/cb2"), "invalid_grant"),
        (dict(redirect_uri=None), "invalid_grant"),
        (dict(code_verifier="w" * 64), "invalid_grant"),
        (dict(code_verifier=None), "invalid_request"),
    ],
)
def test_a_code_is_bound_to_app_redirect_uri_and_verifier(d, change, error):
    issue(d)
    assert redeem(d, **change).error == error
    assert d.store.auth_token(h("at1")) is None
    assert redeem(d).error == ""  # a refused attempt did not use the code up


def test_a_code_without_pkce_needs_the_client_secret(d):
    issue(d, pkce=False)
    assert redeem(d, code_verifier=None).error == "invalid_client"
    assert redeem(d, code_verifier=None, client_authenticated=True).error == ""


def test_plain_pkce(d):
    issue(d, challenge=VERIFIER, challenge_method="plain")
    assert redeem(d, code_verifier="x" * 64).error == "invalid_grant"
    assert redeem(d).error == ""


def test_a_code_expires(d):
    issue(d, ttl_ms=5_000)
    d.advance(10_000)
    assert redeem(d).error == "invalid_grant"


def test_refresh_and_downscope(d):
    issue(d)
    redeem(d)
    out = refresh(d, 2)
    assert (out.error, out.scopes) == ("", SCOPES)
    out = refresh(d, 3, scopes=["files.metadata.read"])
    assert out.scopes == ["files.metadata.read"]
    assert d.store.auth_token(h("at3")).scopes == ["files.metadata.read"]
    assert refresh(d, 4, scopes=["files.content.write"]).error == "invalid_scope"
    assert refresh(d, 5, app="app2").error == "invalid_grant"
    assert refresh(d, 6, rt="nope").error == "invalid_grant"
    assert d.store.auth_token(h("at1")) is not None  # older access tokens live on until expiry


def test_a_confidential_grant_refreshes_only_with_the_secret(d):
    issue(d, pkce=False)
    redeem(d, code_verifier=None, client_authenticated=True)
    assert refresh(d, 2).error == "invalid_client"
    assert refresh(d, 3, client_authenticated=True).error == ""


def test_an_online_code_gives_no_refresh_token(d):
    issue(d, offline=False)
    out = redeem(d)
    assert out.refresh is False
    assert refresh(d, 2).error == "invalid_grant"


def test_revoking_an_access_token_revokes_its_grant(d):
    issue(d)
    redeem(d)
    refresh(d, 2)
    issue(d, "c2")
    redeem(d, "c2", n=9)  # another grant of the same app and account: untouched
    assert d.apply(C.RevokeToken(h("at2"))) is True
    assert d.store.auth_token(h("at1")) is None and d.store.auth_token(h("at2")) is None
    assert refresh(d, 3).error == "invalid_grant"
    assert d.store.auth_token(h("at9")) is not None
    assert d.apply(C.RevokeToken(h("at2"))) is False


def test_include_granted_scopes_adds_what_was_granted_before(d):
    issue(d, scopes=["files.metadata.read"])
    out = issue(d, "c2", scopes=["files.content.read"], include_granted=True)
    assert out.scopes == ["files.content.read", "files.metadata.read"]
    out = issue(d, "c3", scopes=["account_info.read"])
    assert out.scopes == ["account_info.read"]


def test_removing_an_app_or_an_account_revokes_everything(d):
    issue(d)
    redeem(d)
    removed = d.apply(OAuthAppRemove("app1"))
    assert removed.app_key == "app1"
    assert d.store.auth_token(h("at1")) is None
    assert refresh(d, 2).error == "invalid_grant"
    assert d.apply(OAuthAppRemove("app1")).tags == ["app_not_found"]
    issue(d, "c2", app="app2")
    redeem(d, "c2", app="app2", n=3)
    assert d.apply(C.RevokeTokens("a@example.com")).n == 2  # the account token and the grant
    assert d.store.auth_token(h("at3")) is None


def test_scopes_outside_the_app_and_unregistered_redirects_are_refused(d):
    d.apply(OAuthAppAdd("narrow", "Narrow", h("s"), [URI], ["files.metadata.read"]))
    assert issue(d, app="narrow").tags == ["invalid_command"]
    assert issue(d, redirect_uri="https://evil.example/").tags == ["invalid_command"]
    assert d.apply(OAuthAppAdd("app1", "Again", h("s"), [], SCOPES)).tags == ["app_exists"]


def test_state_stays_bounded(d):
    for i in range(O.CODES_PER_ACCOUNT_MAX + 5):
        issue(d, f"code{i}")
    n = d.store.db.execute("SELECT COUNT(*) FROM oauth_codes").fetchone()[0]
    assert n == O.CODES_PER_ACCOUNT_MAX
    redeem(d, f"code{O.CODES_PER_ACCOUNT_MAX + 4}")
    for i in range(O.ACCESS_PER_GRANT_MAX + 5):
        refresh(d, 100 + i)
    n = d.store.db.execute("SELECT COUNT(*) FROM oauth_tokens").fetchone()[0]
    assert n == O.ACCESS_PER_GRANT_MAX
    d.advance(O.EXPIRED_KEEP_MS + 5 * 3600_000)  # every code and access token long expired
    issue(d, "late")
    assert d.store.db.execute("SELECT COUNT(*) FROM oauth_tokens").fetchone()[0] == 0
    assert d.store.db.execute("SELECT COUNT(*) FROM oauth_codes").fetchone()[0] == 1
    assert refresh(d, 999).error == ""  # the offline grant outlives its access tokens


def test_the_same_entries_give_the_same_state_on_every_replica(d):
    issue(d)
    redeem(d)
    refresh(d, 2, scopes=["files.metadata.read"])
    other = Driver()
    for index, cmd in d.log:
        other.index = index - 1
        other.store.apply(index, cmd)
    assert other.store.dump() == d.store.dump()


def test_a_restarted_store_reads_its_oauth_results_back(tmp_path):
    """The exactly-once table keeps each client's latest result; a member that restarts decodes
    them (an undecodable result stopped a restarted member from starting)."""
    path = str(tmp_path / "meta.sqlite3")
    d = Driver(MetaStore(path))
    d.setup()

    def restart() -> object:
        d.store.close()
        d.store = MetaStore(path)  # raised msgspec.ValidationError with untagged results
        [s] = d.store.sessions.sessions.values()
        return s.results[max(s.results)]

    d.apply(OAuthAppAdd("app1", "App", h("secret1"), [URI], SCOPES))
    assert isinstance(restart(), OAuthApp)
    issue(d)
    redeem(d)
    last = restart()
    assert isinstance(last, OAuthOutcome) and last.refresh
    assert C.decode_result(msgspec.msgpack.decode(msgspec.msgpack.encode(last))) == last
