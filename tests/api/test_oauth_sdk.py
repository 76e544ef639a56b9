"""OAuth2 for apps (issue 15), through the official SDK's own helpers: `DropboxOAuth2FlowNoRedirect`
(PKCE and client secret), `Dropbox(oauth2_refresh_token=..., app_key=...)`,
`refresh_access_token` (also downscoped), `auth_token_revoke`; a token expired cluster-wide is
answered `expired_access_token` and the SDK refreshes it; a route outside the grant answers
`missing_scope`. The SDK reaches the server through the `host` it lets a caller pass
(`oauthflow`); the user consents as `oauthflow.Browser`."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from dropbox.exceptions import AuthError, BadInputError

from raftbox.testing.procs import quiet_port, wait_for

from .oauthflow import Browser, HostedFlow, OAuthUp, add_app, rpc, sdk_client

READ = ["account_info.read", "files.metadata.read", "files.content.read"]


@pytest.fixture(scope="module")
def app(up):
    key, secret = add_app(up.hostport, up.ca, up.admin_token, "SDK test app")
    return key, secret


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """A `raftbox up` whose app access tokens live 6 seconds."""
    srv = OAuthUp(tmp_path_factory.mktemp("oauth-short"), quiet_port(), access_ttl_s=6)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def sign_in(srv, app_key: str, user_token: str, **flow_kw):
    """The SDK's no-redirect flow, the user allowing it: the SDK's result."""
    flow = HostedFlow(srv.hostport, app_key, ca_certs=srv.ca, **flow_kw)
    code = Browser(srv.hostport, srv.ca, user_token).allow(flow.start())
    return flow.finish(code)


def test_pkce_code_exchange_gives_refresh_token_and_scoped_access(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, use_pkce=True, token_access_type="offline", scope=READ)
    assert res.account_id == acct.account_id
    assert res.refresh_token.startswith("rbx_rt_")
    assert sorted(res.scope.split()) == sorted(READ)
    assert dt.timedelta(hours=3, minutes=59) < res.expires_at - dt.datetime.utcnow()
    dbx = sdk_client(up.hostport, up.ca, oauth2_access_token=res.access_token,
                     oauth2_access_token_expiration=res.expires_at,
                     oauth2_refresh_token=res.refresh_token, app_key=app[0])  # fmt: skip
    assert dbx.users_get_current_account().account_id == acct.account_id
    acct.dbx().files_upload(b"hello", "/hello.txt")
    _, resp = dbx.files_download("/hello.txt")
    assert resp.content == b"hello"


def test_refresh_with_the_refresh_token_alone(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, use_pkce=True, token_access_type="offline", scope=READ)
    # What an app keeps between runs: the refresh token and its app key.
    dbx = sdk_client(up.hostport, up.ca, oauth2_refresh_token=res.refresh_token, app_key=app[0])
    assert dbx.users_get_current_account().email == acct.email
    first = dbx._oauth2_access_token
    assert first and first != res.access_token
    dbx.refresh_access_token()
    assert dbx._oauth2_access_token != first
    assert dbx.files_list_folder("").entries == []


def test_secret_flow_online_has_no_refresh_token(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, consumer_secret=app[1], token_access_type="online")
    assert res.refresh_token == ""
    assert res.account_id == acct.account_id
    dbx = sdk_client(up.hostport, up.ca, oauth2_access_token=res.access_token)
    assert dbx.users_get_current_account().account_id == acct.account_id


def test_secret_flow_offline_refreshes_with_the_secret(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, consumer_secret=app[1], token_access_type="offline")
    dbx = sdk_client(up.hostport, up.ca, oauth2_refresh_token=res.refresh_token,
                     app_key=app[0], app_secret=app[1])  # fmt: skip
    assert dbx.users_get_current_account().account_id == acct.account_id
    no_secret = sdk_client(up.hostport, up.ca, oauth2_refresh_token=res.refresh_token,
                           app_key=app[0])  # fmt: skip
    with pytest.raises(BadInputError, match="invalid_client"):
        no_secret.users_get_current_account()


def test_downscoped_refresh_and_missing_scope(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, use_pkce=True, token_access_type="offline", scope=READ)
    dbx = sdk_client(up.hostport, up.ca, oauth2_refresh_token=res.refresh_token,
                     app_key=app[0], scope=["files.metadata.read"])  # fmt: skip
    assert dbx.files_list_folder("").entries == []  # refreshed with scope=files.metadata.read
    with pytest.raises(AuthError) as e:
        dbx.users_get_current_account()
    assert e.value.error.is_missing_scope()
    assert e.value.error.get_missing_scope().required_scope == "account_info.read"
    with pytest.raises(BadInputError, match="invalid_scope"):  # more than was granted
        dbx.refresh_access_token(scope=["files.content.write"])


def test_missing_scope_on_a_route_outside_the_grant_changes_nothing(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, use_pkce=True, scope=["files.metadata.read"])
    dbx = sdk_client(up.hostport, up.ca, oauth2_access_token=res.access_token)
    for call, need in (
        (lambda: dbx.files_upload(b"x", "/x.txt"), "files.content.write"),
        (lambda: dbx.files_create_folder_v2("/d"), "files.content.write"),
        (lambda: dbx.files_download("/x.txt"), "files.content.read"),
        (lambda: dbx.users_get_current_account(), "account_info.read"),
    ):
        with pytest.raises(AuthError) as e:
            call()
        assert e.value.error.get_missing_scope().required_scope == need
    assert acct.dbx().files_list_folder("").entries == []
    assert dbx.files_list_folder("").entries == []


def test_account_tokens_keep_full_access(up, up_target):
    acct = up_target.new_account("oauth")
    dbx = acct.dbx()
    dbx.files_upload(b"x", "/x.txt")
    assert dbx.users_get_current_account().account_id == acct.account_id


def test_revoke_revokes_the_access_token_and_its_refresh_token(up, up_target, app):
    acct = up_target.new_account("oauth")
    res = sign_in(up, app[0], acct.token, use_pkce=True, token_access_type="offline", scope=READ)
    dbx = sdk_client(up.hostport, up.ca, oauth2_refresh_token=res.refresh_token, app_key=app[0])
    dbx.users_get_current_account()
    other = sdk_client(up.hostport, up.ca, oauth2_access_token=res.access_token)
    dbx.auth_token_revoke()
    for client in (
        other,
        sdk_client(up.hostport, up.ca, oauth2_access_token=dbx._oauth2_access_token),
    ):
        with pytest.raises(AuthError) as e:
            client.users_get_current_account()
        assert e.value.error.is_invalid_access_token()
    with pytest.raises(AuthError) as e:  # the SDK maps the 400 invalid_grant to this
        dbx.refresh_access_token()
    assert e.value.error.is_invalid_access_token()
    assert acct.dbx().users_get_current_account().account_id == acct.account_id  # untouched


def test_an_expired_access_token_is_refused_and_the_sdk_refreshes_it(short):
    key, _ = add_app(short.hostport, short.ca, short.admin_token, "Expiry app")
    res = sign_in(short, key, short.token, use_pkce=True, token_access_type="offline", scope=READ)
    wait_for(
        lambda: (
            rpc(short.hostport, short.ca, res.access_token, "users/get_current_account")
            .json()
            .get("error", {})
            .get(".tag")
            == "expired_access_token"
        ),
        30,
        what="the access token to expire",
        poll_s=0.25,
    )
    r = rpc(short.hostport, short.ca, res.access_token, "files/list_folder", {"path": ""})
    assert r.status_code == 401 and r.json()["error"] == {".tag": "expired_access_token"}
    plain = sdk_client(short.hostport, short.ca, oauth2_access_token=res.access_token)
    with pytest.raises(AuthError) as e:
        plain.users_get_current_account()
    assert e.value.error.is_expired_access_token()
    # An app that believes its token still good: the SDK gets expired_access_token, refreshes
    # with its refresh token and retries the call.
    far = dt.datetime.utcnow() + dt.timedelta(days=1)
    dbx = sdk_client(short.hostport, short.ca, oauth2_access_token=res.access_token,
                     oauth2_access_token_expiration=far, oauth2_refresh_token=res.refresh_token,
                     app_key=key)  # fmt: skip
    assert dbx.files_list_folder("").entries is not None
    assert dbx._oauth2_access_token != res.access_token


def test_cluster_wide_code_tokens_and_revocation(cluster, cluster_target):
    """A code issued through one member is redeemed through another; the token works on a
    third; revoked through one, refused by every member at once. A code used twice revokes
    what its first use gave, on every member."""
    hp = cluster_target.hostports
    key, _ = add_app(hp[0], cluster.ca, cluster.admin_token, "Cluster app")
    acct = cluster_target.new_account("oauth")

    def grant():
        flow = HostedFlow(
            hp[1], key, ca_certs=cluster.ca, use_pkce=True, token_access_type="offline"
        )
        code = Browser(hp[0], cluster.ca, acct.token).allow(flow.start())
        return flow, code, flow.finish(code)

    def refused_everywhere(token: str) -> None:
        for member in hp:
            r = rpc(member, cluster.ca, token, "users/get_current_account")
            assert r.status_code == 401 and r.json()["error"][".tag"] == "invalid_access_token"

    _, _, res = grant()
    dbx = sdk_client(hp[2], cluster.ca, oauth2_refresh_token=res.refresh_token, app_key=key)
    assert dbx.users_get_current_account().account_id == acct.account_id
    sdk_client(hp[1], cluster.ca, oauth2_access_token=res.access_token).auth_token_revoke()
    refused_everywhere(res.access_token)
    refused_everywhere(dbx._oauth2_access_token)

    flow, code, res = grant()
    with pytest.raises(requests.HTTPError) as e:  # single-use, whichever member is asked
        HostedFlow(hp[2], key, ca_certs=cluster.ca, use_pkce=True)._finish(
            code, None, flow.code_verifier
        )
    assert e.value.response.json()["error"] == "invalid_grant"
    refused_everywhere(res.access_token)


def test_the_unmodified_sdk_pointed_by_its_environment(up, up_target, app):
    """No subclass: DROPBOX_API_HOST (set by conftest before the SDK was imported) is the
    `raftbox up` address, so the SDK's own default token URL reaches it."""
    import dropbox

    from .sdk import ENV_HOSTPORT

    assert ENV_HOSTPORT == up.hostport
    acct = up_target.new_account("oauth")
    flow = dropbox.DropboxOAuth2FlowNoRedirect(
        app[0], use_pkce=True, token_access_type="offline", ca_certs=up.ca
    )
    flow.requests_session.trust_env = False
    res = flow.finish(Browser(up.hostport, up.ca, acct.token).allow(flow.start()))
    s = dropbox.create_session(ca_certs=up.ca)
    s.trust_env = False
    dbx = dropbox.Dropbox(oauth2_refresh_token=res.refresh_token, app_key=app[0], session=s)
    assert dbx.users_get_current_account().account_id == acct.account_id
