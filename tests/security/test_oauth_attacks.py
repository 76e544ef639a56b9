"""Attacks on OAuth2 (raftbox.api.oauth): against `/oauth2/authorize`, `/oauth2/token` and the
app admin routes of a real `raftbox up`. Each test is one attack; each checks that it got a
clear OAuth2 error (never a 5xx) and that it gave the attacker nothing — no code, no token, no
redirect to a place the app did not register."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse

import pytest

from api.oauthflow import Browser, add_app, form_fields, query_of, rpc, shown_code, token_post

from .webup import WebUp

URI = "https://app.example/cb"
VERIFIER = "V" * 50


def s256(v: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).decode().rstrip("=")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    srv = WebUp(tmp_path_factory.mktemp("oauth-attacks"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def apps(up):
    a = add_app(up.hostport, up.ca, up.admin_token, "App A", (URI, "http://127.0.0.1:9/cb"))
    b = add_app(up.hostport, up.ca, up.admin_token, "App B", ("https://b.example/cb",))
    return {"a": a, "b": b}


def params(key: str, **kw: str) -> dict[str, str]:
    p = {"response_type": "code", "client_id": key, "redirect_uri": URI, "state": "st"}
    p.update(code_challenge=s256(VERIFIER), code_challenge_method="S256")
    p.update(kw)
    return {k: v for k, v in p.items() if v is not None}


def browser(up) -> Browser:
    return Browser(up.hostport, up.ca, up.token)


def get_code(up, key: str, **kw: str) -> str:
    b = browser(up)
    page = b.authorize(params(key, **kw))
    assert page.status_code == 200, page.text
    done = b.submit(page)
    if done.status_code == 200:
        return shown_code(done.text)
    assert done.status_code == 302, done.text
    return query_of(done.headers["Location"])["code"]


def redeem(up, key: str, code: str, **kw: str):
    data = {"grant_type": "authorization_code", "code": code, "client_id": key}
    data.update(redirect_uri=URI, code_verifier=VERIFIER)
    data.update(kw)
    return token_post(up.hostport, up.ca, {k: v for k, v in data.items() if v is not None})


def oauth_error(r, error: str, status: int = 400) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"] == error, r.text
    assert "access_token" not in r.json()


def works(up, token: str) -> bool:
    return rpc(up.hostport, up.ca, token, "files/list_folder", {"path": ""}).status_code == 200


def test_a_code_used_twice_is_refused_and_revokes_the_first_tokens(up, apps):
    key = apps["a"][0]
    code = get_code(up, key, token_access_type="offline")
    first = redeem(up, key, code)
    assert first.status_code == 200, first.text
    assert works(up, first.json()["access_token"])
    oauth_error(redeem(up, key, code), "invalid_grant")
    assert not works(up, first.json()["access_token"])
    refresh = {"grant_type": "refresh_token", "client_id": key}
    refresh["refresh_token"] = first.json()["refresh_token"]
    oauth_error(token_post(up.hostport, up.ca, refresh), "invalid_grant")


def test_a_code_needs_the_redirect_uri_it_was_issued_for(up, apps):
    key = apps["a"][0]
    code = get_code(up, key)
    oauth_error(redeem(up, key, code, redirect_uri="http://127.0.0.1:9/cb"), "invalid_grant")
    oauth_error(redeem(up, key, code, redirect_uri=None), "invalid_grant")
    assert redeem(up, key, code).status_code == 200  # the refusals did not use it up


def test_a_pkce_code_needs_its_verifier(up, apps):
    key = apps["a"][0]
    code = get_code(up, key)
    oauth_error(redeem(up, key, code, code_verifier="W" * 50), "invalid_grant")
    oauth_error(redeem(up, key, code, code_verifier=None), "invalid_request")
    oauth_error(redeem(up, key, code, code_verifier="short"), "invalid_request")
    assert redeem(up, key, code).status_code == 200


def test_a_wrong_client_secret_is_invalid_client(up, apps):
    key, secret = apps["a"]
    code = get_code(up, key, code_challenge=None, code_challenge_method=None)
    oauth_error(redeem(up, key, code, code_verifier=None), "invalid_client")  # no secret
    oauth_error(
        redeem(up, key, code, code_verifier=None, client_secret="x" + secret), "invalid_client"
    )
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": URI}
    r = token_post(up.hostport, up.ca, data, auth=(key, "wrong"))
    oauth_error(r, "invalid_client", 401)
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    ok = token_post(up.hostport, up.ca, data, auth=(key, secret))
    assert ok.status_code == 200, ok.text


def test_another_apps_code_or_refresh_token(up, apps):
    (key_a, _), (key_b, secret_b) = apps["a"], apps["b"]
    code = get_code(up, key_a, token_access_type="offline")
    oauth_error(redeem(up, key_b, code, client_secret=secret_b), "invalid_grant")
    got = redeem(up, key_a, code)
    assert got.status_code == 200
    data = {"grant_type": "refresh_token", "refresh_token": got.json()["refresh_token"]}
    oauth_error(token_post(up.hostport, up.ca, data, auth=(key_b, secret_b)), "invalid_grant")
    oauth_error(
        token_post(up.hostport, up.ca, {**data, "client_id": "nosuchapp00000"}), "invalid_client"
    )


@pytest.mark.parametrize(
    "redirect",
    [
        "https://evil.example/cb",
        "https://app.example/cb/../../evil",
        "https://app.example/cb?next=https://evil.example",
        "https://app.example/cb#x",
        "https://app.example.evil.example/cb",
        "https://APP.example/cb",
        "https://app.example/cb/",
        "//evil.example/cb",
        "javascript:alert(1)",
        "https://app.example/cb\r\nLocation: https://evil.example",
        "",
    ],
)
def test_an_unregistered_redirect_uri_is_never_redirected_to(up, apps, redirect):
    b = browser(up)
    r = b.authorize(params(apps["a"][0], redirect_uri=redirect))
    assert r.status_code == 400 and "Location" not in r.headers
    assert "<form" not in r.text
    r = b.authorize(params("nosuchapp00000", redirect_uri=URI))  # nor for an unknown app
    assert r.status_code == 400 and "Location" not in r.headers


@pytest.mark.parametrize(
    "change, error",
    [
        (dict(response_type="token"), "unsupported_response_type"),
        (dict(scope="files.content.read nonsense.scope"), "invalid_scope"),
        (dict(code_challenge_method="S512"), "invalid_request"),
        (dict(code_challenge="tooshort"), "invalid_request"),
        (dict(token_access_type="forever"), "invalid_request"),
    ],
)
def test_errors_go_back_only_to_the_registered_uri_with_the_state(up, apps, change, error):
    r = browser(up).authorize(params(apps["a"][0], state="s t&=é", **change))
    assert r.status_code == 302
    loc = r.headers["Location"]
    assert loc.startswith(URI + "?")
    q = query_of(loc)
    assert q["error"] == error and q["state"] == "s t&=é" and "code" not in q


@pytest.mark.parametrize(
    "state", ["plain", "a b&c=d/é%20+?#", "x" * 1500, "\u202e\u0000-ctl", None]
)
def test_the_state_comes_back_unchanged(up, apps, state):
    b = browser(up)
    page = b.authorize(params(apps["a"][0], state=state))
    assert page.status_code == 200
    for decision in ("allow", "deny"):
        done = b.submit(page, decision=decision)
        assert done.status_code == 302
        q = query_of(done.headers["Location"])
        assert q.get("state") == state
        assert ("code" in q) == (decision == "allow")
        assert q.get("error") == (None if decision == "allow" else "access_denied")


def test_the_consent_form_is_bound_to_the_user_the_request_and_time(up, apps):
    key = apps["a"][0]
    alice, bob = (
        browser(up),
        Browser(up.hostport, up.ca, up.add_user("bob@example.test", "pw-bob-12345")),
    )
    page = alice.authorize(params(key, scope="files.metadata.read"))
    at, mac = form_fields(page.text)["csrf"].split(".")
    for override in (
        {"csrf": ""},
        {"csrf": "1.deadbeef"},
        {"csrf": at + ".é" + mac[2:]},  # not ASCII
        {"csrf": str(int(at) + 600_000) + "." + mac},  # from the future
        {"scope": "files.metadata.read files.content.write"},  # widened after consent
        {"redirect_uri": "http://127.0.0.1:9/cb"},  # another registered URI
        {"code_challenge": s256("A" * 50)},
        {"token_access_type": "offline"},
        {"csrf": str(int(at) - 1) + "." + mac},  # another time
    ):
        r = alice.submit(page, **override)
        assert r.status_code == 403 and "Location" not in r.headers, override
    r = bob.submit(page)  # Bob replaying Alice's form
    assert r.status_code == 403 and "Location" not in r.headers
    assert alice.submit(page).status_code == 302


def test_without_a_session_there_is_no_consent(up, apps):
    anon = Browser(up.hostport, up.ca, None)
    r = anon.authorize(params(apps["a"][0]))
    assert r.status_code == 200 and "<form" not in r.text  # retried from this site first
    assert "_rb_same_site=1" in r.text
    r = anon.authorize({**params(apps["a"][0]), "_rb_same_site": "1"})
    assert (
        r.status_code == 401 and "<form" not in r.text and 'href="/login?next=%2Foauth2' in r.text
    )
    page = browser(up).authorize(params(apps["a"][0]))
    r = anon.submit(page)
    assert r.status_code == 401 and "Location" not in r.headers


def test_an_apps_token_cannot_consent_for_the_user(up, apps):
    key = apps["a"][0]
    got = redeem(up, key, get_code(up, key))
    app_browser = Browser(up.hostport, up.ca, got.json()["access_token"])
    r = app_browser.authorize({**params(key), "_rb_same_site": "1"})
    assert r.status_code == 401 and "<form" not in r.text


def test_a_browser_session_consents_with_the_forms_token(up, apps):
    s, _csrf = up.login()
    b = Browser(up.hostport, up.ca, None)
    b.s = s
    page = b.authorize(params(apps["a"][0]))
    assert page.status_code == 200 and "you@localhost" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    r = b.submit(page)
    assert r.status_code == 302 and "code" in query_of(r.headers["Location"])
    r = s.post(b.url("/web/logout"), headers={"X-Raftbox-CSRF": _csrf}, timeout=30)
    assert r.status_code == 200
    assert b.submit(page).status_code == 401  # the session is over


def test_the_app_name_is_text_on_the_consent_page(up):
    name = '<script>alert(1)</script><img src=x onerror=alert(2)>"'
    key, _ = add_app(up.hostport, up.ca, up.admin_token, name, (URI,))
    page = browser(up).authorize(params(key))
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize(
    "data, error",
    [
        ({}, "invalid_request"),
        ({"grant_type": "password", "client_id": "x"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "client_id": "x"}, "invalid_client"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": ["authorization_code", "refresh_token"]}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "x" * 5000}, "invalid_request"),
    ],
)
def test_bad_token_requests_get_oauth_errors(up, data, error):
    oauth_error(token_post(up.hostport, up.ca, data), error)


def test_garbled_token_bodies(up, apps):
    base = f"https://{up.hostport}/oauth2/token"
    b = browser(up).s
    for body, ctype in (
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b'{"grant_type": "authorization_code"}', "application/json"),
        (b"grant_type=authorization_code&code=%ZZ", "application/x-www-form-urlencoded"),
        (b"a" * 200_000, "application/x-www-form-urlencoded"),
    ):
        r = b.post(base, data=body, headers={"Content-Type": ctype}, timeout=30)
        assert 400 <= r.status_code < 500, (body[:40], r.status_code, r.text)


def test_the_app_routes_are_for_the_operator(up):
    body = {"name": "x", "redirect_uris": [URI]}
    r = rpc(up.hostport, up.ca, up.token, "raftbox/admin/add_app", body)
    assert r.status_code == 401
    for bad in ("http://app.example/cb", "https://app.example/cb#f", "javascript:alert(1)", "x"):
        body = {"name": "x", "redirect_uris": [bad]}
        r = rpc(up.hostport, up.ca, up.admin_token, "raftbox/admin/add_app", body)
        assert r.status_code == 400, (bad, r.text)
    r = rpc(
        up.hostport,
        up.ca,
        up.admin_token,
        "raftbox/admin/add_app",
        {"name": "x", "scopes": ["root"]},
    )
    assert r.status_code == 400
    r = rpc(up.hostport, up.ca, up.admin_token, "raftbox/admin/remove_app", {"app_key": "nope"})
    assert r.status_code == 409 and r.json()["error"][".tag"] == "app_not_found"


def test_a_removed_apps_tokens_stop_working(up):
    key, _ = add_app(up.hostport, up.ca, up.admin_token, "Short-lived app", (URI,))
    got = redeem(up, key, get_code(up, key))
    token = got.json()["access_token"]
    assert works(up, token)
    r = rpc(up.hostport, up.ca, up.admin_token, "raftbox/admin/remove_app", {"app_key": key})
    assert r.status_code == 200
    assert not works(up, token)


def test_the_registered_query_of_a_redirect_uri_is_kept(up):
    uri = "https://q.example/cb?tenant=7"
    key, _ = add_app(up.hostport, up.ca, up.admin_token, "Query app", (uri,))
    b = browser(up)
    done = b.submit(b.authorize(params(key, redirect_uri=uri)))
    loc = urllib.parse.urlsplit(done.headers["Location"])
    assert loc.netloc == "q.example" and query_of(done.headers["Location"])["tenant"] == "7"


def test_failed_token_requests_are_rate_limited_per_address(up):
    """Last in this module: it uses up this address's budget."""
    data = {
        "grant_type": "authorization_code",
        "code": "no-such-code",
        "client_id": "nosuchapp00000",
    }
    statuses = [token_post(up.hostport, up.ca, data).status_code for _ in range(40)]
    assert 429 in statuses
    r = token_post(up.hostport, up.ca, data)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert set(statuses) <= {400, 429}
