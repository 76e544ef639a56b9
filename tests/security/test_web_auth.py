"""The web sign-in, attacked over plain HTTP (issue 14): cookie flags, CSRF, security headers,
sessions after logout, admin routes through a session, bad sign-in input, passwords at rest.

One `raftbox up` for the module (`WebUp`); every test uses its own account where it changes
state, and checks through the SDK (bearer token) that a refused request changed nothing.
"""

from __future__ import annotations

import glob
import json
import sqlite3
import subprocess

import dropbox
import pytest
from tests.api.procs import RAFTBOX

from .webup import COOKIE, CSRF, WebUp


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    srv = WebUp(tmp_path_factory.mktemp("webauth"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _folders(up: WebUp, token: str) -> set[str]:
    return {e.name for e in up.dbx(token).files_list_folder("").entries}


def test_cookie_flags_and_no_password_in_answer(up):
    s = up.http()
    r = s.post(up.url + "/web/login", json={"email": "you@localhost", "password": up.password})
    assert r.status_code == 200
    raw = r.headers["Set-Cookie"]
    assert raw.startswith(COOKIE + "=rbs_")
    flags = {p.strip().split("=")[0].lower() for p in raw.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path"} <= flags
    assert "samesite=strict" in raw.lower() and "path=/" in raw.lower()
    assert "domain" not in flags
    body = r.json()
    assert body["admin"] is True and body["email"] == "you@localhost"
    assert up.password not in r.text and len(body["csrf"]) == 64
    assert r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/", "/login", "/static/login.js", "/web/session", "/nope"])
def test_security_headers_on_every_page(up, path):
    r = up.http().get(up.url + path, timeout=30)
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp  # no external source of any kind
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script():
    from raftbox.web.pages import STATIC_DIR

    for page in glob.glob(STATIC_DIR + "/*.html"):
        html = open(page).read()
        assert "<script>" not in html and " on" + "click=" not in html, page
        assert "http://" not in html and "https://" not in html, page  # nothing external
        for tag in html.split("<script")[1:]:
            assert 'src="/static/' in tag.split(">")[0], page


def test_state_change_without_or_with_wrong_csrf_is_refused(up):
    token = up.add_user("csrf@example.test", "csrf-password-1")
    s, csrf = up.login("csrf@example.test", "csrf-password-1")
    for sent in (None, "", "0" * 64, csrf[:-1] + ("0" if csrf[-1] != "0" else "1")):
        r = up.rpc(s, "files/create_folder_v2", {"path": "/evil"}, csrf=sent)
        assert r.status_code == 403, (sent, r.status_code, r.text)
        assert r.json()["error"][".tag"] == "invalid_csrf_token"
    # reads through the API need it too (every /2/ route is a POST)
    assert up.rpc(s, "users/get_current_account").status_code == 403
    assert "evil" not in _folders(up, token)
    # another session's CSRF token is not this one's
    s2, csrf2 = up.login("csrf@example.test", "csrf-password-1")
    assert csrf2 != csrf
    assert up.rpc(s, "files/create_folder_v2", {"path": "/evil"}, csrf=csrf2).status_code == 403
    # with its own token it works
    r = up.rpc(s, "files/create_folder_v2", {"path": "/ok"}, csrf=csrf)
    assert r.status_code == 200, r.text
    assert _folders(up, token) == {"ok"}
    # a logout without the token is refused and ends nothing
    assert s.post(up.url + "/web/logout", timeout=30).status_code == 403
    assert up.rpc(s, "users/get_current_account", csrf=csrf).status_code == 200


def test_session_after_logout_is_refused(up):
    up.add_user("logout@example.test", "logout-password-1")
    s, csrf = up.login("logout@example.test", "logout-password-1")
    cookie = s.cookies.get(COOKIE)
    assert up.rpc(s, "users/get_current_account", csrf=csrf).status_code == 200
    r = s.post(up.url + "/web/logout", headers={CSRF: csrf}, timeout=30)
    assert r.status_code == 200
    assert COOKIE not in s.cookies or not s.cookies.get(COOKIE)
    # the old cookie, replayed by another client, is dead
    replay = up.http()
    replay.cookies.set(COOKIE, cookie, domain=up.hostport.split(":")[0], path="/")
    r = up.rpc(replay, "users/get_current_account", csrf=csrf)
    assert r.status_code == 401
    assert replay.get(up.url + "/web/session", timeout=30).status_code == 401
    assert replay.get(up.url + "/web/download?arg=%7B%22path%22%3A%22%2Fx%22%7D").status_code == 401


def test_new_password_ends_sessions(up):
    up.add_user("passwd@example.test", "first-password-1")
    s, csrf = up.login("passwd@example.test", "first-password-1")
    out = subprocess.run(
        [RAFTBOX, "user", "passwd", "passwd@example.test", "--data", str(up.data),
         "--password-stdin"],
        input="second-password-2\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert up.rpc(s, "users/get_current_account", csrf=csrf).status_code == 401
    bad = up.http().post(
        up.url + "/web/login",
        json={"email": "passwd@example.test", "password": "first-password-1"},
        timeout=30,
    )
    assert bad.status_code == 401
    up.login("passwd@example.test", "second-password-2")


def test_admin_routes_through_a_session(up):
    up.add_user("plain@example.test", "plain-password-1")
    user, ucsrf = up.login("plain@example.test", "plain-password-1")
    admin, acsrf = up.login()
    r = up.rpc(user, "raftbox/admin/list_accounts", csrf=ucsrf)
    assert r.status_code == 401  # a user's session is not an administrator's
    r = up.rpc(user, "raftbox/admin/create_account", {"email": "x@example.test"}, csrf=ucsrf)
    assert r.status_code == 401
    r = up.rpc(admin, "raftbox/admin/list_accounts")  # no CSRF header
    assert r.status_code == 403
    r = up.rpc(admin, "raftbox/admin/list_accounts", csrf=ucsrf)  # another session's token
    assert r.status_code == 403
    r = up.rpc(admin, "raftbox/admin/list_accounts", csrf=acsrf)
    assert r.status_code == 200
    emails = {a["email"] for a in r.json()["accounts"]}
    assert "x@example.test" not in emails and "plain@example.test" in emails
    # a user's bearer token is no admin token either
    token = up.add_user("plain2@example.test", "plain-password-2")
    r = up.http().post(
        up.url + "/2/raftbox/admin/list_accounts",
        json=None,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 401


@pytest.mark.parametrize(
    "kw",
    [
        {"data": b"email=you@localhost&password=x",
         "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"email": "you@localhost"}},
        {"json": {"email": 1, "password": []}},
        {"json": ["you@localhost", "x"]},
        {"json": {"email": "you@localhost", "password": "x" * 10_000}},
        {"json": {"email": "\ud800@x", "password": "x"}},
    ],
)  # fmt: skip
def test_garbled_sign_in_is_refused_and_sets_no_cookie(up, kw):
    s = up.http()
    r = s.post(up.url + "/web/login", timeout=30, **kw)
    assert r.status_code in (400, 401), r.text
    assert "Set-Cookie" not in r.headers


def test_cross_origin_sign_in_is_refused(up):
    s = up.http()
    r = s.post(
        up.url + "/web/login",
        json={"email": "you@localhost", "password": up.password},
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    assert r.status_code == 403 and "Set-Cookie" not in r.headers


def test_wrong_password_and_unknown_email(up):
    for email, pw in (("you@localhost", "wrong-password"), ("nobody@example.test", "whatever1")):
        r = up.http().post(up.url + "/web/login", json={"email": email, "password": pw})
        assert r.status_code == 401
        assert r.json()["error"][".tag"] == "invalid_credentials"
        assert "Set-Cookie" not in r.headers


def test_garbage_cookie_is_refused(up):
    for value in ("x", "rbs_" + "A" * 43, "rbs_" + "é" * 10, "rbs_" + "A" * 500):
        s = up.http()
        s.headers["Cookie"] = f"{COOKIE}={value}"
        r = up.rpc(s, "users/get_current_account", csrf="0" * 64)
        assert r.status_code in (401, 403), r.text
        assert s.get(up.url + "/web/session", timeout=30).status_code == 401


def test_download_endpoint_is_an_attachment(up):
    token = up.add_user("dl@example.test", "dl-password-1")
    up.dbx(token).files_upload(b"<script>alert(1)</script>", "/page.html")
    s, _ = up.login("dl@example.test", "dl-password-1")
    r = s.get(up.url + '/web/download?arg={"path":"/page.html"}', timeout=30)
    assert r.status_code == 200 and r.content == b"<script>alert(1)</script>"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''page.html"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    # another account's session sees its own namespace only
    other, _ = up.login()
    assert other.get(up.url + '/web/download?arg={"path":"/page.html"}').status_code == 409
    # no session, or a bad argument
    assert up.http().get(up.url + '/web/download?arg={"path":"/page.html"}').status_code == 401
    assert s.get(up.url + "/web/download?arg=nope", timeout=30).status_code == 400


def test_disabled_account_session_is_refused(up):
    token = up.add_user("dis@example.test", "dis-password-1")
    s, csrf = up.login("dis@example.test", "dis-password-1")
    admin, acsrf = up.login()
    r = up.rpc(admin, "raftbox/admin/disable_account", {"email": "dis@example.test"}, csrf=acsrf)
    assert r.status_code == 200
    r = up.rpc(s, "users/get_current_account", csrf=csrf)
    assert r.status_code == 401 and r.json()["error"][".tag"] == "user_suspended"
    with pytest.raises(dropbox.exceptions.AuthError):
        up.dbx(token).users_get_current_account()


def test_passwords_never_stored_in_clear(up):
    pw = "Clear-Text-Canary-4242"
    up.add_user("canary@example.test", pw)
    up.login("canary@example.test", pw)
    hits = []
    for path in up.data.rglob("*"):
        if path.is_file() and pw.encode() in path.read_bytes():
            hits.append(str(path))
    assert hits == []
    db = sqlite3.connect(f"file:{up.data / 'meta.sqlite3'}?mode=ro", uri=True)
    hashes = [r[0] for r in db.execute("SELECT password_hash FROM account_auth")]
    db.close()
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert up.proc.output().count(up.password) == 1  # printed once, never logged
    assert pw not in up.proc.output()


def test_set_password_route_is_admin_only_and_checks_its_input(up):
    token = up.add_user("target@example.test", "target-password-1")
    route = up.url + "/2/raftbox/admin/set_password"
    body = {"email": "target@example.test", "password": "taken-over-1", "admin": True}
    h = up.http()
    assert h.post(route, json=body, timeout=30).status_code == 401  # no credential
    r = h.post(route, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 401  # a user's token
    s, csrf = up.login("target@example.test", "target-password-1")
    assert up.rpc(s, "raftbox/admin/set_password", body, csrf=csrf).status_code == 401
    admin = {"Authorization": f"Bearer {up.admin_token}"}
    for bad, status in (
        ({"email": "target@example.test", "password": "short"}, 400),
        ({"email": "target@example.test", "password": "x" * 2000}, 400),
        ({"email": "target@example.test", "password": 12345678}, 400),
        ({"email": "target@example.test", "admin": "yes"}, 400),
        ({"email": "nobody@example.test", "password": "long-enough-1"}, 409),
        ({"password": "long-enough-1"}, 400),
    ):
        r = h.post(route, json=bad, headers=admin, timeout=30)
        assert r.status_code == status, (bad, r.text)
    # nothing changed: the old password works, the account is no administrator, the session lives
    assert up.rpc(s, "users/get_current_account", csrf=csrf).status_code == 200
    s2, csrf2 = up.login("target@example.test", "target-password-1")
    assert up.rpc(s2, "raftbox/admin/status", csrf=csrf2).status_code == 401


def test_download_zip_attacked(up):
    token = up.add_user("zipsec@example.test", "zipsec-password-1")
    up.dbx(token).files_upload(b"secret", "/Private/s.txt")
    s, _ = up.login("zipsec@example.test", "zipsec-password-1")
    web = up.url + "/web/download_zip?arg="
    assert up.http().get(web + '{"path":"/Private"}', timeout=30).status_code == 401
    other, _ = up.login()  # another account: its own namespace only
    assert other.get(web + '{"path":"/Private"}', timeout=30).status_code == 409
    me = up.dbx(token).users_get_current_account().root_info.root_namespace_id
    r = other.get(web + json.dumps({"path": f"ns:{me}/Private"}), timeout=30)
    assert r.status_code == 409 and "not_found" in r.text
    for arg in ("nope", '{"path": 1}', '{"path":"rev:0123456789abcdef"}', '{"path":"/a\\u0000"}'):
        r = s.get(web + arg, timeout=30)
        assert r.status_code in (400, 409), (arg, r.status_code, r.text)
    r = s.get(web + '{"path":"/Private"}', timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == "attachment; filename*=UTF-8''Private.zip"
    # the API route wants a token like every other
    r = up.http().post(
        up.url + "/2/files/download_zip", headers={"Dropbox-API-Arg": '{"path":"/Private"}'}
    )
    assert r.status_code == 401


def test_chunked_sign_in_body(up):
    def body(parts):
        yield from parts

    pw = json.dumps(up.password)
    parts = [b'{"email": "you@', b'localhost", "pass', b'word": ' + pw.encode() + b"}"]
    r = up.http().post(
        up.url + "/web/login",
        data=body(parts),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    big = (b"x" * 1000 for _ in range(100))  # 100 KB, chunked: refused, no cookie
    r = up.http().post(
        up.url + "/web/login", data=big, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code in (400, 401) and "Set-Cookie" not in r.headers
