"""A shared folder is invisible to anyone who is not its member (issue 13): a stranger, and a
member once removed, reach nothing of it through `id:`, `ns:`, `rev:`, `blocks/has|get`,
`commit_batch`, a cursor, a long-poll or the sharing routes — and every answer is byte for byte
the answer for something that was never stored (nothing tells "exists, not yours" from "does
not exist"). Each attack is sent raw, so the test sees exactly what the server says."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import pytest

from .badinput import Server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("sharing-access")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def world(srv: Server):
    """alice shares /Project (a file in it) with bob (editor); eve is a stranger."""
    alice, bob, eve = (srv.new_account(n) for n in ("alice", "bob", "eve"))
    data = b"secret plan " + secrets.token_bytes(16)
    meta = srv.upload("/Project/plan.txt", data, token=alice)
    sf = srv.ok("sharing/share_folder", {"path": "/Project"}, alice)
    sfid = sf["shared_folder_id"]
    bob_id = srv.ok("users/get_current_account", None, bob)["account_id"]
    srv.ok(
        "sharing/add_folder_member",
        {
            "shared_folder_id": sfid,
            "members": [{"member": {".tag": "dropbox_id", "dropbox_id": bob_id}}],
        },
        alice,
    )
    srv.ok("sharing/mount_folder", {"shared_folder_id": sfid}, bob)
    block = hashlib.sha256(data).hexdigest()  # one block: the file is small
    return dict(alice=alice, bob=bob, eve=eve, sfid=sfid, meta=meta, block=block, size=len(data))


def fake_like(s: str) -> str:
    """A value of the same shape as `s` that names nothing."""
    if s.startswith("id:"):
        return "id:" + base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    return secrets.token_hex(len(s) // 2)[: len(s)]


def same(a, b) -> None:
    assert (a.status, a.body) == (b.status, b.body), (a.status, a.text, b.status, b.text)


def test_paths_by_id_ns_and_rev_answer_as_nonexistent(srv: Server, world):
    eve, m, sfid = world["eve"], world["meta"], world["sfid"]
    for real, fake in [
        (m["id"], fake_like(m["id"])),
        (f"ns:{sfid}/plan.txt", "ns:999999999/plan.txt"),
        (f"ns:{sfid}", "ns:999999999"),
        ("rev:" + m["rev"], "rev:" + fake_like(m["rev"])),
    ]:
        for route in ("files/get_metadata",):
            same(
                srv.rpc(route, {"path": real}, token=eve),
                srv.rpc(route, {"path": fake}, token=eve),
            )
        same(
            srv.content("files/download", {"path": real}, token=eve),
            srv.content("files/download", {"path": fake}, token=eve),
        )
    for real, fake in [(f"ns:{sfid}", "ns:999999999"), (m["id"], fake_like(m["id"]))]:
        same(
            srv.rpc("files/list_folder", {"path": real}, token=eve),
            srv.rpc("files/list_folder", {"path": fake}, token=eve),
        )
    # and the member sees it
    assert srv.rpc("files/get_metadata", {"path": m["id"]}, token=world["bob"]).status == 200


def test_blocks_and_commit_batch_do_not_tell_a_stored_block(srv: Server, world):
    eve, block, size = world["eve"], world["block"], world["size"]
    other = secrets.token_hex(32)
    has = srv.ok("raftbox/blocks/has", {"ids": [block, other]}, eve)
    assert has == {"have": []}
    g_real = srv.rpc("raftbox/blocks/get", {"ids": [block]}, token=eve)
    g_fake = srv.rpc("raftbox/blocks/get", {"ids": [other]}, token=eve)
    assert g_real.status == g_fake.status == 409
    assert g_real.text.replace(block, "X") == g_fake.text.replace(other, "X")

    def commit(bid: str):
        entry = {"path": "/stolen.txt", "blocks": [[bid, size]]}
        return srv.rpc("raftbox/commit_batch", {"entries": [entry]}, token=eve)

    c_real, c_fake = commit(block), commit(other)
    assert c_real.status == c_fake.status == 200
    assert c_real.text.replace(block, "X") == c_fake.text.replace(other, "X")
    assert "need_blocks" in c_real.text
    # a member may reference the shared folder's blocks (dedup), in its own space too
    bob = world["bob"]
    assert srv.ok("raftbox/blocks/has", {"ids": [block]}, bob) == {"have": [block]}
    done = srv.ok(
        "raftbox/commit_batch",
        {"entries": [{"path": "/mine.txt", "blocks": [[block, size]]}]},
        bob,
    )
    assert done["entries"][0][".tag"] == "success"


def test_sharing_routes_answer_as_for_an_unknown_folder(srv: Server, world):
    eve, sfid = world["eve"], world["sfid"]
    for route in (
        "sharing/get_folder_metadata",
        "sharing/list_folder_members",
        "sharing/mount_folder",
        "sharing/unmount_folder",
        "sharing/relinquish_folder_membership",
        "sharing/unshare_folder",
    ):
        same(
            srv.rpc(route, {"shared_folder_id": sfid}, token=eve),
            srv.rpc(route, {"shared_folder_id": "999999999"}, token=eve),
        )
    alice_id = srv.ok("users/get_current_account", None, world["alice"])["account_id"]
    fake_id = "dbid:" + secrets.token_urlsafe(32)[:35]
    same(
        srv.rpc("users/get_account", {"account_id": alice_id}, token=eve),
        srv.rpc("users/get_account", {"account_id": fake_id}, token=eve),
    )


def test_a_members_cursor_is_nobody_elses(srv: Server, world):
    eve, bob = world["eve"], world["bob"]
    cur = srv.ok("files/list_folder/get_latest_cursor", {"path": "/Project"}, bob)["cursor"]
    stolen = srv.rpc("files/list_folder/continue", {"cursor": cur}, token=eve)
    forged = srv.rpc("files/list_folder/continue", {"cursor": cur[:-6] + "AAAAAA"}, token=eve)
    same(stolen, forged)
    assert stolen.status == 409 and json.loads(stolen.body)["error"][".tag"] == "reset"


def test_a_removed_member_loses_cursor_and_long_poll(srv: Server, world):
    alice, sfid = world["alice"], world["sfid"]
    carol = srv.new_account("carol")
    carol_id = srv.ok("users/get_current_account", None, carol)["account_id"]
    member = {".tag": "dropbox_id", "dropbox_id": carol_id}
    srv.ok(
        "sharing/add_folder_member",
        {"shared_folder_id": sfid, "members": [{"member": member}]},
        alice,
    )
    srv.ok("sharing/mount_folder", {"shared_folder_id": sfid}, carol)
    cur = srv.ok("files/list_folder/get_latest_cursor", {"path": "/Project"}, carol)["cursor"]
    poll = {"cursor": cur, "timeout": 30}
    srv.upload("/Project/one.txt", b"one", token=alice)
    assert srv.rpc("files/list_folder/longpoll", poll, token=None).json() == {"changes": True}
    job = srv.ok(
        "sharing/remove_folder_member",
        {"shared_folder_id": sfid, "member": member, "leave_a_copy": False},
        alice,
    )
    assert job[".tag"] == "async_job_id"
    srv.upload("/Project/two.txt", b"two", token=alice)
    garbage = srv.rpc("files/list_folder/longpoll", {"cursor": "x" * 40}, token=None)
    same(srv.rpc("files/list_folder/longpoll", poll, token=None), garbage)
    reset = srv.rpc("files/list_folder/continue", {"cursor": cur}, token=carol)
    assert reset.status == 409 and json.loads(reset.body)["error"][".tag"] == "reset"
    # and its id: paths answer as unknown ones
    same(
        srv.rpc("files/get_metadata", {"path": world["meta"]["id"]}, token=carol),
        srv.rpc("files/get_metadata", {"path": fake_like(world["meta"]["id"])}, token=carol),
    )


def test_a_viewer_writes_nothing(srv: Server, world):
    alice, sfid = world["alice"], world["sfid"]
    vic = srv.new_account("viewer")
    vid = srv.ok("users/get_current_account", None, vic)["account_id"]
    srv.ok(
        "sharing/add_folder_member",
        {
            "shared_folder_id": sfid,
            "members": [
                {"member": {".tag": "dropbox_id", "dropbox_id": vid}, "access_level": "viewer"}
            ],
        },
        alice,
    )
    srv.ok("sharing/mount_folder", {"shared_folder_id": sfid}, vic)
    before = srv.snapshot(alice)
    attempts = [
        srv.content("files/upload", {"path": "/Project/v.txt"}, b"v", token=vic),
        srv.rpc("files/create_folder_v2", {"path": "/Project/d"}, token=vic),
        srv.rpc("files/delete_v2", {"path": "/Project/plan.txt"}, token=vic),
        srv.rpc(
            "files/move_v2", {"from_path": "/Project/plan.txt", "to_path": "/x.txt"}, token=vic
        ),
        srv.rpc("files/copy_v2", {"from_path": "/x", "to_path": "/Project/x"}, token=vic),
        srv.rpc(
            "raftbox/commit_batch",
            {"entries": [{"path": f"ns:{sfid}/v.txt", "blocks": []}]},
            token=vic,
        ),
    ]
    for r in attempts:
        assert "no_write_permission" in r.text or "not_found" in r.text, (r.status, r.text)
    assert sum("no_write_permission" in r.text for r in attempts) >= 5
    srv.assert_unchanged(before, alice)
