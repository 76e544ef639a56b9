"""The batch routes, `finish_batch` v1, thumbnails, temporary links and search against a shared
folder (issues 13 and 15): a stranger's attempts answer byte for byte as for something that was
never stored, a viewer's batch writes are refused entry by entry and change nothing, a job that
wrote in a shared folder is readable by its author only, and a search cursor does not outlive
its holder's membership. Each attack is sent raw, so the test sees exactly what the server
says."""

from __future__ import annotations

import io
import json
import secrets

import pytest
from PIL import Image

from .badinput import Server
from .test_sharing_access import fake_like, same


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("share-routes")).start()
    try:
        yield s
    finally:
        s.stop()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(out, "PNG")
    return out.getvalue()


def add_member(srv: Server, owner: str, sfid: str, token: str, level: str) -> str:
    acct = srv.ok("users/get_current_account", None, token)["account_id"]
    member = {".tag": "dropbox_id", "dropbox_id": acct}
    arg = {"shared_folder_id": sfid, "members": [{"member": member, "access_level": level}]}
    srv.ok("sharing/add_folder_member", arg, owner)
    srv.ok("sharing/mount_folder", {"shared_folder_id": sfid}, token)
    return acct


@pytest.fixture(scope="module")
def world(srv: Server):
    """alice shares /Project (plan.txt, pic.png) with bob (editor) and vic (viewer); eve is a
    stranger."""
    alice, bob, vic, eve = (srv.new_account(n) for n in ("alice", "bob", "vic", "eve"))
    meta = srv.upload("/Project/plan.txt", b"plan " + secrets.token_bytes(8), token=alice)
    pic = srv.upload("/Project/pic.png", png(), token=alice)
    sfid = srv.ok("sharing/share_folder", {"path": "/Project"}, alice)["shared_folder_id"]
    add_member(srv, alice, sfid, bob, "editor")
    add_member(srv, alice, sfid, vic, "viewer")
    return dict(alice=alice, bob=bob, vic=vic, eve=eve, sfid=sfid, meta=meta, pic=pic)


def job_entries(srv: Server, route: str, arg: dict, token: str) -> list:
    """Launch the batch `route` and answer its check's entries."""
    launch = srv.ok(route, arg, token)
    if launch[".tag"] == "complete":
        return launch["entries"]
    check = {
        "files/copy_batch_v2": "files/copy_batch/check_v2",
        "files/move_batch_v2": "files/move_batch/check_v2",
        "files/upload_session/finish_batch": "files/upload_session/finish_batch/check",
    }.get(route, route + "/check")
    done = srv.ok(check, {"async_job_id": launch["async_job_id"]}, token)
    assert done[".tag"] == "complete"
    return done["entries"]


def refs(world) -> list[tuple[str, str]]:
    """(a reference to the shared folder's file, one of the same shape to nothing)."""
    m, sfid = world["pic"], world["sfid"]
    return [
        (m["id"], fake_like(m["id"])),
        (f"ns:{sfid}/pic.png", "ns:999999999/pic.png"),
        ("rev:" + m["rev"], "rev:" + fake_like(m["rev"])),
    ]


def test_a_stranger_reaches_nothing_through_the_routes(srv: Server, world):
    eve, sfid = world["eve"], world["sfid"]
    before = srv.snapshot(world["alice"])
    for real, fake in refs(world):
        for route, arg in [
            ("files/get_thumbnail_v2", lambda p: {"resource": {".tag": "path", "path": p}}),
            ("files/get_thumbnail", lambda p: {"path": p}),
        ]:
            same(srv.content(route, arg(real), token=eve), srv.content(route, arg(fake), token=eve))
        for route, arg in [
            ("files/get_temporary_link", lambda p: {"path": p}),
            ("files/get_thumbnail_batch", lambda p: {"entries": [{"path": p}]}),
        ]:
            same(srv.rpc(route, arg(real), token=eve), srv.rpc(route, arg(fake), token=eve))
        if real.startswith("rev:"):
            continue  # the write routes take no rev:
        for route, arg in [
            ("files/delete_batch", lambda p: {"entries": [{"path": p}]}),
            ("files/copy_batch_v2", lambda p: {"entries": [{"from_path": p, "to_path": "/c"}]}),
            ("files/move_batch_v2", lambda p: {"entries": [{"from_path": p, "to_path": "/c"}]}),
        ]:
            got = job_entries(srv, route, arg(real), eve)
            assert got == job_entries(srv, route, arg(fake), eve)
            assert "not_found" in json.dumps(got), got
    for real, fake in [(f"ns:{sfid}", "ns:999999999")]:
        for route, arg in [
            ("files/search_v2", lambda p: {"query": "plan", "options": {"path": p}}),
            ("files/create_folder_batch", lambda p: {"paths": [p + "/x"]}),
            ("files/list_folder", lambda p: {"path": p}),
        ]:
            same(srv.rpc(route, arg(real), token=eve), srv.rpc(route, arg(fake), token=eve))
        moves = {"entries": [{"from_path": "/e.txt", "to_path": real + "/e.txt"}]}
        srv.upload("/e.txt", b"e", token=eve)
        got = job_entries(srv, "files/copy_batch_v2", moves, eve)
        assert got[0]["failure"]["relocation_error"]["to"][".tag"] == "no_write_permission"
    assert srv.ok("files/search_v2", {"query": "plan"}, eve)["matches"] == []
    srv.assert_unchanged(before, world["alice"])


def test_a_viewers_batch_writes_change_nothing(srv: Server, world):
    vic, m = world["vic"], world["meta"]
    srv.upload("/mine.txt", b"mine", token=vic)
    before = srv.snapshot(world["alice"])
    for target in ("/Project/plan.txt", m["id"]):
        got = job_entries(srv, "files/delete_batch", {"entries": [{"path": target}]}, vic)
        assert got == [
            {".tag": "failure", "failure": {".tag": "path_write", "path_write": {
                ".tag": "no_write_permission"}}}
        ]  # fmt: skip
        move = {"entries": [{"from_path": target, "to_path": "/out.txt"}]}
        got = job_entries(srv, "files/move_batch_v2", move, vic)
        assert got[0]["failure"]["relocation_error"]["from_write"] == {
            ".tag": "no_write_permission"
        }
    for route, arg in [
        ("files/move_batch_v2", {"entries": [{"from_path": "/mine.txt", "to_path": "/Project/m"}]}),
        ("files/copy_batch_v2", {"entries": [{"from_path": "/mine.txt", "to_path": "/Project/m"}]}),
        ("files/create_folder_batch", {"paths": ["/Project/new"], "force_async": True}),
        ("files/create_folder_batch", {"paths": ["/Project/new"]}),
    ]:
        got = job_entries(srv, route, arg, vic)
        assert len(got) == 1 and "no_write_permission" in json.dumps(got), (route, got)
    sid = srv.content("files/upload_session/start", {}, b"v", token=vic).json()["session_id"]
    finish = {"cursor": {"session_id": sid, "offset": 1}, "commit": {"path": "/Project/v.bin"}}
    got = job_entries(srv, "files/upload_session/finish_batch", {"entries": [finish]}, vic)
    assert "no_write_permission" in json.dumps(got), got
    srv.assert_unchanged(before, world["alice"])
    # its reads work
    assert srv.content("files/get_thumbnail", {"path": "/Project/pic.png"}, token=vic).status == 200
    link = srv.ok("files/get_temporary_link", {"path": "/Project/plan.txt"}, vic)
    assert link["metadata"]["sharing_info"]["read_only"] is True


def test_a_job_in_a_shared_folder_is_its_authors_only(srv: Server, world):
    bob, sfid = world["bob"], world["sfid"]
    srv.upload("/Project/tmp.txt", b"tmp", token=bob)
    launch = srv.ok("files/delete_batch", {"entries": [{"path": "/Project/tmp.txt"}]}, bob)
    jid = launch["async_job_id"]
    mine = srv.ok("files/delete_batch/check", {"async_job_id": jid}, bob)
    assert mine["entries"][0]["metadata"]["path_display"] == "/Project/tmp.txt"
    assert mine["entries"][0]["metadata"]["parent_shared_folder_id"] == sfid
    nobody = {"async_job_id": "dbjid:" + secrets.token_urlsafe(24)}
    for other in (world["alice"], world["vic"], world["eve"]):  # the folder's owner too
        same(
            srv.rpc("files/delete_batch/check", {"async_job_id": jid}, token=other),
            srv.rpc("files/delete_batch/check", nobody, token=other),
        )


def test_a_search_cursor_stops_at_a_folder_its_holder_left(srv: Server, world):
    alice, sfid = world["alice"], world["sfid"]
    carol = srv.new_account("carol")
    carol_id = add_member(srv, alice, sfid, carol, "editor")
    srv.upload("/a plan.txt", b"home", token=carol)
    first = srv.ok("files/search_v2", {"query": "plan", "options": {"max_results": 1}}, carol)
    assert [m["metadata"]["metadata"]["path_display"] for m in first["matches"]] == ["/a plan.txt"]
    assert first["has_more"]
    member = {".tag": "dropbox_id", "dropbox_id": carol_id}
    srv.ok(
        "sharing/remove_folder_member",
        {"shared_folder_id": sfid, "member": member, "leave_a_copy": False},
        alice,
    )
    rest = srv.ok("files/search/continue_v2", {"cursor": first["cursor"]}, carol)
    assert rest["matches"] == [] and not rest["has_more"], rest
    # and another account cannot use the cursor at all
    other = srv.rpc("files/search/continue_v2", {"cursor": first["cursor"]}, token=world["bob"])
    assert other.status == 409 and "invalid_argument" in other.text


def test_a_search_cursor_inside_a_folder_its_holder_left_ends(srv: Server, world):
    alice, sfid = world["alice"], world["sfid"]
    frank = srv.new_account("frank")
    frank_id = add_member(srv, alice, sfid, frank, "editor")
    srv.upload("/Project/plan b.txt", b"b", token=alice)
    first = srv.ok("files/search_v2", {"query": "plan", "options": {"max_results": 1}}, frank)
    [hit] = first["matches"]
    assert hit["metadata"]["metadata"]["path_display"].startswith("/Project/plan")
    assert first["has_more"]  # the cursor is inside the shared folder now
    member = {".tag": "dropbox_id", "dropbox_id": frank_id}
    srv.ok(
        "sharing/remove_folder_member",
        {"shared_folder_id": sfid, "member": member, "leave_a_copy": False},
        alice,
    )
    rest = srv.ok("files/search/continue_v2", {"cursor": first["cursor"]}, frank)
    assert rest == {"matches": [], "has_more": False}
