"""Helpers for the OAuth2 tests (raftbox.api.oauth): a server with a chosen access token
lifetime, apps made with `raftbox app add`, a user's "browser" on the consent page, and the
official SDK's own OAuth2 helpers pointed at a raftbox address.

Pointing the SDK: its OAuth2 helpers build `https://{API_HOST}/oauth2/token`, where API_HOST is
read from DROPBOX_API_HOST once, at import, and bound as a default argument. The SDK lets a
caller pass the host instead (`DropboxOAuth2Flow*.build_url(..., host)`,
`Dropbox.refresh_access_token(host=...)`), so `HostedFlow` and `HostedDropbox` give it: the
SDK's code runs unchanged, with the address of the server under test (a `raftbox up`, or any
member of a cluster). No hosts file or mount namespace is needed for that.

Signing in: until the web sign-in (issue 14) is merged, `/oauth2/authorize` takes the user's
full-access account token as `Authorization: Bearer` (`raftbox.api.oauth.OAuthRoutes.signed_in`);
`Browser` is that user.
"""

from __future__ import annotations

import html
import re
import subprocess
import urllib.parse
from pathlib import Path

import dropbox
import requests
from dropbox.oauth import DropboxOAuth2FlowNoRedirect

from .procs import HOST, RAFTBOX, Proc


class OAuthUp:
    """`raftbox up` with `--oauth-access-ttl-s` (and whatever else `extra` says)."""

    def __init__(self, base: Path, port: int, access_ttl_s: float, extra: tuple = ()) -> None:
        self.data = base / "up-data"
        self.hostport = f"{HOST}:{port}"
        args = [RAFTBOX, "up", "--data", str(self.data), "--listen", self.hostport,
                "--oauth-access-ttl-s", str(access_ttl_s), *extra]  # fmt: skip
        self.proc = Proc("raftbox up (oauth)", args, base / "up.log")
        self.token = self.ca = self.admin_token = ""

    def start(self, timeout_s: float = 60.0) -> None:
        self.proc.start()
        self.proc.wait_output("Stop with Ctrl-C", timeout_s)
        self.token = (self.data / "token").read_text().strip()
        self.admin_token = (self.data / "admin.token").read_text().strip()
        self.ca = str(self.data / "ca.pem")

    def stop(self) -> None:
        self.proc.stop()


def add_app(
    hostport: str,
    ca: str,
    admin_token: str,
    name: str = "Test app",
    redirect_uris: tuple[str, ...] = (),
    scopes: tuple[str, ...] = (),
) -> tuple[str, str]:
    """`raftbox app add` against a running server: (app key, app secret)."""
    args = [RAFTBOX, "app", "add", name, "--server", f"https://{hostport}",
            "--admin-token", admin_token, "--ca", ca]  # fmt: skip
    for u in redirect_uris:
        args += ["--redirect-uri", u]
    for s in scopes:
        args += ["--scope", s]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines()[-2:])
    return lines["app_key"], lines["app_secret"]


def session(ca: str) -> requests.Session:
    s = requests.Session()
    s.verify = ca
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
    return s


class Browser:
    """A user at the consent page, signed in with their account token."""

    def __init__(self, hostport: str, ca: str, token: str | None) -> None:
        self.hostport = hostport
        self.s = session(ca)
        if token:
            self.s.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return f"https://{self.hostport}{path}"

    def open(self, authorize_url: str) -> requests.Response:
        """GET the authorize URL an app built (whatever its host: sent to our server)."""
        p = urllib.parse.urlsplit(authorize_url)
        return self.s.get(self.url(f"{p.path}?{p.query}"), allow_redirects=False, timeout=30)

    def authorize(self, params: dict[str, str]) -> requests.Response:
        return self.s.get(
            self.url("/oauth2/authorize"), params=params, allow_redirects=False, timeout=30
        )

    def submit(self, page: requests.Response, decision: str = "allow", **override: str):
        """POST the consent form of `page` (its hidden fields, with `override`)."""
        fields = form_fields(page.text)
        assert "csrf" in fields, page.text
        fields.update(decision=decision, **override)
        return self.s.post(
            self.url("/oauth2/authorize"), data=fields, allow_redirects=False, timeout=30
        )

    def allow(self, authorize_url: str) -> str:
        """Open the URL, allow, and return the code (from the redirect or the page)."""
        page = self.open(authorize_url)
        assert page.status_code == 200, page.text
        done = self.submit(page)
        if done.status_code == 302:
            return query_of(done.headers["Location"])["code"]
        assert done.status_code == 200, done.text
        return shown_code(done.text)


def form_fields(text: str) -> dict[str, str]:
    return {
        html.unescape(k): html.unescape(v)
        for k, v in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', text)
    }


def shown_code(text: str) -> str:
    m = re.search(r'<code id="code">([^<]+)</code>', text)
    assert m, text
    return html.unescape(m.group(1))


def query_of(url: str) -> dict[str, str]:
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    return {k: v[0] for k, v in q.items()}


class HostedFlow(DropboxOAuth2FlowNoRedirect):
    """The SDK's `DropboxOAuth2FlowNoRedirect`, with the host of every URL it builds given."""

    def __init__(self, hostport: str, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.hostport = hostport
        self.requests_session.trust_env = False

    def build_url(self, target, params=None, host=None):  # noqa: ANN001 (the SDK's signature)
        return super().build_url(target, params, self.hostport)


class HostedDropbox(dropbox.Dropbox):
    """`dropbox.Dropbox` whose token refreshes go to `token_host` (the SDK's `host` argument)."""

    token_host = ""

    def refresh_access_token(self, host=None, scope=None):  # noqa: ANN001
        return super().refresh_access_token(host=host or self.token_host, scope=scope)


def sdk_client(hostport: str, ca: str, **kw) -> HostedDropbox:
    s = dropbox.create_session(ca_certs=ca)
    s.trust_env = False
    dbx = HostedDropbox(session=s, **kw)
    dbx.token_host = hostport
    dbx._host_map = {"api": hostport, "content": hostport, "notify": hostport}
    return dbx


def token_post(hostport: str, ca: str, data: dict, auth: tuple[str, str] | None = None):
    with session(ca) as s:
        return s.post(f"https://{hostport}/oauth2/token", data=data, auth=auth, timeout=30)


def rpc(hostport: str, ca: str, token: str, route: str, arg: object = None):
    with session(ca) as s:
        return s.post(
            f"https://{hostport}/2/{route}",
            json=arg,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
