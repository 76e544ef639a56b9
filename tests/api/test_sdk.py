"""The official Dropbox SDK (dropbox==12.2.4), unmodified, as the client of every route.

Each test runs against `raftbox up` and against a 3-member cluster (through a member that need
not be the leader), with an account of its own. Contents are checked byte for byte and every
`content_hash` against the SDK's own computation (`dropbox.content_hash`); the SDK's transfer
helpers (`dropbox.file_transfer.Uploader/Downloader`) drive upload sessions and parallel ranged
downloads, and verify the hash of what they download themselves.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import dropbox
import pytest
import requests
from dropbox import exceptions, files
from dropbox import file_properties as fp
from dropbox import file_transfer as ft
from dropbox.content_hash import content_hash

from . import procs
from .sdk import Account, Target
from .util import BLOCK, MiB, data, list_all

REV = re.compile(r"^[0-9a-f]{9,}$")


def check_file(m: files.FileMetadata, path: str, body: bytes) -> None:
    assert isinstance(m, files.FileMetadata)
    assert m.path_display == path
    assert m.path_lower == path.lower()
    assert m.name == path.rsplit("/", 1)[1]
    assert m.size == len(body)
    assert m.content_hash == content_hash(body)
    assert REV.match(m.rev) and m.id.startswith("id:") and len(m.id) > 3
    assert m.is_downloadable


def download(dbx: dropbox.Dropbox, path: str) -> tuple[files.FileMetadata, bytes]:
    meta, resp = dbx.files_download(path)
    with resp:
        return meta, resp.content


def error_of(excinfo: pytest.ExceptionInfo) -> object:
    assert isinstance(excinfo.value, exceptions.ApiError), excinfo.value
    return excinfo.value.error


# -- the SDK recipe and accounts --------------------------------------------------------------


def test_env_recipe_reaches_raftbox_up(up: procs.UpServer) -> None:
    """DROPBOX_API.md §2 verbatim: env vars before import, create_session(ca), trust_env off."""
    assert dropbox.session.API_HOST == up.hostport
    assert dropbox.session.API_CONTENT_HOST == up.hostport
    assert dropbox.session.API_NOTIFICATION_HOST == up.hostport
    s = dropbox.create_session(ca_certs=up.ca)
    s.trust_env = False
    dbx = dropbox.Dropbox(up.token, session=s)
    acct = dbx.users_get_current_account()
    assert acct.email == "you@localhost"
    assert len(acct.account_id) == 40
    assert acct.root_info.root_namespace_id == acct.root_info.home_namespace_id


def test_get_current_account(acct: Account) -> None:
    a = acct.dbx().users_get_current_account()
    assert a.account_id == acct.account_id and len(a.account_id) == 40
    assert a.email == acct.email and a.email_verified and not a.disabled
    assert a.account_type.is_basic()
    assert a.root_info.home_namespace_id


def test_accounts_made_with_raftbox_user_add_work(
    target: Target, request: pytest.FixtureRequest
) -> None:
    email = f"cli-{target.name}-{time.monotonic_ns()}@example.test"
    if target.name == "up":
        data_dir = request.getfixturevalue("up").data
        cmd = [procs.RAFTBOX, "user", "add", email, "--data", str(data_dir)]
    else:
        cmd = [
            procs.RAFTBOX,
            "user",
            "add",
            email,
            "--server",
            f"https://{target.hostports[0]}",
            "--admin-token",
            target.admin_token,
            "--ca",
            target.ca,
        ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    dbx = target.client(token)
    assert dbx.users_get_current_account().email == email
    m = dbx.files_upload(b"mine", "/cli.txt")
    assert download(dbx, "/cli.txt")[1] == b"mine"
    assert dbx.files_get_metadata(m.id).path_display == "/cli.txt"
    # the same email twice is refused
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode != 0


def test_two_accounts_cannot_see_each_other(target: Target) -> None:
    a, b = target.new_account("alice"), target.new_account("bob")
    da, db = a.dbx(), b.dbx()
    fm = da.files_upload(b"alice's secret", "/Private/secret.txt")
    folder = da.files_get_metadata("/Private")
    cursor = da.files_list_folder("", recursive=True).cursor
    assert list_all(db, "", recursive=True) == []
    for ref in ("/Private/secret.txt", fm.id, folder.id, "rev:" + fm.rev):
        with pytest.raises(exceptions.ApiError) as ei:
            db.files_get_metadata(ref)
        assert error_of(ei).get_path().is_not_found(), ref
    for ref in (fm.id, "/Private/secret.txt", "rev:" + fm.rev):
        with pytest.raises(exceptions.ApiError) as ei:
            db.files_download(ref)
        assert error_of(ei).get_path().is_not_found(), ref
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_list_folder(folder.id)
    assert error_of(ei).get_path().is_not_found()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_list_folder_continue(cursor)
    assert error_of(ei).is_reset()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_list_revisions(fm.id, mode=files.ListRevisionsMode.id)
    assert error_of(ei).is_path()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_delete_v2(fm.id)
    assert error_of(ei).get_path_lookup().is_not_found()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_copy_v2(fm.id, "/stolen.txt")
    assert error_of(ei).get_from_lookup().is_not_found()
    with pytest.raises(exceptions.ApiError) as ei:
        db.files_restore("/Private/secret.txt", fm.rev)
    assert error_of(ei).is_invalid_revision()
    # bob's write to the same path is his own file; alice's is untouched
    db.files_upload(b"bob's", "/Private/secret.txt")
    assert download(da, "/Private/secret.txt")[1] == b"alice's secret"
    assert da.files_get_metadata(fm.id).rev == fm.rev


# -- upload, metadata, download -----------------------------------------------------------------


def test_upload_get_metadata_download(acct: Account) -> None:
    dbx = acct.dbx()
    body = b"hello, raftbox\n"
    m = dbx.files_upload(body, "/Docs/Hello World.txt")
    check_file(m, "/Docs/Hello World.txt", body)
    assert m.client_modified == m.server_modified
    assert abs(m.server_modified.timestamp() - time.time()) < 300
    for ref in ("/Docs/Hello World.txt", "/docs/hello world.TXT", m.id, "rev:" + m.rev):
        g = dbx.files_get_metadata(ref)
        assert isinstance(g, files.FileMetadata), ref
        assert (g.id, g.rev, g.content_hash, g.size) == (m.id, m.rev, m.content_hash, m.size)
    folder = dbx.files_get_metadata("/docs")
    assert isinstance(folder, files.FolderMetadata)
    assert folder.path_display == "/Docs" and folder.name == "Docs"
    dm, got = download(dbx, "/DOCS/hello world.txt")
    assert got == body and dm.rev == m.rev and dm.content_hash == m.content_hash
    assert download(dbx, m.id)[1] == body
    by_id = dbx.files_upload(b"v2", m.id, mode=files.WriteMode.overwrite)  # write by id
    assert (by_id.id, by_id.path_display) == (m.id, m.path_display) and by_id.rev != m.rev
    ns = dbx.users_get_current_account().root_info.root_namespace_id
    assert dbx.files_get_metadata(f"ns:{ns}/docs/HELLO world.txt").id == m.id
    assert [e.name for e in dbx.files_list_folder(f"ns:{ns}").entries] == ["Docs"]
    cm = dbx.files_upload(b"x", "/cm.txt", client_modified=m.server_modified.replace(year=2001))
    assert cm.client_modified.year == 2001


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1])
def test_sizes_and_content_hash(acct: Account, size: int) -> None:
    dbx = acct.dbx()
    body = data(size)
    m = dbx.files_upload(body, f"/size-{size}.bin")
    check_file(m, f"/size-{size}.bin", body)
    if size == 0:
        assert m.content_hash == hashlib.sha256(b"").hexdigest()
    if size == BLOCK:  # one window, no empty trailing block
        assert m.content_hash == hashlib.sha256(hashlib.sha256(body).digest()).hexdigest()
    assert download(dbx, m.path_display)[1] == body
    target = ft.Bytes()  # the SDK checks the content_hash of what it downloads
    ft.Downloader(dbx).download(m.path_display, target, ft.DownloadOptions(parallel_downloads=3))
    assert target.bytes() == body


def test_ranged_downloads(acct: Account) -> None:
    dbx = acct.dbx()
    size = 2 * BLOCK + 12345
    body = data(size, seed=7)
    m = dbx.files_upload(body, "/ranged.bin")
    for rng, lo, hi in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        (f"bytes={BLOCK - 10}-{BLOCK + 9}", BLOCK - 10, BLOCK + 9),  # across a block boundary
        (f"bytes={2 * BLOCK}-", 2 * BLOCK, size - 1),
        ("bytes=-500", size - 500, size - 1),
        (f"bytes=10-{size + 1000}", 10, size - 1),  # end past EOF is clipped
    ]:
        meta, resp = dbx.files_download("/ranged.bin", extra_headers={"Range": rng})
        with resp:
            assert resp.status_code == 206, rng
            assert resp.headers["Content-Range"] == f"bytes {lo}-{hi}/{size}", rng
            assert resp.content == body[lo : hi + 1], rng
        assert meta.rev == m.rev and meta.size == size
    _, resp = dbx.files_download("/ranged.bin")
    with resp:
        assert resp.status_code == 200 and "Content-Range" not in resp.headers
    with pytest.raises(exceptions.HttpError) as ei:
        dbx.files_download("/ranged.bin", extra_headers={"Range": f"bytes={size}-"})
    assert ei.value.status_code == 416
    for parallel in (1, 4):
        target = ft.Bytes()
        ft.Downloader(dbx).download(m.id, target, ft.DownloadOptions(parallel_downloads=parallel))
        assert target.bytes() == body


def test_file_transfer_helpers(acct: Account, tmp_path) -> None:
    """The SDK's own Uploader (sequential and concurrent sessions) and Downloader (to a file)."""
    dbx = acct.dbx()
    body = data(3 * 8 * MiB + 777, seed=3)  # three of the SDK's 8 MiB chunks and a tail
    seq = ft.Uploader(dbx).upload(ft.BytesUpload(body), files.CommitInfo("/helpers/seq.bin"))
    check_file(seq.metadata, "/helpers/seq.bin", body)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    par = ft.Uploader(dbx).upload(
        ft.FileUpload(str(src)),
        files.CommitInfo("/helpers/par.bin"),
        ft.UploadOptions(parallel_uploads=3),
    )
    check_file(par.metadata, "/helpers/par.bin", body)
    empty = ft.Uploader(dbx).upload(
        ft.BytesUpload(b""),
        files.CommitInfo("/helpers/empty"),
        ft.UploadOptions(parallel_uploads=3),
    )
    check_file(empty.metadata, "/helpers/empty", b"")
    out = tmp_path / "out.bin"
    ft.download_file(dbx, "/helpers/par.bin", str(out))
    assert out.read_bytes() == body
    out2 = tmp_path / "out2.bin"
    ft.Downloader(dbx).download(
        "/helpers/seq.bin", ft.File(str(out2)), ft.DownloadOptions(parallel_downloads=4)
    )
    assert out2.read_bytes() == body


def test_unicode_and_case_insensitive_paths(acct: Account) -> None:
    dbx = acct.dbx()
    name = "/Ünïcødé/日本語 ファイル 🎉.txt"
    m = dbx.files_upload("ü".encode(), name)
    assert m.path_display == name and m.name == "日本語 ファイル 🎉.txt"
    assert m.path_lower == name.lower()
    meta, resp = dbx.files_download(name.upper())  # Dropbox-API-Result must be ASCII-escaped
    with resp:
        assert resp.content == "ü".encode()
        assert resp.headers["Dropbox-API-Result"].isascii()
    assert meta.path_display == name
    assert dbx.files_get_metadata("/ÜNÏCØDÉ").path_display == "/Ünïcødé"
    # the NFD spelling of the same name is the same entry
    nfd = "/u\u0308n\u0131\u0308c\u00f8d\u00e9".replace("\u0131", "i")
    assert dbx.files_get_metadata(nfd).id == dbx.files_get_metadata("/Ünïcødé").id
    # a different case of an existing path is the same file: `add` conflicts, the case stays
    dbx.files_upload(b"one", "/MixedCase.txt")
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"two", "/mixedcase.TXT")
    assert error_of(ei).get_path().reason.get_conflict().is_file()
    o = dbx.files_upload(b"two", "/MIXEDCASE.txt", mode=files.WriteMode.overwrite)
    assert o.path_display == "/MixedCase.txt"
    # a new file under an existing folder keeps the folder's case
    f = dbx.files_upload(b"x", "/ünïcødé/child.txt")
    assert f.path_display == "/Ünïcødé/child.txt"
    names = sorted(e.name for e in list_all(dbx, ""))
    assert names == ["MixedCase.txt", "Ünïcødé"]


# -- write modes, conflicts, autorename -----------------------------------------------------------


def test_write_modes_conflicts_and_autorename(acct: Account) -> None:
    dbx = acct.dbx()
    v1 = dbx.files_upload(b"v1", "/w/doc.txt")
    # identical content: no-op, same rev, no conflict
    assert dbx.files_upload(b"v1", "/w/doc.txt").rev == v1.rev
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"v2", "/w/doc.txt")
    err = error_of(ei)
    assert err.is_path() and err.get_path().reason.get_conflict().is_file()
    a1 = dbx.files_upload(b"v2", "/w/doc.txt", autorename=True)
    assert a1.path_display == "/w/doc (1).txt"
    a2 = dbx.files_upload(b"v3", "/w/doc.txt", autorename=True)
    assert a2.path_display == "/w/doc (2).txt"
    v2 = dbx.files_upload(b"v2", "/w/doc.txt", mode=files.WriteMode.overwrite)
    assert v2.id == v1.id and v2.rev != v1.rev
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"v3", "/w/doc.txt", mode=files.WriteMode.update(v1.rev))
    assert error_of(ei).get_path().reason.get_conflict().is_file()
    cc = dbx.files_upload(b"v3", "/w/doc.txt", mode=files.WriteMode.update(v1.rev), autorename=True)
    assert cc.path_display == "/w/doc (conflicted copy).txt"
    v3 = dbx.files_upload(b"v3", "/w/doc.txt", mode=files.WriteMode.update(v2.rev))
    assert v3.id == v1.id and v3.rev not in (v1.rev, v2.rev)
    # strict_conflict: update with identical content but a stale rev conflicts
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(
            b"v3", "/w/doc.txt", mode=files.WriteMode.update(v2.rev), strict_conflict=True
        )
    assert error_of(ei).get_path().reason.get_conflict().is_file()
    # strict_conflict: update of a file deleted since conflicts; without it, it is written
    gone = dbx.files_upload(b"g1", "/w/gone.txt")
    dbx.files_delete_v2("/w/gone.txt")
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(
            b"g2", "/w/gone.txt", mode=files.WriteMode.update(gone.rev), strict_conflict=True
        )
    assert error_of(ei).get_path().reason.get_conflict().is_file()
    assert dbx.files_upload(b"g2", "/w/gone.txt", mode=files.WriteMode.update(gone.rev)).size == 2
    # property groups are not supported
    pg = [fp.PropertyGroup("ptid:1a5n2i6d3OYEAAAAAAAAAYa", [fp.PropertyField("k", "v")])]
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"p", "/w/props.txt", property_groups=pg)
    assert error_of(ei).is_properties_error()
    # a folder is always in the way
    dbx.files_create_folder_v2("/w/dir")
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"x", "/w/dir", mode=files.WriteMode.overwrite)
    assert error_of(ei).get_path().reason.get_conflict().is_folder()
    # a file cannot be a parent
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload(b"x", "/w/doc.txt/inner.txt")
    assert error_of(ei).get_path().reason.get_conflict().is_file_ancestor()
    assert download(dbx, "/w/doc.txt")[1] == b"v3"
    assert download(dbx, "/w/doc (1).txt")[1] == b"v2"


def test_create_folder_v2(acct: Account) -> None:
    dbx = acct.dbx()
    r = dbx.files_create_folder_v2("/A/B/C")
    assert isinstance(r.metadata, files.FolderMetadata)
    assert r.metadata.path_display == "/A/B/C" and r.metadata.id.startswith("id:")
    assert isinstance(dbx.files_get_metadata("/a/b"), files.FolderMetadata)
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_create_folder_v2("/a/b/c")
    assert error_of(ei).get_path().get_conflict().is_folder()
    r2 = dbx.files_create_folder_v2("/A/B/C", autorename=True)
    assert r2.metadata.path_display == "/A/B/C (1)"
    dbx.files_upload(b"f", "/A/file.txt")
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_create_folder_v2("/A/file.txt")
    assert error_of(ei).get_path().get_conflict().is_file()


# -- delete, move, copy -----------------------------------------------------------------------


def test_delete_move_copy(acct: Account) -> None:
    dbx = acct.dbx()
    f = dbx.files_upload(b"payload", "/src/f.txt")
    dbx.files_upload(b"deep", "/src/sub/deep.txt")
    # copy: metadata-only, a new id and rev, same content
    c = dbx.files_copy_v2("/src/f.txt", "/copy/f.txt").metadata
    assert isinstance(c, files.FileMetadata)
    assert c.id != f.id and c.content_hash == f.content_hash and c.size == f.size
    assert download(dbx, "/copy/f.txt")[1] == b"payload"
    # move: the id stays
    mv = dbx.files_move_v2("/src/f.txt", "/moved/F.txt").metadata
    assert mv.id == f.id and mv.path_display == "/moved/F.txt"
    assert dbx.files_get_metadata(f.id).path_display == "/moved/F.txt"
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_get_metadata("/src/f.txt")
    assert error_of(ei).get_path().is_not_found()
    # conflicts and their typed errors
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_move_v2("/copy/f.txt", "/moved/f.txt")
    assert error_of(ei).get_to().get_conflict().is_file()
    auto = dbx.files_move_v2("/copy/f.txt", "/moved/f.txt", autorename=True).metadata
    assert auto.path_display == "/moved/f (1).txt"
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_move_v2("/src", "/src/sub/inside")
    assert error_of(ei).is_cant_move_folder_into_itself()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_copy_v2("/nope", "/x")
    assert error_of(ei).get_from_lookup().is_not_found()
    # move a folder: its children follow, ids stay
    deep = dbx.files_get_metadata("/src/sub/deep.txt")
    folder = dbx.files_move_v2("/src", "/Dest").metadata
    assert isinstance(folder, files.FolderMetadata) and folder.path_display == "/Dest"
    assert dbx.files_get_metadata(deep.id).path_display == "/Dest/sub/deep.txt"
    # delete a file: the metadata as it was; then it is gone (or "deleted" if asked)
    d = dbx.files_delete_v2("/moved/F.txt").metadata
    assert isinstance(d, files.FileMetadata) and d.id == f.id
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_get_metadata("/moved/F.txt")
    assert error_of(ei).get_path().is_not_found()
    gone = dbx.files_get_metadata("/moved/F.txt", include_deleted=True)
    assert isinstance(gone, files.DeletedMetadata) and gone.path_display == "/moved/F.txt"
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_delete_v2("/moved/F.txt")
    assert error_of(ei).get_path_lookup().is_not_found()
    # delete with a stale parent_rev conflicts
    cur = dbx.files_upload(b"1", "/pr.txt")
    dbx.files_upload(b"2", "/pr.txt", mode=files.WriteMode.overwrite)
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_delete_v2("/pr.txt", parent_rev=cur.rev)
    assert error_of(ei).get_path_write().get_conflict().is_file()
    # delete a folder: recursively
    dbx.files_delete_v2("/Dest")
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_get_metadata(deep.id)
    assert error_of(ei).get_path().is_not_found()
    live = {e.path_lower for e in list_all(dbx, "", recursive=True)}
    assert live == {"/moved", "/moved/f (1).txt", "/copy", "/pr.txt"}


# -- list_folder, continue, get_latest_cursor -------------------------------------------------------


def test_list_folder_paging_recursive_deleted_and_cursors(acct: Account) -> None:
    dbx = acct.dbx()
    names = [f"/L/f{i:02d}.txt" for i in range(7)]
    for n in names:
        dbx.files_upload(n.encode(), n)
    dbx.files_upload(b"s", "/L/sub/s.txt")
    dbx.files_create_folder_v2("/L/empty")
    # paging with a limit
    r = dbx.files_list_folder("/L", limit=3)
    assert len(r.entries) <= 3 and r.has_more
    seen = [e.path_display for e in r.entries]
    while r.has_more:
        r = dbx.files_list_folder_continue(r.cursor)
        seen += [e.path_display for e in r.entries]
    assert sorted(seen) == sorted(names + ["/L/sub", "/L/empty"])
    assert len(seen) == len(set(seen))
    # recursive: the folder itself comes first, then everything below it
    rec = [e.path_display for e in list_all(dbx, "/l", recursive=True, limit=2)]
    assert rec[0] == "/L"
    assert set(rec) == set(names) | {"/L", "/L/sub", "/L/sub/s.txt", "/L/empty"}
    root = list_all(dbx, "")
    assert [(type(e), e.path_display) for e in root] == [(files.FolderMetadata, "/L")]
    by_id = list_all(dbx, dbx.files_get_metadata("/L/sub").id)
    assert [e.path_display for e in by_id] == ["/L/sub/s.txt"]
    # changes after a cursor: deletions appear as DeletedMetadata
    latest = dbx.files_list_folder_get_latest_cursor("/L", recursive=True).cursor
    dbx.files_delete_v2("/L/f00.txt")
    dbx.files_upload(b"new", "/L/new.txt")
    dbx.files_delete_v2("/L/sub")
    ch = dbx.files_list_folder_continue(latest)
    got = {(type(e).__name__, e.path_display) for e in ch.entries}
    assert got == {
        ("DeletedMetadata", "/L/f00.txt"),
        ("FileMetadata", "/L/new.txt"),
        ("DeletedMetadata", "/L/sub"),
    }
    assert not ch.has_more
    again = dbx.files_list_folder_continue(ch.cursor)
    assert again.entries == [] and not again.has_more
    # include_deleted lists what was deleted; the default does not
    plain = {e.path_display for e in list_all(dbx, "/L")}
    assert "/L/f00.txt" not in plain
    with_del = {
        (type(e).__name__, e.path_display) for e in list_all(dbx, "/L", include_deleted=True)
    }
    assert ("DeletedMetadata", "/L/f00.txt") in with_del
    # a bad cursor gets reset
    for bad in ("not-a-cursor", latest[:-2] + ("A" if latest[-2] != "A" else "B") + latest[-1]):
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_list_folder_continue(bad)
        assert error_of(ei).is_reset()
    # errors of the listing itself
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_list_folder("/L/new.txt")
    assert error_of(ei).get_path().is_not_folder()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_list_folder("/nowhere")
    assert error_of(ei).get_path().is_not_found()


# -- upload sessions --------------------------------------------------------------------------


def test_upload_session_sequential(acct: Account) -> None:
    dbx = acct.dbx()
    p1, p2, p3 = data(1000, 1), data(BLOCK + 5, 2), data(321, 3)
    s = dbx.files_upload_session_start(p1)
    cursor = files.UploadSessionCursor(s.session_id, len(p1))
    dbx.files_upload_session_append_v2(p2, cursor)
    # a wrong offset: incorrect_offset with the right one, nothing appended
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(b"zzz", files.UploadSessionCursor(s.session_id, 7))
    err = error_of(ei)
    assert err.is_incorrect_offset()
    assert err.get_incorrect_offset().correct_offset == len(p1) + len(p2)
    # the SDK's retry path: the same append again is answered with incorrect_offset too
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(p2, cursor)
    assert error_of(ei).get_incorrect_offset().correct_offset == len(p1) + len(p2)
    # finish with a wrong offset
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_finish(
            p3, files.UploadSessionCursor(s.session_id, 1), files.CommitInfo("/sess/seq.bin")
        )
    lf = error_of(ei).get_lookup_failed()
    assert lf.get_incorrect_offset().correct_offset == len(p1) + len(p2)
    m = dbx.files_upload_session_finish(
        p3,
        files.UploadSessionCursor(s.session_id, len(p1) + len(p2)),
        files.CommitInfo("/sess/seq.bin"),
    )
    check_file(m, "/sess/seq.bin", p1 + p2 + p3)
    assert download(dbx, "/sess/seq.bin")[1] == p1 + p2 + p3
    # a finished session is gone
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(b"x", files.UploadSessionCursor(s.session_id, 0))
    assert error_of(ei).is_not_found()
    # closed sessions take no more data, but can be finished
    c = dbx.files_upload_session_start(b"abc")
    dbx.files_upload_session_append_v2(
        b"def", files.UploadSessionCursor(c.session_id, 3), close=True
    )
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(b"g", files.UploadSessionCursor(c.session_id, 6))
    assert error_of(ei).is_closed()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_finish(
            b"g", files.UploadSessionCursor(c.session_id, 6), files.CommitInfo("/sess/closed")
        )
    assert error_of(ei).get_lookup_failed().is_closed()
    m2 = dbx.files_upload_session_finish(
        b"", files.UploadSessionCursor(c.session_id, 6), files.CommitInfo("/sess/closed")
    )
    check_file(m2, "/sess/closed", b"abcdef")
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(b"x", files.UploadSessionCursor("nope:123", 0))
    assert error_of(ei).is_not_found()
    # an empty session makes an empty file
    e = dbx.files_upload_session_start(b"")
    m3 = dbx.files_upload_session_finish(
        b"", files.UploadSessionCursor(e.session_id, 0), files.CommitInfo("/sess/empty")
    )
    check_file(m3, "/sess/empty", b"")


def test_upload_session_concurrent(acct: Account) -> None:
    dbx = acct.dbx()
    body = data(3 * BLOCK + 999, seed=11)
    conc = files.UploadSessionType.concurrent
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_start(b"data", session_type=conc)
    assert error_of(ei).is_concurrent_session_data_not_allowed()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_start(b"", session_type=conc, close=True)
    assert error_of(ei).is_concurrent_session_close_not_allowed()
    sid = dbx.files_upload_session_start(b"", session_type=conc).session_id

    def cur(off: int) -> files.UploadSessionCursor:
        return files.UploadSessionCursor(sid, off)

    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(body[:100], cur(0))
    assert error_of(ei).is_concurrent_session_invalid_data_size()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_append_v2(body[:BLOCK], cur(100))
    assert error_of(ei).is_concurrent_session_invalid_offset()
    # pieces in any order, at the same time; the last one closes
    pieces = [
        (2 * BLOCK, body[2 * BLOCK : 3 * BLOCK]),
        (0, body[:BLOCK]),
        (BLOCK, body[BLOCK : 2 * BLOCK]),
    ]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: dbx.files_upload_session_append_v2(p[1], cur(p[0])), pieces))
    with pytest.raises(exceptions.ApiError) as ei:  # not closed yet
        dbx.files_upload_session_finish(b"", cur(3 * BLOCK), files.CommitInfo("/conc.bin"))
    assert error_of(ei).is_concurrent_session_not_closed()
    dbx.files_upload_session_append_v2(body[3 * BLOCK :], cur(3 * BLOCK), close=True)
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_upload_session_finish(b"tail", cur(len(body)), files.CommitInfo("/conc.bin"))
    assert error_of(ei).is_concurrent_session_data_not_allowed()
    m = dbx.files_upload_session_finish(b"", cur(len(body)), files.CommitInfo("/conc.bin"))
    check_file(m, "/conc.bin", body)
    assert download(dbx, "/conc.bin")[1] == body


def test_upload_session_finish_batch_v2(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"already here", "/batch/taken.txt")
    bodies = {"/batch/a.txt": b"aaa", "/batch/taken.txt": b"other", "/batch/b.txt": b""}
    entries = []
    for path, body in bodies.items():
        sid = dbx.files_upload_session_start(body, close=True).session_id
        entries.append(
            files.UploadSessionFinishArg(
                files.UploadSessionCursor(sid, len(body)), files.CommitInfo(path)
            )
        )
    entries.append(
        files.UploadSessionFinishArg(
            files.UploadSessionCursor("no-such-session", 0), files.CommitInfo("/batch/x")
        )
    )
    r = dbx.files_upload_session_finish_batch_v2(entries)
    assert len(r.entries) == 4
    a, taken, b, missing = r.entries
    assert a.is_success() and b.is_success()
    check_file(a.get_success(), "/batch/a.txt", b"aaa")
    check_file(b.get_success(), "/batch/b.txt", b"")
    assert taken.is_failure()
    assert taken.get_failure().get_path().get_conflict().is_file()
    assert missing.get_failure().get_lookup_failed().is_not_found()
    assert download(dbx, "/batch/taken.txt")[1] == b"already here"


# -- revisions and restore --------------------------------------------------------------------


def test_list_revisions_and_restore(acct: Account) -> None:
    dbx = acct.dbx()
    revs = [
        dbx.files_upload(b"version %d" % i, "/r/doc.txt", mode=files.WriteMode.overwrite)
        for i in range(3)
    ]
    lr = dbx.files_list_revisions("/r/doc.txt")
    assert not lr.is_deleted
    assert [e.rev for e in lr.entries] == [m.rev for m in reversed(revs)]
    assert all(isinstance(e, files.FileMetadata) for e in lr.entries)
    assert [e.rev for e in dbx.files_list_revisions("/r/doc.txt", limit=2).entries] == [
        revs[2].rev,
        revs[1].rev,
    ]
    assert download(dbx, "rev:" + revs[0].rev)[1] == b"version 0"
    old, resp = dbx.files_download("/r/doc.txt", rev=revs[1].rev)  # the deprecated form
    with resp:
        assert resp.content == b"version 1" and old.rev == revs[1].rev
    restored = dbx.files_restore("/r/doc.txt", revs[0].rev)
    assert restored.rev not in {m.rev for m in revs} and restored.id == revs[0].id
    assert restored.content_hash == revs[0].content_hash
    assert download(dbx, "/r/doc.txt")[1] == b"version 0"
    assert len(dbx.files_list_revisions("/r/doc.txt").entries) == 4
    # mode=id follows the file through a move
    dbx.files_move_v2("/r/doc.txt", "/r/renamed.txt")
    by_id = dbx.files_list_revisions(revs[0].id, mode=files.ListRevisionsMode.id)
    assert {e.rev for e in by_id.entries} >= {m.rev for m in revs}
    # a deleted file still has its revisions, and can be restored
    dbx.files_delete_v2("/r/renamed.txt")
    dl = dbx.files_list_revisions("/r/renamed.txt")
    assert dl.is_deleted and dl.server_deleted is not None and dl.entries
    back = dbx.files_restore("/r/renamed.txt", dl.entries[0].rev)
    assert download(dbx, "/r/renamed.txt")[1] == b"version 0" and back.size == 9
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_restore("/r/renamed.txt", "0123456789abcdef")
    assert error_of(ei).is_invalid_revision()
    with pytest.raises(exceptions.ApiError) as ei:
        dbx.files_list_revisions("/r/never.txt")
    assert error_of(ei).get_path().is_not_found()


# -- big files are streamed ---------------------------------------------------------------------


def _write_big_file(path, size: int) -> str:
    """Write `size` bytes of distinct blocks to `path`; return their content_hash (the SDK's
    hasher, fed in odd-sized pieces)."""
    from dropbox.content_hash import DropboxContentHasher

    h = DropboxContentHasher()
    chunk = data(8 * MiB + 3, seed=99)
    with open(path, "wb") as f:
        left, i = size, 0
        while left:
            piece = hashlib.sha256(b"%d" % i).digest() + chunk[: min(len(chunk), left) - 32]
            piece = piece[:left]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
            i += 1
    return h.hexdigest()


def _big_file_streamed(up: procs.UpServer, target: Target, tmp_path, size: int) -> None:
    dbx = target.new_account("big").dbx()
    src, out = tmp_path / "big.bin", tmp_path / "big.out"
    want_hash = _write_big_file(src, size)
    pid = up.proc.pid
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (the peak RSS) to the current RSS
    rss0 = procs.proc_status_kb(pid, "VmRSS")
    t0 = time.monotonic()
    up_res = ft.Uploader(dbx).upload(
        ft.FileUpload(str(src)), files.CommitInfo("/big.bin"), ft.UploadOptions(parallel_uploads=2)
    )
    t1 = time.monotonic()
    assert up_res.metadata.size == size and up_res.metadata.content_hash == want_hash
    ft.Downloader(dbx).download(  # the SDK verifies the content_hash of what it wrote
        "/big.bin", ft.File(str(out)), ft.DownloadOptions(parallel_downloads=2)
    )
    t2 = time.monotonic()
    peak = procs.proc_status_kb(pid, "VmHWM")
    growth = (peak - rss0) * 1024
    print(
        f"{size / MiB:.0f} MiB: upload {t1 - t0:.1f}s, download {t2 - t1:.1f}s, "
        f"server RSS {rss0 / 1024:.0f} MiB -> peak {peak / 1024:.0f} MiB"
    )
    assert out.stat().st_size == size
    # Measured: ~50 MiB whatever the size (64 MiB or 300 MiB): a few 4 MiB blocks per request in
    # flight, plus what a fresh process allocates for its first big requests.
    assert growth < 96 * MiB, f"server peak RSS grew {growth / MiB:.0f} MiB for {size} bytes"


@pytest.mark.parametrize(
    "size", [300 * MiB + 12345, pytest.param(1024 * MiB + 1, marks=pytest.mark.slow)]
)
def test_big_file_is_streamed(up: procs.UpServer, up_target: Target, tmp_path, size) -> None:
    """A big file through upload sessions and a parallel ranged download: the server's peak
    resident memory grows by a small, size-independent amount (well below the file size)."""
    _big_file_streamed(up, up_target, tmp_path, size)


# -- integrity: a damaged block is never served -----------------------------------------------------


def test_corrupt_block_is_never_served(up: procs.UpServer, up_target: Target) -> None:
    """The block store re-hashes what it reads: a download whose block no longer matches its id
    fails visibly (an error, or a cut connection), never a 200 with other bytes. (A body shorter
    than an HTTP status line: a server that appended an error response to the one it had begun
    would hand the client "HTTP/1.1 5…" as the file.)"""
    dbx = up_target.new_account("corrupt").dbx(max_retries_on_error=0, timeout=20)
    body = b"0123456789"
    dbx.files_upload(body, "/victim.bin")
    bid = hashlib.sha256(body).hexdigest()
    block = up.data / "blocks" / bid[:2] / bid[2:4] / bid
    stored = block.read_bytes()
    block.write_bytes(b"X" + stored[1:])
    try:
        got: bytes | None
        try:
            _, resp = dbx.files_download("/victim.bin")
            with resp:
                got = resp.content
        except (exceptions.DropboxException, requests.RequestException):
            got = None
        assert got in (None, body), f"served {got!r}"  # the original only from a cache
        try:
            target = ft.Bytes()
            ft.Downloader(dbx).download("/victim.bin", target)
            got = target.bytes()
        except (exceptions.DropboxException, requests.RequestException, ft.TransferError):
            got = None
        assert got in (None, body), f"served {got!r}"
        assert dbx.users_get_current_account()  # the server carries on
    finally:
        block.write_bytes(stored)
    assert download(dbx, "/victim.bin")[1] == body


# -- other clients' shapes on the wire (rclone / the JS SDK), checked by hand --------------------


def test_wire_shapes_other_clients_send_and_expect(acct: Account) -> None:
    raw = acct.target.http()
    try:
        # a Void argument as an empty body with no Content-Type (the JS SDK)
        r = raw.post("users/get_current_account", token=acct.token)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        assert r.json()["account_id"] == acct.account_id
        # a chunked upload body (rclone/Go), the union shorthand "overwrite", no content_hash
        body = data(3 * MiB + 17, seed=21)
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        r = raw.post(
            "files/upload",
            token=acct.token,
            data=chunks,
            arg='{"path": "/wire/chunked.bin", "mode": "overwrite"}',
        )
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        assert r.json()["content_hash"] == content_hash(body)
        assert ".tag" not in r.json()  # FileMetadata declared concretely: no tag
        assert download(acct.dbx(), "/wire/chunked.bin")[1] == body
        # every route on every host name: routing is by path only
        r = raw.post(
            "files/get_metadata",
            token=acct.token,
            json_body={"path": "/wire/chunked.bin"},
            headers={"Host": "api.dropboxapi.com"},
        )
        assert r.status_code == 200 and r.json()[".tag"] == "file"  # declared as Metadata
        # a Void result is the body `null`
        sid = acct.dbx().files_upload_session_start(b"abc").session_id
        arg = json.dumps({"cursor": {"session_id": sid, "offset": 3}})
        r = raw.post("files/upload_session/append_v2", token=acct.token, data=b"d", arg=arg)
        assert r.status_code == 200 and r.content == b"null"
        assert r.headers["Content-Type"] == "application/json"
        # finish_batch_v2: flattened success entries carry no stray ".tag": "file"
        r = raw.post(
            "files/upload_session/finish_batch_v2",
            token=acct.token,
            json_body={
                "entries": [
                    {
                        "cursor": {"session_id": sid, "offset": 4},
                        "commit": {"path": "/wire/batch.txt"},
                    }
                ]
            },
        )
        entry = r.json()["entries"][0]
        assert entry[".tag"] == "success" and entry["path_display"] == "/wire/batch.txt"
        # a conflict, exactly as rclone reads it
        r = raw.post(
            "files/upload", token=acct.token, data=b"other", arg='{"path": "/wire/batch.txt"}'
        )
        assert r.status_code == 409 and r.headers["Content-Type"] == "application/json"
        err = r.json()
        assert err["error_summary"] == "path/conflict/file/.."
        assert err["error"][".tag"] == "path"
        assert err["error"]["reason"] == {".tag": "conflict", "conflict": {".tag": "file"}}
        assert isinstance(err["error"]["upload_session_id"], str)
        # download: octet-stream, and the metadata header in ASCII JSON
        acct.dbx().files_upload(b"\xe2\x82\xac", "/wire/\u20ac uro.txt")
        r = raw.post("files/download", token=acct.token, arg='{"path": "/wire/\\u20ac uro.txt"}')
        assert r.status_code == 200 and r.content == "\u20ac".encode()
        assert r.headers["Content-Type"] == "application/octet-stream"
        result = r.headers["Dropbox-API-Result"]
        assert result.isascii() and json.loads(result)["name"] == "\u20ac uro.txt"
    finally:
        raw.close()
