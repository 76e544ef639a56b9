"""Sharing in the web interface, in a real headless Chromium against `raftbox up` (issue 14):
a folder shared with an editor and a viewer from the page, accepted in the invitees' pages,
a change arriving in an open page without reload, a viewer's page without write actions,
members' access changed and removed, Leave and Unshare; shared links created in the page and
opened in a fresh browser context (no session) — download, password, revoke; a folder name with
markup stays text in the share dialog.

Every outcome is checked with the official SDK (bearer tokens of the same accounts).
"""

from __future__ import annotations

import re

import dropbox
from playwright.sync_api import expect

from raftbox.testing.procs import wait_for

MARKUP = "<b onclick=alert(2)>bold"


def _row(page, name: str):
    return page.locator("#listing tbody tr").filter(
        has=page.get_by_role("cell", name=name, exact=True)
    )


def _account(up, tag: str):
    email, pw = f"{tag}@example.test", f"{tag}-password-1"
    token = up.add_user(email, pw)
    return email, pw, up.dbx(token)


def _share_dialog(page, name: str):
    _row(page, name).get_by_role("button", name="Share", exact=True).click()
    dialog = page.get_by_role("dialog", name=f"Share {name}")
    expect(dialog).to_be_visible()
    return dialog


def _invite(dialog, email: str, level: str) -> None:
    dialog.get_by_label("Email").fill(email)
    dialog.get_by_label("Access", exact=True).select_option(level)
    dialog.get_by_role("button", name="Invite").click()
    expect(dialog.get_by_role("status")).to_have_text(f"Invited {email} as {level}.")
    expect(dialog.get_by_role("row").filter(has_text=email)).to_be_visible()


def _access(dbx, sfid: str) -> dict[str, str]:
    m = dbx.sharing_list_folder_members(sfid)
    out = {u.user.email: u.access_type._tag for u in m.users}
    out.update({i.invitee.get_email(): i.access_type._tag for i in m.invitees})
    return out


def test_share_with_editor_and_viewer(up, page_for):
    a_email, a_pw, alice = _account(up, "alice")
    b_email, b_pw, bob = _account(up, "bob")
    c_email, c_pw, carol = _account(up, "carol")
    alice.files_upload(b"plan", "/Team/plan.txt")
    page = page_for(a_email, a_pw)
    dialog = _share_dialog(page, "Team")
    expect(dialog).to_contain_text("Not shared yet")
    _invite(dialog, b_email, "editor")
    _invite(dialog, c_email, "viewer")
    dialog.get_by_role("button", name="Close").click()
    sfid = alice.files_get_metadata("/Team").shared_folder_id
    assert sfid
    assert _access(alice, sfid) == {a_email: "owner", b_email: "editor", c_email: "viewer"}

    # bob accepts in his page and watches the folder: alice's new file arrives without reload
    bpage = page_for(b_email, b_pw)
    invitations = bpage.get_by_role("region", name="Shared with you")
    expect(invitations).to_contain_text("Team")
    invitations.get_by_role("button", name="Accept").click()
    expect(_row(bpage, "Team")).to_be_visible()
    expect(invitations).to_be_hidden()
    bpage.get_by_role("link", name="Team", exact=True).click()
    expect(_row(bpage, "plan.txt")).to_be_visible()
    bpage.evaluate("window.__marker = 7")
    alice.files_upload(b"from alice", "/Team/news.txt")
    expect(_row(bpage, "news.txt")).to_be_visible(timeout=60_000)
    assert bpage.evaluate("window.__marker") == 7
    with bpage.expect_download() as dl:  # a file of the shared folder, from bob's page
        _row(bpage, "news.txt").get_by_role("button", name="Download").click()
    assert open(dl.value.path(), "rb").read() == b"from alice"
    # an editor writes from the page
    bpage.get_by_role("button", name="New folder").click()
    bpage.get_by_role("textbox").fill("bob-made")
    bpage.get_by_role("button", name="Create").click()
    expect(_row(bpage, "bob-made")).to_be_visible()
    assert "bob-made" in {e.name for e in alice.files_list_folder("/Team").entries}

    # carol (viewer): no write action inside, and a write the page would send is refused
    cpage = page_for(c_email, c_pw)
    cpage.get_by_role("region", name="Shared with you").get_by_role("button", name="Accept").click()
    cpage.get_by_role("link", name="Team", exact=True).click()
    news = _row(cpage, "news.txt")
    expect(news).to_be_visible()
    expect(news.get_by_role("button", name="Download")).to_be_visible()
    for word in ("Rename", "Move", "Delete"):
        expect(news.get_by_role("button", name=word)).to_have_count(0)
    expect(cpage.get_by_role("button", name="New folder")).to_be_hidden()
    expect(cpage.get_by_role("button", name="Upload files")).to_be_hidden()
    refused = cpage.evaluate(
        "RB.rpc('files/create_folder_v2', {path: '/Team/carol'}).then(() => 'ok', RBShare.why)"
    )
    assert "you can only view this shared folder" in refused and "no_write_permission" in refused
    assert "carol" not in {e.name for e in alice.files_list_folder("/Team").entries}
    cpage.get_by_role("link", name="All files").click()
    dialog = _share_dialog(cpage, "Team")  # a viewer: sees the members, cannot invite
    expect(dialog.get_by_role("row").filter(has_text=b_email)).to_contain_text("editor")
    expect(dialog.get_by_role("button", name="Leave")).to_be_visible()
    expect(dialog.get_by_role("button", name="Invite")).to_be_hidden()
    expect(dialog.get_by_role("button", name="Unshare")).to_be_hidden()
    dialog.get_by_role("button", name="Close").click()

    # the owner sees the members, changes carol to editor, removes bob
    dialog = _share_dialog(page, "Team")
    expect(dialog.get_by_role("row").filter(has_text=a_email)).to_contain_text("owner")
    dialog.get_by_label(f"Access of {c_email}").select_option("editor")
    expect(dialog.get_by_role("status")).to_have_text(f"{c_email} is now editor.")
    assert _access(alice, sfid)[c_email] == "editor"
    dialog.get_by_role("row").filter(has_text=b_email).get_by_role("button", name="Remove").click()
    expect(dialog.get_by_role("status")).to_have_text(f"Removed {b_email}.")
    wait_for(lambda: b_email not in _access(alice, sfid), 30, "bob removed")
    expect(dialog.get_by_role("button", name="Unshare")).to_be_visible()
    expect(dialog.get_by_role("button", name="Leave")).to_be_hidden()
    assert page.errors == [] and bpage.errors == [] and cpage.errors == []


def test_leave_and_unshare(up, page_for):
    a_email, a_pw, alice = _account(up, "owner2")
    b_email, b_pw, bob = _account(up, "member2")
    alice.files_create_folder_v2("/Proj")
    sfid = alice.sharing_share_folder("/Proj").get_complete().shared_folder_id
    member = dropbox.sharing.AddMember(dropbox.sharing.MemberSelector.email(b_email))
    alice.sharing_add_folder_member(sfid, [member])
    bob.sharing_mount_folder(sfid)
    bpage = page_for(b_email, b_pw)
    dialog = _share_dialog(bpage, "Proj")
    expect(dialog.get_by_role("button", name="Unshare")).to_be_hidden()
    dialog.get_by_role("button", name="Leave").click()
    expect(_row(bpage, "Proj")).to_have_count(0)
    assert b_email not in _access(alice, sfid)
    page = page_for(a_email, a_pw)
    dialog = _share_dialog(page, "Proj")
    dialog.get_by_role("button", name="Unshare").click()
    expect(page.locator("#status")).to_have_text("“Proj” is no longer shared.")
    wait_for(lambda: alice.files_get_metadata("/Proj").shared_folder_id is None, 30, "unshared")


def _fresh(browser):
    return browser.new_context(ignore_https_errors=True, accept_downloads=True)


def test_links_created_opened_revoked(up, browser, page_for):
    email, pw, dbx = _account(up, "linker")
    data = bytes(range(256)) * 40
    dbx.files_upload(data, "/report.bin")
    dbx.files_upload(b"top secret", "/secret.txt")
    page = page_for(email, pw)

    _row(page, "report.bin").get_by_role("button", name="Share link").click()
    dialog = page.get_by_role("dialog", name="Share link to report.bin")
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog.get_by_label("Link", exact=True)).to_have_value(re.compile(r"^https://.*/s/"))
    url = dialog.get_by_label("Link", exact=True).input_value()
    expect(dialog).to_contain_text("Anyone with the link, with no expiry.")
    dialog.get_by_role("button", name="Copy link").click()
    expect(dialog.get_by_role("status")).to_have_text("Link copied.")
    assert [lk.url for lk in dbx.sharing_list_shared_links(path="/report.bin").links] == [url]

    ctx = _fresh(browser)
    try:
        visitor = ctx.new_page()
        visitor.goto(url)
        expect(visitor.get_by_role("heading", name="report.bin")).to_be_visible()
        expect(visitor.get_by_text(re.compile(r"^10\.0 KB"))).to_be_visible()  # 10240 bytes
        with visitor.expect_download() as dl:
            visitor.get_by_role("link", name="Download").click()
        assert open(dl.value.path(), "rb").read() == data

        dialog.get_by_role("button", name="Revoke").click()
        expect(dialog.get_by_role("status")).to_have_text(
            "Link revoked: it no longer opens anything."
        )
        expect(dialog.get_by_role("button", name="Create link")).to_be_visible()
        resp = visitor.goto(url)
        assert resp.status == 404
        expect(visitor.get_by_role("heading")).to_have_text("This link does not exist")
    finally:
        ctx.close()
    dialog.get_by_role("button", name="Close").click()

    # a password link, expiring on a given day
    _row(page, "secret.txt").get_by_role("button", name="Share link").click()
    dialog = page.get_by_role("dialog", name="Share link to secret.txt")
    dialog.get_by_label("Expires on (optional)").fill("2099-01-31")
    dialog.get_by_label("Password (optional)").fill("open sesame")
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog).to_contain_text("Anyone with the link and the password, until")
    url = dialog.get_by_label("Link", exact=True).input_value()
    (link,) = dbx.sharing_list_shared_links(path="/secret.txt").links
    assert link.expires.date().isoformat() == "2099-01-31"
    dialog.get_by_role("button", name="Close").click()
    ctx = _fresh(browser)
    try:
        visitor = ctx.new_page()
        visitor.goto(url)
        expect(visitor.get_by_text("This link is protected by a password.")).to_be_visible()
        assert visitor.get_by_role("link", name="Download").count() == 0
        visitor.get_by_label("Password").fill("open sesame")
        visitor.get_by_role("button", name="Open").click()
        with visitor.expect_download() as dl:
            visitor.get_by_role("link", name="Download").click()
        assert open(dl.value.path(), "rb").read() == b"top secret"
    finally:
        ctx.close()

    # a folder's link: its listing, each file downloadable, and the whole as a zip
    dbx.files_upload(b"one", "/Album/one.txt")
    _row(page, "Album").get_by_role("button", name="Share link").click()
    dialog = page.get_by_role("dialog", name="Share link to Album")
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog.get_by_label("Link", exact=True)).to_have_value(re.compile(r"/s/.*/Album$"))
    album_url = dialog.get_by_label("Link", exact=True).input_value()
    dialog.get_by_role("button", name="Close").click()
    ctx = _fresh(browser)
    try:
        visitor = ctx.new_page()
        visitor.goto(album_url)
        expect(visitor.get_by_role("heading", name="Album")).to_be_visible()
        expect(visitor.get_by_role("link", name="Download as .zip")).to_be_visible()
        expect(visitor.get_by_text("one.txt")).to_be_visible()
    finally:
        ctx.close()

    # the list of my links: secret.txt's, with its own Revoke
    page.get_by_role("button", name="Shared links").click()
    links = page.get_by_role("table", name="Shared links")
    row = links.get_by_role("row").filter(has_text="/secret.txt")
    expect(row).to_contain_text(url)
    expect(links.get_by_role("row")).to_have_count(3)  # header, secret.txt's and Album's
    row.get_by_role("button", name="Revoke").click()
    expect(links.get_by_role("row")).to_have_count(2)
    assert [lk.name for lk in dbx.sharing_list_shared_links().links] == ["Album"]
    assert page.errors == []


def test_markup_folder_name_is_text_in_share_dialog(up, page_for):
    email, pw, dbx = _account(up, "markup")
    dbx.files_create_folder_v2("/" + MARKUP)
    page = page_for(email, pw)
    # by keyboard only: the Share button, then the Email field has the focus, Enter invites
    _row(page, MARKUP).get_by_role("button", name="Share", exact=True).focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Share " + MARKUP)
    expect(dialog.get_by_label("Email")).to_be_focused()
    page.keyboard.type("you@localhost")
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("status")).to_have_text("Invited you@localhost as editor.")
    expect(page.locator("#share-title")).to_have_text("Share " + MARKUP)
    expect(dialog.get_by_role("row").filter(has_text="you@localhost")).to_be_visible()
    assert page.locator("#share b").count() == 0 and page.locator("#listing b").count() == 0
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    _row(page, MARKUP).get_by_role("button", name="Share link").click()
    expect(page.locator("#link-title")).to_have_text("Share link to " + MARKUP)
    assert page.locator("#link b").count() == 0
    assert page.dialogs == [] and page.errors == []
