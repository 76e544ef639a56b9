"""Browser tests of the web interface: Debian's Chromium (`/usr/bin/chromium`) driven by
Playwright's Python package through `executable_path` (no `playwright install`), headless.

Fixtures: `up` (one `raftbox up` per module, its first account's printed password), `browser`
(one Chromium per module), `page_for(email, password)` (a fresh context signed in through the
sign-in page, with the dialogs it opened recorded in `page.dialogs`). Waiting is Playwright's
(an expectation with a deadline), never a sleep.
"""

from __future__ import annotations

import os
import shutil

import pytest
from tests.security.webup import WebUp

CHROMIUM = "/usr/bin/chromium"
EXPECT_TIMEOUT_MS = 30_000

import playwright.sync_api as playwright_api  # noqa: E402 (pinned in the test extra)

if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
    raise RuntimeError(
        "no Chromium: install the Debian package chromium (make debs; make test does)"
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory, request):
    srv = WebUp(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    playwright_api.expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


def sign_in(page, url: str, email: str, password: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture
def page_for(browser, up):
    contexts = []

    def make(email: str = "you@localhost", password: str | None = None, url: str | None = None):
        ctx = browser.new_context(ignore_https_errors=True, accept_downloads=True)
        ctx.set_default_timeout(EXPECT_TIMEOUT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.dialogs = []
        page.errors = []

        def on_dialog(d):
            page.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        base = url or up.url
        sign_in(page, base, email, up.password if password is None else password)
        page.wait_for_url(base + "/")
        playwright_api.expect(page.get_by_role("button", name="Log out")).to_be_visible()
        return page

    yield make
    for ctx in contexts:
        ctx.close()
