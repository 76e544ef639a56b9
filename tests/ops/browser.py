"""Headless Chromium for the page tests: Debian's `/usr/bin/chromium` driven by Playwright's
Python package (`executable_path`; never `playwright install`). A test that needs it fails
when either is missing, saying which (`make test` installs both: the test extra and `debs`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium `Browser`, closed on exit."""
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("playwright is required: pip install -e '.[test]'", pytrace=False)
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is required (Debian package chromium: `make debs`)", pytrace=False)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
