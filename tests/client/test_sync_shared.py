"""The sync client and shared folders (issue 13): every member's sync folder keeps the mounted
shared folder like any folder; an editor's edits reach every member; a viewer's edit is never
uploaded. Real `raftbox up`, in-process `SyncEngine`s, one folder per member."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_members_converge_under_random_edits(server, tmp_path: Path, seed: int) -> None:
    """alice (owner) and bob (editors) and carol (viewer) edit one shared folder at random,
    syncing in random order. After quiescence: the three copies of the folder are identical
    and equal the server's; every file an editor created and nobody touched again is there;
    nothing of carol's reached the folder, and each of her edits is hers, at her top level."""
    rng = random.Random(seed)
    (_, alice), (bob_email, bob), (carol_email, carol) = (
        _member(server, tmp_path, n) for n in ("alice", "bob", "carol")
    )
    roots = {n: tmp_path / n for n in ("alice", "bob", "carol")}
    for r in roots.values():
        r.mkdir()
    cfgs = {"alice": alice, "bob": bob, "carol": carol}
    (roots["alice"] / "Project" / "docs").mkdir(parents=True)
    (roots["alice"] / "Project" / "seed.txt").write_bytes(b"seed")
    assert sync(roots["alice"], alice).ok
    sfid = _rpc(alice, "sharing/share_folder", {"path": "/Project"})["shared_folder_id"]
    for email, level in ((bob_email, "editor"), (carol_email, "viewer")):
        member = {".tag": "email", "email": email}
        arg = {"shared_folder_id": sfid, "members": [{"member": member, "access_level": level}]}
        _rpc(alice, "sharing/add_folder_member", arg)
    for n in ("bob", "carol"):
        _rpc(cfgs[n], "sharing/mount_folder", {"shared_folder_id": sfid})
        assert sync(roots[n], cfgs[n]).ok

    created: dict[bytes, str] = {}  # content of a create → its name (never reused)
    touched: set[str] = set()  # names some op edited, renamed or deleted
    carol_writes: list[bytes] = []
    n_write = 0

    def files_in(root: Path) -> list[Path]:
        return sorted(p for p in (root / "Project").rglob("*") if p.is_file())

    for step in range(40):
        who = rng.choice(["alice", "bob", "bob", "alice", "carol"])
        root = roots[who]
        existing = files_in(root)
        op = rng.choice(["create", "create", "edit", "rename", "delete", "sync", "sync"])
        n_write += 1
        content = f"s{seed}#{n_write} by {who}".encode()
        if op == "create" or not existing:
            name = f"f{n_write}.txt"
            folder = rng.choice([root / "Project", root / "Project" / "docs"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
            if who == "carol":
                carol_writes.append(content)
            else:
                created[content] = name
        elif op == "edit":
            p = rng.choice(existing)
            touched.add(p.name)
            p.write_bytes(content)
            if who == "carol":
                carol_writes.append(content)
        elif op == "rename" and who != "carol":
            p = rng.choice(existing)
            touched.add(p.name)
            p.rename(p.with_name(f"r{n_write}-{p.name}"))
            touched.add(f"r{n_write}-{p.name}")
        elif op == "delete" and who != "carol":
            p = rng.choice(existing)
            touched.add(p.name)
            p.unlink()
        s = sync(root, cfgs[who])
        assert not s.counters.errors, (step, who, op, s.counters.errors)
        if rng.random() < 0.5:
            other = rng.choice(list(roots))
            assert sync(roots[other], cfgs[other]).ok

    for _ in range(3):  # quiescence: a round in which nobody does anything
        results = [sync(roots[n], cfgs[n]) for n in roots]
        assert all(r.ok for r in results), [r.counters.errors for r in results]
        if not any(r.did_something for r in results):
            break
    snaps = {n: shared(snapshot(r)) for n, r in roots.items()}
    assert snaps["alice"] == snaps["bob"] == snaps["carol"]
    listed = _rpc(alice, "files/list_folder", {"path": "/Project", "recursive": True})
    names = {"Project"}
    while True:
        names |= {e["path_display"][1:] for e in listed["entries"] if e[".tag"] != "deleted"}
        if not listed["has_more"]:
            break
        listed = _rpc(alice, "files/list_folder/continue", {"cursor": listed["cursor"]})
    assert names == set(snaps["alice"])
    in_folder = {v[1] for v in snaps["alice"].values() if v[0] == "file"}
    for content, name in created.items():
        if name not in touched:
            assert content in in_folder, (content, name)
    assert not any(b"by carol" in c for c in in_folder)
    carols = {v[1] for k, v in snapshot(roots["carol"]).items() if "/" not in k and v[0] == "file"}
    for c in carol_writes:
        assert c in carols, c


def test_unshare_mid_run(server, tmp_path: Path) -> None:
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
    (rb / "Project" / "bob.txt").write_bytes(b"from bob")
    assert sync(rb, bob).ok
    (ra / "Project" / "alice-late.txt").write_bytes(b"not synced when unshared")
    _rpc(alice, "sharing/unshare_folder", {"shared_folder_id": sfid, "leave_a_copy": False})
    for root, cfg in ((ra, alice), (rb, bob), (ra, alice)):
        s = sync(root, cfg)
        assert s.ok, (s.counters.errors, s.counters.messages)
    a = shared(snapshot(ra))
    assert a["Project/plan.txt"][1] == b"plan v1" and a["Project/bob.txt"][1] == b"from bob"
    assert a["Project/alice-late.txt"][1] == b"not synced when unshared"
    assert shared(snapshot(rb)) == {}  # bob's synced copy went with the share
