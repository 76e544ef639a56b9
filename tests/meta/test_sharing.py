"""Shared folders in the state machine (`raftbox.meta.sharing`): each command's effect and
refusals, ids kept across the move into a shared namespace, copies on leave and unshare."""

import pytest

from raftbox.meta import sharing
from raftbox.meta.commands import (
    AddMembers,
    CreateAccount,
    CreateFolder,
    MetaError,
    MountFolder,
    Relinquish,
    RemoveMember,
    SetMemberAccess,
    ShareFolder,
    ShareMember,
    ShareResult,
    UnmountFolder,
    Unshare,
)
from raftbox.meta.paths import parse_path

from .helpers import Driver


@pytest.fixture
def world():
    d = Driver()
    home_a = d.setup()
    a = d.store.auth_token(b"tok-a")
    b = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b"))
    c = d.apply(CreateAccount("c@example.com", "Carol", b"tok-c"))
    d.apply(CreateFolder(home_a, "/Project/docs"))
    d.put(home_a, "/Project/docs/plan.txt", b"plan")
    d.put(home_a, "/Project/readme.md", b"hello")
    return d, a, b, c


def live(store, ns):
    return sorted(e.path_display for e in store.list_folder(ns, "", recursive=True).entries)


def share(d, a):
    r = d.apply(ShareFolder(a.account_id, "/Project"))
    assert isinstance(r, ShareResult), r
    return r.ns


def test_share_moves_the_content_with_its_ids(world):
    d, a, b, c = world
    before = d.store.get_metadata(a.home_ns, "/Project/readme.md")
    ns = share(d, a)
    assert live(d.store, a.home_ns) == ["/Project"]
    assert live(d.store, ns) == ["/docs", "/docs/plan.txt", "/readme.md"]
    after = d.store.get_metadata(ns, "/readme.md")
    assert (after.id, after.rev, after.content_hash) == (before.id, before.rev, before.content_hash)
    assert sharing.mounts(d.store.db, a.account_id) == [
        sharing.Mount(ns, "/project", "/Project", "owner")
    ]
    # the new namespace may reference the blocks of what it holds (dedup stays per namespace)
    blocks = d.store.file_blocks(ns, "/readme.md")[1]
    assert d.store.ns_has_blocks(ns, [b.id for b in blocks]) == {b.id for b in blocks}


def test_share_refusals(world):
    d, a, b, c = world
    d.put(a.home_ns, "/f.txt", b"f")
    assert d.apply(ShareFolder(a.account_id, "/f.txt")) == MetaError(["bad_path", "is_file"])
    ns = share(d, a)
    assert d.apply(ShareFolder(a.account_id, "/Project")).tags == ["bad_path", "already_shared"]
    assert d.apply(ShareFolder(a.account_id, "/Project/docs")).tags == [
        "bad_path",
        "inside_shared_folder",
    ]
    assert d.apply(ShareFolder(a.account_id, "")).tags == ["bad_path", "invalid_path"]
    assert ns


def test_share_of_a_folder_containing_a_mount_is_refused(world):
    d, a, b, c = world
    d.apply(CreateFolder(a.home_ns, "/Outer/Inner"))
    d.apply(ShareFolder(a.account_id, "/Outer/Inner"))
    assert d.apply(ShareFolder(a.account_id, "/Outer")).tags == [
        "bad_path",
        "contains_shared_folder",
    ]


def test_invite_mount_unmount_relinquish(world):
    d, a, b, c = world
    ns = share(d, a)
    r = d.apply(
        AddMembers(
            a.account_id,
            ns,
            [ShareMember(b.account_id, "", "editor"), ShareMember("", "C@Example.com", "viewer")],
        )
    )
    assert r == ShareResult(ns, ["", ""])
    assert [s.ns for s in sharing.shares_of(d.store.db, b.account_id, b.email, True)] == [ns]
    assert [s.ns for s in sharing.shares_of(d.store.db, c.account_id, c.email, True)] == [ns]
    # a viewer may not invite; a stranger cannot mount
    assert d.apply(MountFolder(c.account_id, ns)) == ShareResult(ns)
    assert d.apply(
        AddMembers(c.account_id, ns, [ShareMember(b.account_id, "", "editor")])
    ).tags == ["no_permission"]
    stranger = d.apply(CreateAccount("s@example.com", "S", b"tok-s"))
    assert d.apply(MountFolder(stranger.account_id, ns)).tags == ["access_error", "not_a_member"]
    assert d.apply(MountFolder(stranger.account_id, 99999)).tags == ["access_error", "invalid_id"]
    # bob has a folder named Project already: the mount is autorenamed
    d.apply(CreateFolder(b.home_ns, "/Project"))
    assert d.apply(MountFolder(b.account_id, ns)) == ShareResult(ns)
    assert sharing.mounts(d.store.db, b.account_id)[0].display == "/Project (1)"
    assert d.apply(MountFolder(b.account_id, ns)).tags == ["already_mounted"]
    assert sharing.mounts(d.store.db, c.account_id) == [
        sharing.Mount(ns, "/project", "/Project", "viewer")
    ]
    assert d.apply(UnmountFolder(b.account_id, ns)) == ShareResult(ns)
    assert live(d.store, b.home_ns) == ["/Project"]
    assert [s.ns for s in sharing.shares_of(d.store.db, b.account_id, b.email, True)] == [ns]
    # carol leaves with a copy: the files are hers now, with new ids
    assert d.apply(Relinquish(c.account_id, ns, leave_a_copy=True)) == ShareResult(ns)
    assert live(d.store, c.home_ns) == [
        "/Project",
        "/Project/docs",
        "/Project/docs/plan.txt",
        "/Project/readme.md",
    ]
    mine = d.store.get_metadata(c.home_ns, "/Project/readme.md")
    assert mine.id != d.store.get_metadata(ns, "/readme.md").id
    assert sharing.access_of(d.store.db, ns, c.account_id) is None
    assert d.apply(Relinquish(a.account_id, ns)).tags == ["folder_owner"]


def test_update_and_remove_member(world):
    d, a, b, c = world
    ns = share(d, a)
    d.apply(AddMembers(a.account_id, ns, [ShareMember(b.account_id, "", "editor")]))
    d.apply(MountFolder(b.account_id, ns))
    assert d.apply(
        SetMemberAccess(b.account_id, ns, ShareMember(a.account_id, "", "viewer"))
    ).tags == ["no_permission"]
    assert d.apply(
        SetMemberAccess(a.account_id, ns, ShareMember(b.account_id, "", "viewer"))
    ) == ShareResult(ns)
    assert sharing.access_of(d.store.db, ns, b.account_id) == "viewer"
    assert d.apply(
        RemoveMember(a.account_id, ns, ShareMember(c.account_id, "", "viewer"))
    ).tags == [
        "member_error",
        "not_a_member",
    ]
    assert d.apply(
        RemoveMember(a.account_id, ns, ShareMember(b.account_id, "", "viewer"), job_id="j1")
    ) == ShareResult(ns, [""])
    assert live(d.store, b.home_ns) == []
    assert sharing.job(d.store.db, "j1", a.account_id) == (ns, "")
    assert sharing.job(d.store.db, "j1", b.account_id) is None


def test_unshare_owner_keeps_ids_members_copy_if_asked(world):
    d, a, b, c = world
    ns = share(d, a)
    ids = d.store.get_metadata(ns, "/readme.md").id
    d.apply(
        AddMembers(
            a.account_id,
            ns,
            [ShareMember(b.account_id, "", "editor"), ShareMember(c.account_id, "", "viewer")],
        )
    )
    d.apply(MountFolder(b.account_id, ns))
    d.apply(MountFolder(c.account_id, ns))
    assert d.apply(Unshare(b.account_id, ns)).tags == ["no_permission"]
    assert d.apply(Unshare(a.account_id, ns, leave_a_copy=False, job_id="u")) == ShareResult(
        ns, [""]
    )
    assert d.store.get_metadata(a.home_ns, "/Project/readme.md").id == ids
    assert live(d.store, b.home_ns) == []
    assert live(d.store, c.home_ns) == []
    assert sharing.mounts(d.store.db, a.account_id) == []
    assert d.store.namespace_info(ns) is None
    assert sharing.job(d.store.db, "u", a.account_id) == (ns, "")
    # a failed job is recorded too
    r = d.apply(Unshare(a.account_id, ns, job_id="v"))
    assert r == ShareResult(0, ["access_error/invalid_id"])
    assert sharing.job(d.store.db, "v", a.account_id) == (0, "access_error/invalid_id")


def test_resolve_is_pure():
    ms = [sharing.Mount(5, "/project", "/Project", "editor")]
    assert sharing.mount_of(ms, "/project/a") == ms[0]
    assert sharing.mount_of(ms, "/project") == ms[0]
    assert sharing.mount_of(ms, "/projects") is None
    assert sharing.inner(ms[0], parse_path("/Project/A/b")) == parse_path("/A/b")
    assert sharing.mounts_below(ms, "") == ms
    assert sharing.mounts_below(ms, "/project") == []
