"""A third-party app signs a user in through OAuth2, in a real browser (issue 15): the app is a
small web server on another origin using the official SDK's `DropboxOAuth2Flow` (the redirect
flow, with PKCE and its own state/CSRF check); the user, signed in to raftbox in Chromium, is
sent to the consent page from the app's site, sees the app's name and scopes, and allows or
denies; the SDK finishes the flow from the query the browser brings back."""

from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dropbox.oauth import DropboxOAuth2Flow, NotApprovedException
from tests.api.oauthflow import add_app, sdk_client

from raftbox.testing.procs import free_port

from .conftest import playwright_api

expect = playwright_api.expect


class HostedRedirectFlow(DropboxOAuth2Flow):
    """The SDK's redirect flow, with the host of the URLs it builds given (see oauthflow)."""

    def __init__(self, hostport: str, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.hostport = hostport
        self.requests_session.trust_env = False

    def build_url(self, target, params=None, host=None):  # noqa: ANN001 (the SDK's signature)
        return super().build_url(target, params, self.hostport)


class App:
    """The third party: `/start` sends the browser to raftbox, `/cb` receives the answer."""

    def __init__(self) -> None:
        self.port = free_port()
        # "localhost", not raftbox's 127.0.0.1: another site, so the browser does not send the
        # SameSite=Strict session cookie on the way in (the consent page reloads itself first)
        self.origin = f"http://localhost:{self.port}"
        self.redirect_uri = self.origin + "/cb"
        self.start_url: str = ""
        self.answers: list[dict[str, str]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path, _, query = self.path.partition("?")
                if path == "/start":
                    self.send_response(302)
                    self.send_header("Location", app.start_url)
                    self.end_headers()
                    return
                if path == "/":
                    self._html(b'<a id="go" href="/start">Sign in with raftbox</a>')
                    return
                if path != "/cb":  # e.g. the browser's /favicon.ico
                    self.send_error(404)
                    return
                q = urllib.parse.parse_qs(query, keep_blank_values=True)
                app.answers.append({k: v[0] for k, v in q.items()})
                self._html(b"<p id=done>back at the app</p>")

            def _html(self, content: bytes) -> None:
                body = b"<!doctype html><title>app</title>" + content
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> App:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def third_party(up):
    with App() as a:
        a.key, _ = add_app(up.hostport, up.ca, up.admin_token, "Photo Printer", (a.redirect_uri,))
        yield a


def start_flow(up, app: App) -> tuple[HostedRedirectFlow, dict]:
    session: dict = {}
    flow = HostedRedirectFlow(
        up.hostport,
        app.key,
        app.redirect_uri,
        session,
        "csrf",
        use_pkce=True,
        token_access_type="offline",
        scope=["account_info.read", "files.metadata.read"],
        ca_certs=up.ca,
    )
    app.start_url = flow.start(url_state="back-to/albums")
    return flow, session


def visit_app_and_sign_in_with_raftbox(page, app: App) -> None:
    """A click on the app's page: a navigation another site starts (a typed URL would count
    as same-site and carry the SameSite=Strict cookie)."""
    page.goto(app.origin + "/")
    page.click("#go")


def test_an_app_signs_the_user_in_and_keeps_working(up, page_for, third_party):
    page = page_for()
    flow, _ = start_flow(up, third_party)
    visit_app_and_sign_in_with_raftbox(page, third_party)  # from the app's site
    expect(page.get_by_role("heading")).to_contain_text("Photo Printer")
    expect(page.get_by_text("files.metadata.read")).to_be_visible()
    expect(page.get_by_text("you@localhost")).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    expect(page.locator("#done")).to_be_visible()
    [answer] = third_party.answers
    res = flow.finish(answer)  # the SDK checks its state and exchanges the code (PKCE)
    assert res.url_state == "back-to/albums"
    assert res.refresh_token
    dbx = sdk_client(up.hostport, up.ca, oauth2_refresh_token=res.refresh_token,
                     app_key=third_party.key)  # fmt: skip
    assert dbx.users_get_current_account().email == "you@localhost"
    assert page.dialogs == [] and page.errors == []


def test_deny_goes_back_to_the_app_with_access_denied(up, page_for, third_party):
    page = page_for()
    flow, _ = start_flow(up, third_party)
    visit_app_and_sign_in_with_raftbox(page, third_party)
    page.get_by_role("button", name="Deny").click()
    expect(page.locator("#done")).to_be_visible()
    [answer] = third_party.answers
    assert answer["error"] == "access_denied" and "code" not in answer
    with pytest.raises(NotApprovedException):
        flow.finish(answer)


def test_signed_out_the_user_signs_in_and_comes_back_to_the_consent(up, browser, third_party):
    ctx = browser.new_context(ignore_https_errors=True)
    try:
        page = ctx.new_page()
        flow, _ = start_flow(up, third_party)
        visit_app_and_sign_in_with_raftbox(page, third_party)
        expect(page.get_by_role("heading")).to_contain_text("Sign in to raftbox first")
        expect(page.get_by_role("button", name="Allow")).to_have_count(0)
        assert third_party.answers == []
        page.get_by_role("link", name="Sign in").click()
        page.get_by_label("Email").fill("you@localhost")
        page.get_by_label("Password").fill(up.password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading")).to_contain_text("Photo Printer")  # back here
        page.get_by_role("button", name="Allow").click()
        expect(page.locator("#done")).to_be_visible()
        [answer] = third_party.answers
        assert flow.finish(answer).url_state == "back-to/albums"
    finally:
        ctx.close()
