"""The planner's rules (DESIGN.md §8), one test per rule, on hand-built trees."""

from __future__ import annotations

import unicodedata

import pytest

from raftbox.client import (
    ConflictCopy,
    DeleteLocal,
    DeleteRemote,
    Download,
    IgnoreRules,
    Kind,
    MkdirLocal,
    MkdirRemote,
    MoveLocal,
    MoveRemote,
    Node,
    OpKind,
    RenameTwin,
    Tree,
    UpdateSynced,
    Upload,
    conflicted_copy_name,
    plan,
    twin_name,
)

HOST, DAY = "box", "2024-05-01"
CC = f"(conflicted copy from {HOST} {DAY})"


def F(path: str, h: str = "x", **kw) -> Node:
    return Node(path, Kind.FILE, content_hash=h, size=len(h), **kw)


def D(path: str, **kw) -> Node:
    return Node(path, Kind.FOLDER, **kw)


def L(path: str, target: str, **kw) -> Node:
    return Node(path, Kind.SYMLINK, link_target=target, **kw)


def T(*nodes: Node, prefer: Tree | None = None) -> Tree:
    return Tree.from_nodes(nodes, prefer=prefer)


def P(local: Tree, remote: Tree, synced: Tree, **kw):
    args = dict(host=HOST, today=DAY, max_delete_share=1.0) | kw
    return plan(local, remote, synced, **args)


def kinds(p) -> list[OpKind]:
    return [op.kind for op in p.ops]


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, is_folder, want",
    [
        ("a.txt", False, f"a {CC}.txt"),
        ("a.tar.gz", False, f"a.tar {CC}.gz"),
        ("README", False, f"README {CC}"),
        (".bashrc", False, f".bashrc {CC}"),
        ("my.dir", True, f"my.dir {CC}"),
    ],
)
def test_conflicted_copy_name_goes_before_the_last_extension(name, is_folder, want):
    assert conflicted_copy_name(name, host=HOST, today=DAY, is_folder=is_folder) == want


def test_conflicted_copy_name_is_numbered_inside_the_parentheses_when_taken():
    taken = {f"a {CC}.txt", f"a (conflicted copy from {HOST} {DAY} 2).txt"}
    got = conflicted_copy_name("a.txt", host=HOST, today=DAY, taken=taken.__contains__)
    assert got == f"a (conflicted copy from {HOST} {DAY} 3).txt"


def test_conflicted_copy_name_fits_the_name_limit_and_cleans_the_host():
    got = conflicted_copy_name("é" * 120 + ".txt", host="a/b\x00c", today=DAY)
    assert len(got.encode()) <= 255 and got.endswith(f"(conflicted copy from a_b_c {DAY}).txt")
    with pytest.raises(ValueError):
        conflicted_copy_name("a", host=HOST, today="May 1st")


def test_twin_name_says_case_or_unicode_normalization():
    assert twin_name("A.txt", "a.txt") == "A (case conflict).txt"
    nfd = unicodedata.normalize("NFD", "Café.txt")
    assert twin_name(nfd, "Café.txt") == nfd[:-4] + " (Unicode normalization conflict).txt"
    assert twin_name("A", "a", taken={"A (case conflict)"}.__contains__) == "A (case conflict 2)"


# -- trees -------------------------------------------------------------------------------------


def test_keys_are_nfc_casefolded_and_display_names_kept():
    nfd = unicodedata.normalize("NFD", "/Café/X.TXT")
    n = F(nfd)
    assert n.key == "/café/x.txt" and n.path == nfd and n.name == "X.TXT"
    assert T(D(nfd.rsplit("/", 1)[0]), n).at("/CAFÉ/x.txt") == n


def test_tree_puts_case_and_unicode_twins_aside_with_their_subtrees():
    nfc, nfd = "/Café", unicodedata.normalize("NFD", "/Café")
    t = T(D("/a"), F("/a/x"), D("/A"), F("/A/y"), F(nfc), F(nfd))
    assert sorted(n.path for n in t.values()) == ["/A", "/A/y", nfc]
    assert [n.path for n in t.twins] == sorted(["/a", "/a/x", nfd])


def test_tree_keeps_the_twin_whose_name_is_in_synced_and_ignores_input_order():
    synced = T(F("/a.txt"))
    nodes = [F("/A.txt", "1"), F("/a.txt", "2")]
    t1, t2 = T(*nodes, prefer=synced), T(*reversed(nodes), prefer=synced)
    assert t1 == t2 and t1["/a.txt"].path == "/a.txt" and t1.twins[0].path == "/A.txt"


def test_tree_rejects_orphans_and_duplicates():
    with pytest.raises(ValueError):
        T(F("/a/b"))
    with pytest.raises(ValueError):
        T(F("/f"), F("/f/b"))
    with pytest.raises(ValueError):
        T(F("/a"), F("/a"))


def test_tree_with_node_without_and_moved_keep_it_a_tree():
    t = T(D("/a"), F("/a/x"), D("/a/b"), F("/a/b/y"))
    assert list(t.with_node(F("/a/b", "z"))) == ["/a", "/a/b", "/a/x"]
    assert list(t.without("/a/b")) == ["/a", "/a/x"]
    m = t.moved("/a", "/Q")
    assert [n.path for n in m.values()] == ["/Q", "/Q/b", "/Q/b/y", "/Q/x"]
    assert [n.path for n in t.moved("/a", "/A").values()][0] == "/A"  # case-only


# -- the three-way merge -----------------------------------------------------------------------


def test_change_on_one_side_only_is_propagated():
    s = F("/f", "old", remote_id="id:1", rev="r1")
    edited = P(T(F("/f", "new")), T(F("/f", "old", rev="r1")), T(s))
    assert edited.ops == (Upload("/f", F("/f", "new"), "r1"),)
    here = F("/f", "old", inode=7)
    p = P(T(here), T(F("/f", "new", rev="r2")), T(s))
    assert p.ops == (Download("/f", F("/f", "new", rev="r2"), here),)


def test_identical_content_is_never_a_conflict():
    p = P(T(F("/f", "same")), T(F("/f", "same", remote_id="id:1", rev="r1")), T())
    assert kinds(p) == [OpKind.UPDATE_SYNCED] and p.ops[0].node.rev == "r1"
    s = F("/f", "old", rev="r1")
    p = P(T(F("/f", "new")), T(F("/f", "new", rev="r2")), T(s))
    assert kinds(p) == [OpKind.UPDATE_SYNCED]


def test_both_changed_differently_keeps_local_as_a_conflicted_copy_and_takes_remote():
    s, mine, theirs = F("/d.txt", "old", rev="r1"), F("/d.txt", "mine"), F("/d.txt", "theirs")
    p = P(T(mine), T(theirs), T(s))
    copy = f"/d {CC}.txt"
    assert p.ops == (
        ConflictCopy("/d.txt", copy, mine),
        Download("/d.txt", theirs, None),
        Upload(copy, F(copy, "mine"), None),
    )


def test_new_on_both_sides_with_different_content_is_a_conflict_too():
    p = P(T(F("/n", "a")), T(F("/n", "b")), T())
    assert kinds(p) == [OpKind.CONFLICT_COPY, OpKind.DOWNLOAD, OpKind.UPLOAD]


def test_conflicted_copy_takes_a_name_free_on_every_side():
    taken = F(f"/d {CC}.txt", "earlier")
    p = P(T(F("/d.txt", "mine")), T(F("/d.txt", "theirs"), taken), T(F("/d.txt", "old")))
    assert p.ops[0] == ConflictCopy("/d.txt", f"/d (conflicted copy from {HOST} {DAY} 2).txt",
                                    F("/d.txt", "mine"))  # fmt: skip


def test_a_deletion_propagates_only_for_an_entry_in_the_synced_tree():
    # Present on one side, never synced: the other side never saw it, so it is copied over.
    assert kinds(P(T(F("/new")), T(), T())) == [OpKind.UPLOAD]
    assert kinds(P(T(), T(F("/new")), T())) == [OpKind.DOWNLOAD]


def test_deleted_on_one_side_and_unchanged_on_the_other_is_deleted():
    s, here = F("/f", rev="r1"), F("/f", inode=3, mtime_ns=9)
    assert P(T(here), T(), T(s)).ops == (DeleteLocal("/f", here),)
    assert P(T(), T(F("/f", rev="r1")), T(s)).ops == (DeleteRemote("/f", "r1"),)


def test_deleted_on_one_side_and_changed_on_the_other_keeps_the_change():
    s = F("/f", "old", rev="r1")
    assert P(T(F("/f", "new")), T(), T(s)).ops == (Upload("/f", F("/f", "new"), None),)
    assert P(T(), T(F("/f", "new")), T(s)).ops == (Download("/f", F("/f", "new"), None),)


def test_deleted_on_both_sides_is_forgotten():
    assert P(T(), T(), T(D("/a"), F("/a/x"))).ops == (UpdateSynced("/a", None),)


def test_a_folder_deleted_on_the_server_is_deleted_here_children_first():
    s = T(D("/a"), F("/a/x"), D("/a/b"), F("/a/b/y"))
    p = P(s, T(), s)
    assert p.ops == tuple(
        DeleteLocal(n.path, n) for n in [s["/a/x"], s["/a/b/y"], s["/a/b"], s["/a"]]
    )


def test_a_folder_deleted_on_one_side_survives_if_the_other_added_below_it():
    s = T(D("/a"), F("/a/old"))
    p = P(T(D("/a"), F("/a/old"), F("/a/new", "n")), T(), s)
    assert p.ops == (
        MkdirRemote("/a", D("/a")),
        DeleteLocal("/a/old", F("/a/old")),  # its own deletion still propagates
        Upload("/a/new", F("/a/new", "n"), None),
    )
    p = P(T(), T(D("/a"), F("/a/old", rev="r"), F("/a/new", "n")), s)
    assert kinds(p) == [OpKind.MKDIR_LOCAL, OpKind.DELETE_REMOTE, OpKind.DOWNLOAD]


def test_file_replaced_by_folder_on_one_side_replaces_it_on_the_other():
    s = T(F("/x", rev="r1"))
    p = P(T(D("/x"), F("/x/in", "i")), T(F("/x", rev="r1")), s)
    assert p.ops == (
        DeleteRemote("/x", "r1"),
        MkdirRemote("/x", D("/x")),
        Upload("/x/in", F("/x/in", "i"), None),
    )


def test_file_against_folder_changed_on_both_sides_never_loses_the_file():
    # Local edited the file while the server replaced it with a folder.
    p = P(T(F("/x", "edited")), T(D("/x"), F("/x/in", "i")), T(F("/x", "old")))
    copy = f"/x {CC}"
    assert p.ops == (
        ConflictCopy("/x", copy, F("/x", "edited")),
        MkdirLocal("/x", D("/x")),
        Download("/x/in", F("/x/in", "i"), None),
        Upload(copy, F(copy, "edited"), None),
    )
    # New on both sides: a local folder against a server file.
    p = P(T(D("/y"), F("/y/z")), T(F("/y", "f")), T())
    assert [op.kind for op in p.ops[:2]] == [OpKind.CONFLICT_COPY, OpKind.MKDIR_REMOTE]
    assert {op.path for op in p.ops if op.kind is OpKind.UPLOAD} == {f"/y {CC}/z"}


def test_a_rev_change_with_the_same_content_is_recorded_not_transferred():
    s = F("/f", "c", rev="r1")
    p = P(T(F("/f", "c")), T(F("/f", "c", rev="r2")), T(s))
    assert kinds(p) == [OpKind.UPDATE_SYNCED] and p.ops[0].node.rev == "r2"


def test_nothing_to_do_when_all_three_agree():
    n = F("/f", "c", rev="r1", inode=1, mtime_ns=2)
    assert P(T(D("/a"), n), T(D("/a"), n), T(D("/a"), n)).is_empty


# -- moves -------------------------------------------------------------------------------------


def test_a_local_rename_is_sent_as_a_move_not_delete_and_upload():
    s = F("/a.txt", "c", inode=5, rev="r1", remote_id="id:1")
    p = P(T(F("/b.txt", "c", inode=5)), T(F("/a.txt", "c", rev="r1", remote_id="id:1")), T(s))
    assert p.ops[0] == MoveRemote("/a.txt", "/b.txt")
    assert not {OpKind.UPLOAD, OpKind.DELETE_REMOTE} & set(kinds(p))


def test_a_local_folder_move_is_detected_by_inode_and_moves_its_subtree():
    s = T(D("/a", inode=1), F("/a/x", "1", inode=2), F("/a/y", "2", inode=3))
    local = T(D("/b", inode=1), F("/b/x", "1", inode=2), F("/b/y", "2", inode=3))
    p = P(local, s, s)
    assert p.ops[0] == MoveRemote("/a", "/b")
    assert set(kinds(p)) <= {OpKind.MOVE_REMOTE, OpKind.UPDATE_SYNCED}


def test_a_local_move_into_a_new_folder_creates_it_on_the_server_first():
    s = T(F("/x", "c", rev="r1"))
    p = P(T(D("/new"), F("/new/x", "c")), T(F("/x", "c", rev="r1")), s)
    assert p.ops[:2] == (MkdirRemote("/new", D("/new")), MoveRemote("/x", "/new/x"))


def test_a_remote_move_is_followed_by_id_and_a_local_edit_moves_with_it():
    s = T(D("/d", remote_id="id:d"), F("/d/f", "old", remote_id="id:f", rev="r1"))
    local = T(D("/d"), F("/d/f", "edited"))
    remote = T(D("/d", remote_id="id:d"), D("/e", remote_id="id:e"),
               F("/e/g", "old", remote_id="id:f", rev="r1"))  # fmt: skip
    assert P(local, remote, s).ops == (
        MkdirLocal("/e", D("/e", remote_id="id:e")),
        MoveLocal("/d/f", "/e/g"),
        Upload("/e/g", F("/e/g", "edited"), "r1"),
    )


def test_case_only_renames_are_moves_on_the_other_side():
    s = T(F("/readme", rev="r1"))
    p = P(T(F("/README")), T(F("/readme", rev="r1")), s)
    assert p.ops[0] == MoveRemote("/readme", "/README")
    p = P(T(F("/readme")), T(F("/ReadMe", rev="r1")), s)
    assert p.ops[0] == MoveLocal("/readme", "/ReadMe")


def test_case_only_rename_of_a_folder_renames_once_and_keeps_children_in_place():
    s = T(D("/docs"), F("/docs/a"))
    p = P(T(D("/Docs"), F("/Docs/a")), s, s)
    assert p.ops == (MoveRemote("/docs", "/Docs"),)


# -- twins -------------------------------------------------------------------------------------


def test_two_local_names_differing_only_by_case_are_never_merged_one_is_renamed():
    synced = T(F("/a.txt", "1"))
    local = T(F("/a.txt", "1"), F("/A.txt", "2"), prefer=synced)
    p = P(local, synced, synced)
    # Renamed aside, then uploaded under its new name in the same pass.
    renamed_node = F("/A (case conflict).txt", "2")
    assert p.ops == (
        RenameTwin("/A.txt", "/A (case conflict).txt", p.messages[0]),
        Upload("/A (case conflict).txt", renamed_node, None),
    )
    assert (
        "differ only by letter case" in p.messages[0] and "/A (case conflict).txt" in p.messages[0]
    )


def test_two_local_names_differing_only_by_unicode_form_are_renamed_with_a_message():
    nfc, nfd = "/Café", unicodedata.normalize("NFD", "/Café")
    p = P(T(F(nfc, "1"), F(nfd, "2")), T(), T())
    twin = next(op for op in p.ops if op.kind is OpKind.RENAME_TWIN)
    assert twin.src == nfd and twin.dst == nfd + " (Unicode normalization conflict)"
    assert "NFC/NFD" in twin.message
    assert Upload(nfc, F(nfc, "1"), None) in p.ops  # the kept one syncs now, the other next pass


def test_a_twin_keeps_its_folder_alive_when_the_server_deleted_it():
    s = T(D("/d"), F("/d/a"))
    p = P(T(D("/d"), F("/d/a"), F("/d/A", "new"), prefer=s), T(), s)
    assert OpKind.MKDIR_REMOTE in kinds(p)
    assert DeleteLocal("/d", D("/d")) not in p.ops


# -- order -------------------------------------------------------------------------------------


def test_parents_come_before_children_deletes_before_their_parents_and_transfers_last():
    local = T(D("/a"), D("/a/b"), F("/a/b/f", "new"), F("/g", "g1"))
    s = T(D("/old"), D("/old/sub"), F("/old/sub/x", rev="r"), F("/g", "g0", rev="r1"))
    p = P(local, s, s)
    assert kinds(p) == [
        OpKind.MKDIR_REMOTE,  # /a
        OpKind.MKDIR_REMOTE,  # /a/b
        OpKind.DELETE_REMOTE,  # /old/sub/x
        OpKind.DELETE_REMOTE,  # /old/sub
        OpKind.DELETE_REMOTE,  # /old
        OpKind.UPLOAD,  # /a/b/f
        OpKind.UPLOAD,  # /g
    ]
    assert [op.path for op in p.ops[:2]] == ["/a", "/a/b"]
    assert [op.path for op in p.ops[2:5]] == ["/old/sub/x", "/old/sub", "/old"]


# -- max-delete --------------------------------------------------------------------------------


def test_max_delete_refuses_a_pass_that_deletes_too_much_and_says_why():
    s = T(*(F(f"/f{i}", rev="r") for i in range(10)))
    p = P(T(F("/f0")), s, s, max_delete_share=0.5)
    assert p.refused and "9 of 10" in p.refused and "max_delete_share" in p.refused
    assert p.ops == () and len(p.withheld) == 9 and p.deletes == 9
    assert P(T(*list(s.values())[:6]), s, s, max_delete_share=0.5).refused is None  # 4 of 10
    assert P(T(F("/f0")), s, s, max_delete_share=0.5, max_delete_floor=9).refused is None


# -- ignore rules, symlinks, the x bit ----------------------------------------------------------


def test_ignored_entries_are_invisible_on_every_side():
    p = P(T(F("/.DS_Store"), F("/a.swp"), D("/.raftbox"), F("/.raftbox/index")), T(), T())
    assert p.is_empty
    # The server calls it x.tmp, the disk X.TMP (not matched by *.tmp): still never overwritten.
    assert P(T(F("/X.TMP", "mine")), T(F("/x.tmp", "theirs")), T()).is_empty
    rules = IgnoreRules(["build/"])
    assert P(T(D("/build"), F("/build/o")), T(), T(), ignore=rules).is_empty


def test_symlinks_are_synced_as_links_not_followed():
    s = L("/ln", "a", rev="r1")
    p = P(T(L("/ln", "b")), T(L("/ln", "a", rev="r1")), T(s))
    assert p.ops == (Upload("/ln", L("/ln", "b"), "r1"),)
    p = P(T(F("/ln", "a")), T(L("/ln", "a")), T())  # a file and a link: not the same content
    assert OpKind.CONFLICT_COPY in kinds(p)


def test_the_executable_bit_is_kept_and_unknown_bits_are_not_compared():
    s = F("/run.sh", "c", executable=False, rev="r1")
    p = P(T(F("/run.sh", "c", executable=True)), T(s), T(s))
    assert kinds(p) == [OpKind.UPLOAD] and p.ops[0].node.executable
    # A side that cannot tell (None) never disagrees: nothing to send, only a record.
    p = P(T(F("/run.sh", "c", executable=True)), T(F("/run.sh", "c", rev="r1")), T(s))
    assert kinds(p) == [OpKind.UPDATE_SYNCED] and p.ops[0].node.executable


def test_a_very_long_host_name_still_gives_free_numbered_names() -> None:
    host = "h" * 300
    taken: set[str] = set()
    for _ in range(3):
        name = conflicted_copy_name("a.txt", host=host, today="2026-01-02",
                                    taken=lambda n: n in taken)  # fmt: skip
        assert name not in taken and len(name.encode()) <= 255
        taken.add(name)


# -- held entries (what the engine cannot represent or read: hidden on every side) -------------


def test_a_folder_moved_locally_over_a_held_child_is_moved_and_the_child_kept():
    # /Café renamed to /a locally; /a/a (its child) is held: the server's copy moves with the
    # folder to where the held local entry is, and is never read as deleted locally.
    s = T(D("/Café", inode=1), F("/Café/a", "1", inode=2, rev="r1"))
    local = T(D("/a", inode=1), F("/a/a", "1", inode=2))
    remote = T(D("/Café"), F("/Café/a", "1", rev="r1"))
    p = P(local, remote, s, hold=["/a/a"])
    assert p.ops == (MoveRemote("/Café", "/a"),)


def test_a_folder_moved_on_the_server_carries_a_held_local_child_and_downloads_nothing_over_it():
    s = T(D("/x", remote_id="id:x"), F("/x/u", "1", rev="r1", remote_id="id:u"))
    local = T(D("/x"), F("/x/u", "1"))  # /x/u is held (say unreadable this pass)
    remote = T(D("/y", remote_id="id:x"), F("/y/u", "1", rev="r1", remote_id="id:u"))
    p = P(local, remote, s, hold=["/x/u"])
    assert p.ops == (MoveLocal("/x", "/y"),)


def test_a_folder_deleted_on_one_side_is_kept_while_it_holds_a_held_entry():
    s = T(D("/d"), F("/d/f", "1", rev="r1"), F("/d/h", "2", rev="r2"))
    remote = T(D("/d"), F("/d/f", "1", rev="r1"), F("/d/h", "2", rev="r2"))
    # Deleted locally; the server's /d/h is held: /d stays (re-created here), /d/f goes.
    p = P(T(), remote, s, hold=["/d/h"])
    assert DeleteRemote("/d/f", "r1") in p.ops and MkdirLocal("/d", D("/d")) in p.ops
    assert not any(op.kind is OpKind.DELETE_REMOTE and op.path == "/d" for op in p.ops)
    # Deleted on the server; the local /d/h is held: /d stays (re-created there), /d/f goes.
    local = T(D("/d"), F("/d/f", "1"), F("/d/h", "2"))
    p = P(local, T(), s, hold=["/d/h"])
    assert DeleteLocal("/d/f", F("/d/f", "1")) in p.ops and MkdirRemote("/d", D("/d")) in p.ops
    assert not any(op.kind is OpKind.DELETE_LOCAL and op.path == "/d" for op in p.ops)


def test_a_folder_moved_locally_carries_the_servers_held_entry_with_it_on_the_server():
    # The server's /x/long cannot be represented here (held); /x renamed to /y locally: one
    # server move takes it along (nothing deleted or uploaded), as the user's rename implies.
    s = T(D("/x", inode=1), F("/x/f", "1", inode=2, rev="r1"))
    local = T(D("/y", inode=1), F("/y/f", "1", inode=2))
    remote = T(D("/x"), F("/x/f", "1", rev="r1"), F("/x/long", "2", rev="r2"))
    p = P(local, remote, s, hold=["/x/long"])
    assert p.ops == (MoveRemote("/x", "/y"),)
