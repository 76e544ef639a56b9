"""Screenshots of the web interface for the README: docs/img/web-*.png (re-run after a change).

    .venv/bin/python scripts/web_screenshots.py [--out docs/img]

Starts `raftbox up` in a temporary directory (127.0.0.1, a free port), fills an account with a
few folders and files through the official SDK, and photographs the sign-in page, the file
browser, a file's versions, the share dialog of a folder (a second account invited) and the
public page of a shared link opened with no session, in headless Debian Chromium (Playwright,
`executable_path`). It stops the server it started, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dropbox
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
RAFTBOX = str(Path(sys.executable).with_name("raftbox"))
FRIEND = "dana@localhost"  # the account the share dialog invites
SHOTS = ("web-login.png", "web-files.png", "web-versions.png", "web-share.png", "web-link.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    hostport = f"127.0.0.1:{_free_port()}"
    out = open(log, "wb")
    proc = subprocess.Popen([RAFTBOX, "up", "--data", str(data), "--listen", hostport],
                            stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 90
    while "Stop with Ctrl-C" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"raftbox up did not start:\n{log.read_text()}")
        time.sleep(0.1)
    m = re.search(r"you@localhost  password (\S+)", log.read_text())
    assert m, "no password printed"
    return proc, hostport, m.group(1)


def _seed(hostport: str, data: Path) -> None:
    s = dropbox.create_session(ca_certs=str(data / "ca.pem"))
    s.trust_env = False
    dbx = dropbox.Dropbox((data / "token").read_text().strip(), session=s)
    dbx._host_map = {"api": hostport, "content": hostport, "notify": hostport}
    for folder in ("/Photos", "/Projects", "/Taxes 2026"):
        dbx.files_create_folder_v2(folder)
    overwrite = dropbox.files.WriteMode.overwrite
    for text in [b"# Plan\n", b"# Plan\n\n- raft\n", b"# Plan\n\n- raft\n- blocks\n"]:
        dbx.files_upload(text, "/plan.md", mode=overwrite)
    dbx.files_upload(os.urandom(2_400_000), "/holiday.mov")
    dbx.files_upload(b"a,b\n1,2\n" * 4000, "/budget.csv")
    friend = [RAFTBOX, "user", "add", FRIEND, "--data", str(data), "--password-stdin"]
    subprocess.run(friend, input="friend-password-1\n", text=True, check=True, capture_output=True)


def _small(path: Path) -> None:
    """64 colours, optimised: a README picture of a flat UI stays a few tens of KB."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)


def _share_and_link(browser, page, out: Path) -> None:
    """The share dialog of /Projects (FRIEND invited as editor), then plan.md's link page."""
    folder = page.locator("#listing tbody tr").filter(has_text="Projects")
    folder.get_by_role("button", name="Share", exact=True).click()
    dialog = page.get_by_role("dialog", name="Share Projects")
    dialog.get_by_label("Email").fill(FRIEND)
    dialog.get_by_role("button", name="Invite").click()
    expect(dialog.get_by_role("status")).to_have_text(f"Invited {FRIEND} as editor.")
    page.screenshot(path=str(out / "web-share.png"))
    dialog.get_by_role("button", name="Close").click()
    page.locator("#listing tbody tr").filter(has_text="plan.md").get_by_role(
        "button", name="Share link"
    ).click()
    dialog = page.get_by_role("dialog", name="Share link to plan.md")
    dialog.get_by_role("button", name="Create link").click()
    link = dialog.get_by_label("Link", exact=True)
    expect(link).to_have_value(re.compile("/s/"))
    url = link.input_value()
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 960, "height": 400})
    visitor = ctx.new_page()
    visitor.goto(url)
    expect(visitor.get_by_role("link", name="Download")).to_be_visible()
    visitor.screenshot(path=str(out / "web-link.png"))
    ctx.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "up.log"
        proc, hostport, password = _start(data, log)
        try:
            _seed(hostport, data)
            url = f"https://{hostport}"
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                ctx = b.new_context(
                    ignore_https_errors=True, viewport={"width": 960, "height": 540}
                )
                page = ctx.new_page()
                page.goto(url + "/login")
                page.get_by_label("Email").fill("you@localhost")
                page.screenshot(path=str(out / "web-login.png"))
                page.get_by_label("Password").fill(password)
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(url + "/")
                row = page.get_by_role("row").filter(has_text="plan.md")
                expect(row).to_be_visible()
                page.screenshot(path=str(out / "web-files.png"))
                row.get_by_role("button", name="Versions").click()
                expect(page.get_by_role("dialog").get_by_role("row")).to_have_count(4)
                page.screenshot(path=str(out / "web-versions.png"))
                page.get_by_role("dialog").get_by_role("button", name="Close").click()
                _share_and_link(b, page, out)
                b.close()
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    for name in SHOTS:
        _small(out / name)
        print(f"{out / name}  {(out / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
