"""The sync client and shared folders (issue 13): every member's sync folder keeps the mounted
shared folder like any folder; an editor's edits reach every member; a viewer's edit is never
uploaded. Real `raftbox up`, in-process `SyncEngine`s, one folder per member."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from pathlib import Path

import requests

from raftbox.admincli import user_add
from raftbox.client.config import Config
from raftbox.client.engine import Options, Summary, SyncEngine

from .synctest import snapshot


def _member(server: dict, tmp_path: Path, name: str) -> tuple[str, Config]:
    email = f"{name}-{os.getpid()}-{tmp_path.name}@example.test"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert user_add(email, server["data"], None, None, None) == 0
    token = out.getvalue().strip().splitlines()[-1]
    return email, Config(server=server["url"], token=token, ca=server["ca"])


def _rpc(cfg: Config, route: str, arg: dict) -> dict:
    r = requests.post(
        f"{cfg.server}/2/{route}",
        json=arg,
        headers={"Authorization": f"Bearer {cfg.token}"},
        verify=cfg.ca,
        timeout=30,
    )
    assert r.status_code == 200, (route, r.status_code, r.text)
    return r.json()


def sync(root: Path, cfg: Config) -> Summary:
    async def go() -> Summary:
        async with SyncEngine(root, cfg, Options()) as e:
            return await e.sync()

    return asyncio.run(go())


def shared(snap: dict, top: str = "Project") -> dict:
    return {k: v for k, v in snap.items() if k == top or k.startswith(top + "/")}


def test_members_converge_on_a_shared_folder(server, tmp_path: Path) -> None:
    _, alice = _member(server, tmp_path, "alice")
    bob_email, bob = _member(server, tmp_path, "bob")
    ra, rb = tmp_path / "a", tmp_path / "b"
    rb.mkdir()
    (ra / "Project" / "docs").mkdir(parents=True)
    (ra / "Project" / "plan.txt").write_bytes(b"plan v1")
    (ra / "mine.txt").write_bytes(b"alice only")
    assert sync(ra, alice).ok
    sf = _rpc(alice, "sharing/share_folder", {"path": "/Project"})
    sfid = sf["shared_folder_id"]
    member = {".tag": "email", "email": bob_email}
    _rpc(
        alice,
        "sharing/add_folder_member",
        {"shared_folder_id": sfid, "members": [{"member": member, "access_level": "editor"}]},
    )
    _rpc(bob, "sharing/mount_folder", {"shared_folder_id": sfid})
    assert sync(rb, bob).ok
    assert shared(snapshot(rb)) == shared(snapshot(ra))
    assert "mine.txt" not in snapshot(rb)
    # bob edits and adds; alice gets both; alice renames; bob follows
    (rb / "Project" / "plan.txt").write_bytes(b"plan v2 by bob")
    (rb / "Project" / "docs" / "notes.txt").write_bytes(b"notes")
    s = sync(rb, bob)
    assert s.ok, (s.counters.errors, s.counters.messages, s.pending)
    assert sync(ra, alice).ok
    assert (ra / "Project" / "plan.txt").read_bytes() == b"plan v2 by bob"
    assert (ra / "Project" / "docs" / "notes.txt").read_bytes() == b"notes"
    (ra / "Project" / "docs").rename(ra / "Project" / "papers")
    assert sync(ra, alice).ok
    assert sync(rb, bob).ok
    assert shared(snapshot(rb)) == shared(snapshot(ra))
    assert (rb / "Project" / "papers" / "notes.txt").read_bytes() == b"notes"


def test_a_viewers_edit_stays_its_own(server, tmp_path: Path) -> None:
    _, alice = _member(server, tmp_path, "alice")
    carol_email, carol = _member(server, tmp_path, "carol")
    ra, rc = tmp_path / "a", tmp_path / "c"
    rc.mkdir()
    (ra / "Project").mkdir(parents=True)
    (ra / "Project" / "plan.txt").write_bytes(b"plan v1")
    assert sync(ra, alice).ok
    sfid = _rpc(alice, "sharing/share_folder", {"path": "/Project"})["shared_folder_id"]
    member = {".tag": "email", "email": carol_email}
    _rpc(
        alice,
        "sharing/add_folder_member",
        {"shared_folder_id": sfid, "members": [{"member": member, "access_level": "viewer"}]},
    )
    _rpc(carol, "sharing/mount_folder", {"shared_folder_id": sfid})
    assert sync(rc, carol).ok
    (rc / "Project" / "plan.txt").write_bytes(b"carol's edit")
    (rc / "Project" / "new.txt").write_bytes(b"carol's new file")
    s = sync(rc, carol)
    assert s.ok, (s.counters.errors, s.counters.messages)
    read_only = [m for m in s.counters.messages if m.startswith("read-only:")]
    assert len(read_only) == 2, s.counters.messages  # one message per file, once
    # the shared folder is the server's again; carol's edits are hers, at the top
    assert shared(snapshot(rc)) == shared(snapshot(ra))
    mine = {k: v for k, v in snapshot(rc).items() if "conflicted copy" in k}
    assert sorted(v[1] for v in mine.values()) == [b"carol's edit", b"carol's new file"]
    assert all("/" not in k for k in mine)
    assert sync(ra, alice).ok  # nothing of carol's reached the shared folder
    assert (ra / "Project" / "plan.txt").read_bytes() == b"plan v1"
    assert not (ra / "Project" / "new.txt").exists()
    again = sync(rc, carol)
    assert again.ok and not again.counters.messages


def test_removal_deletes_only_what_was_synced(server, tmp_path: Path) -> None:
    _, alice = _member(server, tmp_path, "alice")
    bob_email, bob = _member(server, tmp_path, "bob")
    ra, rb = tmp_path / "a", tmp_path / "b"
    rb.mkdir()
    (ra / "Project").mkdir(parents=True)
    (ra / "Project" / "plan.txt").write_bytes(b"plan v1")
    assert sync(ra, alice).ok
    sfid = _rpc(alice, "sharing/share_folder", {"path": "/Project"})["shared_folder_id"]
    member = {".tag": "email", "email": bob_email}
    arg = {"shared_folder_id": sfid, "members": [{"member": member, "access_level": "editor"}]}
    _rpc(alice, "sharing/add_folder_member", arg)
    _rpc(bob, "sharing/mount_folder", {"shared_folder_id": sfid})
    assert sync(rb, bob).ok
    (rb / "Project" / "draft.txt").write_bytes(b"not synced yet")
    _rpc(
        alice,
        "sharing/remove_folder_member",
        {"shared_folder_id": sfid, "member": member, "leave_a_copy": False},
    )
    s = sync(rb, bob)
    assert s.ok, (s.counters.errors, s.counters.messages)
    left = snapshot(rb)
    assert "Project/plan.txt" not in left  # synced: gone with the share
    assert left.get("Project/draft.txt") == ("file", b"not synced yet", False)  # kept
    assert sync(ra, alice).ok
    assert not (ra / "Project" / "draft.txt").exists()  # it went to bob's own space only
