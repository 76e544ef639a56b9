"""MetaStore: every command's happy path and error tags, atomicity, determinism, durability."""

import re

import msgspec
import pytest

from raftbox.meta import fsm, writes
from raftbox.meta.commands import (
    AccountInfo,
    AddToken,
    CommitBatch,
    CommitFile,
    Copy,
    CreateAccount,
    CreateFolder,
    Delete,
    DeletedMeta,
    FileMeta,
    FolderMeta,
    InitCluster,
    MetaError,
    Move,
    Restore,
    RevokeToken,
    decode_result,
    encode_command,
)
from raftbox.meta.fsm import DAY_MS, MetaStore, format_ts
from raftbox.meta.paths import parse_path
from raftbox.raft.sessions import Command

from .helpers import SECRET, T0_MS, Driver, SqliteWork, block, content_dump, content_hash

REV = re.compile(r"[0-9a-f]{16}")


def err(*tags, **extra):
    return MetaError(list(tags), extra)


@pytest.fixture
def d():
    return Driver()


@pytest.fixture
def ns(d):
    return d.setup()


def live_paths(store, ns):
    page = store.list_folder(ns, "", recursive=True)
    return sorted(e.path_display for e in page.entries)


# -- cluster and accounts ------------------------------------------------------------------------


def test_commands_before_init_fail(d):
    assert d.apply(CreateAccount("a@x", "A")) == err("not_initialized")


def test_init_once(d):
    assert d.apply(InitCluster(b"short")).tags == ["invalid_command"]
    assert d.apply(InitCluster(SECRET)) is True
    assert d.apply(InitCluster(b"another secret, ignored!!")) is False
    assert d.store.secret() == SECRET


def test_accounts_and_tokens(d):
    d.apply(InitCluster(SECRET))
    a = d.apply(CreateAccount("Alice@Example.com", "Alice", b"t1"))
    assert isinstance(a, AccountInfo)
    assert len(a.account_id) == 40 and a.account_id.startswith("dbid:")
    assert a.home_ns == d.index
    assert d.store.auth_token(b"t1") == a
    assert d.store.get_account(a.account_id) == a
    assert d.store.account_by_email("alice@example.COM") == a
    assert d.apply(CreateAccount("alice@example.com", "Other")) == err("email_taken")
    assert d.apply(CreateAccount("bob@example.com", "Bob", b"t1")) == err("token_exists")
    b = d.apply(CreateAccount("bob@example.com", "Bob"))
    assert b.home_ns != a.home_ns and b.account_id != a.account_id
    assert d.apply(AddToken(b.account_id, b"t2")) is None
    assert d.store.auth_token(b"t2").account_id == b.account_id
    assert d.apply(AddToken(b.account_id, b"t1")) == err("token_exists")
    assert d.apply(AddToken("dbid:nobody", b"t3")) == err("account_not_found")
    assert d.apply(RevokeToken(b"t2")) is True
    assert d.apply(RevokeToken(b"t2")) is False
    assert d.store.auth_token(b"t2") is None


def test_malformed_payload_is_an_error_not_a_crash(d):
    d.setup()
    assert d.apply_raw(Command(1, 1, 1, T0_MS, b"\xc1garbage")).tags == ["invalid_command"]
    bad = msgspec.msgpack.encode(["commit", "not-an-int"])
    assert d.apply_raw(Command(1, 2, 2, T0_MS, bad)).tags == ["invalid_command"]


def test_unknown_namespace(d, ns):
    r = d.put(ns + 1000, "/a.txt")
    assert r.tags == ["invalid_command"]


# -- CommitFile: write modes ---------------------------------------------------------------------


def test_upload_to_empty_target(d, ns):
    m = d.put(ns, "/Docs/Report.txt", b"hello")
    assert isinstance(m, FileMeta)
    assert m.path_display == "/Docs/Report.txt" and m.path_lower == "/docs/report.txt"
    assert m.name == "Report.txt" and m.size == 5 and m.content_hash == content_hash(b"hello")
    assert REV.fullmatch(m.rev) and m.rev == f"{d.index:012x}0001"  # pos 0 = the folder
    assert m.id.startswith("id:")
    assert m.server_modified == format_ts(d.now_ms) == m.client_modified
    m2 = d.put(ns, "/b.txt", b"b", client_modified="2020-01-02T03:04:05Z")
    assert m2.client_modified == "2020-01-02T03:04:05Z"
    assert d.store.get_metadata(ns, "/docs/REPORT.TXT") == m
    assert isinstance(d.store.get_metadata(ns, "/docs"), FolderMeta)


def test_folder_at_target_conflicts_in_every_mode(d, ns):
    d.apply(CreateFolder(ns, "/x"))
    assert d.put(ns, "/x") == err("path", "conflict", "folder")
    assert d.put(ns, "/X", mode="overwrite") == err("path", "conflict", "folder")
    assert d.put(ns, "/x", mode="update", update_rev="0" * 16) == err("path", "conflict", "folder")
    assert d.put(ns, "/x", autorename=True).path_display == "/x (1)"


def test_identical_content_is_a_no_op(d, ns):
    m = d.put(ns, "/a.txt", b"same")
    pos = d.store.journal_position(ns)
    for kw in ({}, {"mode": "overwrite"}, {"mode": "update", "update_rev": m.rev}):
        assert d.put(ns, "/A.TXT", b"same", **kw) == m
    # update with a stale rev but identical content: still a no-op unless strict
    assert d.put(ns, "/a.txt", b"same", mode="update", update_rev="0" * 16) == m
    assert d.store.journal_position(ns) == pos
    strict = d.put(ns, "/a.txt", b"same", mode="update", update_rev="0" * 16, strict_conflict=True)
    assert strict == err("path", "conflict", "file")


def test_add_conflicts_and_autorenames(d, ns):
    d.put(ns, "/doc.txt", b"1")
    assert d.put(ns, "/doc.txt", b"2") == err("path", "conflict", "file")
    assert d.put(ns, "/DOC.txt", b"2", autorename=True).path_display == "/doc (1).txt"
    assert d.put(ns, "/doc.txt", b"3", autorename=True).path_display == "/doc (2).txt"
    assert d.apply(CreateFolder(ns, "/dir")).name == "dir"
    assert d.apply(CreateFolder(ns, "/dir", autorename=True)).path_display == "/dir (1)"


def test_overwrite_replaces_and_keeps_id_and_case(d, ns):
    m1 = d.put(ns, "/Doc.txt", b"1")
    m2 = d.put(ns, "/doc.TXT", b"2", mode="overwrite")
    assert m2.id == m1.id and m2.rev > m1.rev and m2.path_display == "/Doc.txt"
    assert m2.content_hash == content_hash(b"2")


def test_update_mode(d, ns):
    m1 = d.put(ns, "/doc.txt", b"1")
    m2 = d.put(ns, "/doc.txt", b"2", mode="update", update_rev=m1.rev)
    assert m2.id == m1.id and m2.rev != m1.rev
    stale = d.put(ns, "/doc.txt", b"3", mode="update", update_rev=m1.rev)
    assert stale == err("path", "conflict", "file")
    c1 = d.put(ns, "/doc.txt", b"3", mode="update", update_rev=m1.rev, autorename=True)
    assert c1.path_display == "/doc (conflicted copy).txt" and c1.id != m1.id
    c2 = d.put(ns, "/doc.txt", b"4", mode="update", update_rev=m1.rev, autorename=True)
    assert c2.path_display == "/doc (conflicted copy 1).txt"
    assert d.store.get_metadata(ns, "/doc.txt") == m2


def test_update_of_a_deleted_file_writes_unless_strict(d, ns):
    m = d.put(ns, "/doc.txt", b"1")
    d.apply(Delete(ns, "/doc.txt"))
    strict = d.put(ns, "/doc.txt", b"2", mode="update", update_rev=m.rev, strict_conflict=True)
    assert strict == err("path", "conflict", "file")
    w = d.put(ns, "/doc.txt", b"2", mode="update", update_rev=m.rev)
    assert isinstance(w, FileMeta) and w.id != m.id


def test_file_ancestor_conflict(d, ns):
    d.put(ns, "/a.txt")
    assert d.put(ns, "/a.txt/b") == err("path", "conflict", "file_ancestor")
    assert d.put(ns, "/A.txt/b/c", autorename=True) == err("path", "conflict", "file_ancestor")
    assert d.apply(CreateFolder(ns, "/a.txt/b")) == err("path", "conflict", "file_ancestor")


def test_implicit_parents_keep_existing_case(d, ns):
    d.put(ns, "/Docs/Sub/a.txt")
    assert live_paths(d.store, ns) == ["/Docs", "/Docs/Sub", "/Docs/Sub/a.txt"]
    m = d.put(ns, "/docs/SUB/b.txt")
    assert m.path_display == "/Docs/Sub/b.txt"


def test_malformed_and_root_paths(d, ns):
    assert d.put(ns, "/a/") == err("path", "malformed_path")
    assert d.put(ns, "") == err("path", "malformed_path")
    assert d.put(ns, "/") == err("path", "malformed_path")
    assert d.apply(CreateFolder(ns, "/a/../b")) == err("path", "malformed_path")
    assert d.put(ns, f"ns:{ns}/via-ns.txt").path_display == "/via-ns.txt"
    assert d.put(ns, "ns:999/x.txt") == err("path", "no_write_permission")
    assert d.apply(CreateFolder(ns, "ns:999/x")) == err("path", "no_write_permission")
    assert d.apply(CreateFolder(ns, f"ns:{ns}/x")).path_display == "/x"
    assert d.apply(CreateFolder(ns, "id:abc")) == err("path", "malformed_path")


def test_commit_by_id(d, ns):
    m = d.put(ns, "/a.txt", b"1")
    m2 = d.put(ns, m.id, b"2", mode="overwrite")
    assert m2.id == m.id and m2.path_display == "/a.txt"
    assert d.put(ns, "id:unknown", b"3") == err("path", "not_found")


def test_invalid_commits(d, ns):
    blk = block(b"abc")
    bad = [
        CommitFile(ns, "/a", [blk], 4, content_hash(b"abc"), uploaded=True),  # sizes
        CommitFile(ns, "/a", [blk], 3, "XYZ", uploaded=True),  # hash
        CommitFile(ns, "/a", [blk], 3, content_hash(b"abc"), mode="update", uploaded=True),
        CommitFile(ns, "/a", [blk], 3, content_hash(b"abc"), client_modified="yesterday"),
    ]
    for c in bad:
        assert d.apply(c).tags == ["invalid_command"]


def test_empty_file(d, ns):
    m = d.put(ns, "/empty", b"")
    assert m.size == 0 and m.content_hash == content_hash(b"")
    assert d.store.file_blocks(ns, "/empty") == (m, [])


# -- Dropship ------------------------------------------------------------------------------------


def test_knowing_a_hash_is_not_enough(d, ns):
    other = d.apply(CreateAccount("eve@x", "Eve", b"tok-e")).home_ns
    data = b"secret content"
    before = content_dump(d.store)
    r = d.put(ns, "/stolen", data, uploaded=False)
    assert r == err("need_blocks", missing=[block(data).id])
    assert content_dump(d.store) == before
    d.put(other, "/mine", data)  # the other namespace uploads the same bytes
    assert d.put(ns, "/stolen", data, uploaded=False).tags == ["need_blocks"]
    assert d.store.ns_has_blocks(ns, [block(data).id]) == set()
    assert d.store.ns_has_blocks(other, [block(data).id, "0" * 64]) == {block(data).id}
    # once this namespace uploaded them itself, it may reference them again without re-upload
    d.put(ns, "/uploaded", data)
    assert isinstance(d.put(ns, "/again", data, uploaded=False), FileMeta)


# -- CommitBatch ---------------------------------------------------------------------------------


def test_commit_batch_one_entry_many_revs(d, ns):
    d.put(ns, "/f")
    entries = [
        CommitFile(ns, "/b/1", [block(b"1")], 1, content_hash(b"1"), uploaded=True),
        CommitFile(ns, "/f/x/y", [block(b"2")], 1, content_hash(b"2"), uploaded=True),
        CommitFile(ns, "/b/2", [block(b"3")], 1, content_hash(b"3"), uploaded=True),
    ]
    out = d.apply(CommitBatch(entries))
    assert out[1] == err("path", "conflict", "file_ancestor")
    assert {m.rev[:12] for m in (out[0], out[2])} == {f"{d.index:012x}"}
    assert out[0].rev != out[2].rev
    assert live_paths(d.store, ns) == ["/b", "/b/1", "/b/2", "/f"]  # no /f/x from the failure


def commit_batch_work(n: int) -> int:
    """A fresh store commits a batch of n new files in one folder; returns the SQLite work."""
    d = Driver()
    ns = d.setup()
    entries = [
        CommitFile(ns, f"/dir/f{i:04}", [block(b"%d" % i)], len(b"%d" % i), "0" * 64, uploaded=True)
        for i in range(n)
    ]
    with SqliteWork(d.store) as work:
        out = d.apply(CommitBatch(entries))
    assert all(isinstance(m, FileMeta) for m in out)
    assert len({m.rev for m in out}) == n
    assert len(d.store.list_folder(ns, "/dir").entries) == n
    return work.units


def test_commit_batch_of_1000_does_work_linear_in_its_size():
    # Each file costs the same whatever the batch's size: no file re-reads the ones before it.
    # (Its speed in seconds is benchmarks/' business.)
    at_500 = commit_batch_work(500)
    at_1000 = commit_batch_work(1000)
    assert at_500 > 0
    assert at_1000 <= 2.3 * at_500, (at_500, at_1000)


# -- folders, delete -----------------------------------------------------------------------------


def test_create_folder(d, ns):
    f = d.apply(CreateFolder(ns, "/A/B"))
    assert f == d.store.get_metadata(ns, "/a/b") and f.path_display == "/A/B"
    assert isinstance(d.store.get_metadata(ns, "/A"), FolderMeta)
    assert d.apply(CreateFolder(ns, "/a/b")) == err("path", "conflict", "folder")
    d.put(ns, "/file")
    assert d.apply(CreateFolder(ns, "/file")) == err("path", "conflict", "file")
    assert d.apply(CreateFolder(ns, "/file", autorename=True)).path_display == "/file (1)"


def test_delete_file_and_include_deleted(d, ns):
    m = d.put(ns, "/a.txt")
    assert d.apply(Delete(ns, "/A.txt")) == m
    assert d.store.get_metadata(ns, "/a.txt") == err("path", "not_found")
    assert d.store.get_metadata(ns, "/a.txt", include_deleted=True) == DeletedMeta(
        "a.txt", "/a.txt", "/a.txt"
    )
    assert d.apply(Delete(ns, "/a.txt")) == err("path_lookup", "not_found")
    assert d.apply(Delete(ns, "/a/")) == err("path_lookup", "malformed_path")


def test_delete_folder_is_recursive(d, ns):
    d.put(ns, "/d/x/1")
    d.put(ns, "/d/2")
    d.put(ns, "/keep")
    f = d.store.get_metadata(ns, "/d")
    pos = d.store.journal_position(ns)
    assert d.apply(Delete(ns, "/D")) == f
    assert d.store.journal_position(ns) == pos + 1  # the folder alone: children implied
    assert live_paths(d.store, ns) == ["/keep"]
    with_deleted = d.store.list_folder(ns, "", recursive=True, include_deleted=True).entries
    assert sorted(e.path_lower for e in with_deleted if isinstance(e, DeletedMeta)) == [
        "/d",
        "/d/2",
        "/d/x",
        "/d/x/1",
    ]
    assert d.store.list_revisions(ns, "/d/x/1").is_deleted


def test_delete_with_parent_rev(d, ns):
    m = d.put(ns, "/a.txt")
    d.apply(CreateFolder(ns, "/dir"))
    assert d.apply(Delete(ns, "/a.txt", parent_rev="0" * 16)) == err(
        "path_write", "conflict", "file"
    )
    assert d.apply(Delete(ns, "/dir", parent_rev=m.rev)) == err("path_lookup", "not_file")
    assert d.apply(Delete(ns, "/a.txt", parent_rev=m.rev)) == m


def test_delete_by_id(d, ns):
    m = d.put(ns, "/a.txt")
    assert d.apply(Delete(ns, m.id)) == m


# -- move, copy ----------------------------------------------------------------------------------


def test_move_file(d, ns):
    m = d.put(ns, "/a.txt", b"data")
    r = d.apply(Move(ns, "/a.txt", "/x/y/B.txt"))
    assert isinstance(r, FileMeta)
    assert r.id == m.id and r.path_display == "/x/y/B.txt" and r.rev != m.rev
    assert r.content_hash == m.content_hash and r.server_modified == m.server_modified
    assert d.store.get_metadata(ns, "/a.txt") == err("path", "not_found")
    assert d.store.resolve(ns, m.id) == r
    assert d.store.file_blocks(ns, "/x/y/b.txt")[1] == [block(b"data")]


def test_move_folder_subtree_keeps_ids(d, ns):
    d.put(ns, "/src/a/1.txt")
    d.put(ns, "/src/2.txt")
    ids = {e.path_lower: e.id for e in d.store.list_folder(ns, "/src", recursive=True).entries}
    r = d.apply(Move(ns, "/src", "/dst/New"))
    assert r == FolderMeta(ids["/src"], "New", "/dst/new", "/dst/New")
    after = {
        e.path_lower: e.id for e in d.store.list_folder(ns, "/dst/new", recursive=True).entries
    }
    assert after == {k.replace("/src", "/dst/new"): v for k, v in ids.items()}
    assert live_paths(d.store, ns) == [
        "/dst",
        "/dst/New",
        "/dst/New/2.txt",
        "/dst/New/a",
        "/dst/New/a/1.txt",
    ]


def test_move_errors(d, ns):
    d.put(ns, "/f.txt")
    d.put(ns, "/g.txt")
    d.put(ns, "/dir/x")
    assert d.apply(Move(ns, "/nope", "/x")) == err("from_lookup", "not_found")
    assert d.apply(Move(ns, "/f.txt/", "/x")) == err("from_lookup", "malformed_path")
    assert d.apply(Move(ns, "/f.txt", "/g.txt")) == err("to", "conflict", "file")
    assert d.apply(Move(ns, "/f.txt", "/DIR")) == err("to", "conflict", "folder")
    assert d.apply(Move(ns, "/f.txt", "/g.txt/x")) == err("to", "conflict", "file_ancestor")
    assert d.apply(Move(ns, "/dir", "/dir/sub")) == err("cant_move_folder_into_itself")
    assert d.apply(Move(ns, "/f.txt", "/f.txt")) == err("duplicated_or_nested_paths")
    assert d.apply(Move(ns, "/f.txt", "/x/")) == err("to", "malformed_path")
    assert d.apply(Move(ns, "/f.txt", "/g.txt", autorename=True)).path_display == "/g (1).txt"


def test_case_only_rename(d, ns):
    f = d.put(ns, "/A.txt")
    r = d.apply(Move(ns, "/A.txt", "/a.txt"))
    assert r.id == f.id and r.path_display == "/a.txt"
    d.put(ns, "/Dir/Sub/x")
    folder = d.store.get_metadata(ns, "/dir")
    r = d.apply(Move(ns, "/Dir", "/DIR"))
    assert r == FolderMeta(folder.id, "DIR", "/dir", "/DIR")
    assert live_paths(d.store, ns) == ["/DIR", "/DIR/Sub", "/DIR/Sub/x", "/a.txt"]


def test_copy_subtree_new_ids_same_blocks(d, ns):
    d.put(ns, "/src/a/1.txt", b"one")
    src_ids = {e.id for e in d.store.list_folder(ns, "/src", recursive=True).entries}
    r = d.apply(Copy(ns, "/src", "/cp"))
    assert r.path_display == "/cp"
    copied = d.store.list_folder(ns, "/cp", recursive=True).entries
    assert [e.path_display for e in copied] == ["/cp", "/cp/a", "/cp/a/1.txt"]
    assert not ({e.id for e in copied} & src_ids)
    assert len({e.id for e in copied}) == 3
    assert d.store.file_blocks(ns, "/cp/a/1.txt")[1] == d.store.file_blocks(ns, "/src/a/1.txt")[1]
    assert live_paths(d.store, ns)[:3] == ["/cp", "/cp/a", "/cp/a/1.txt"]
    assert "/src/a/1.txt" in live_paths(d.store, ns)
    assert d.apply(Copy(ns, "/src", "/src/in")) == err("cant_move_folder_into_itself")
    assert d.apply(Copy(ns, "/src", "/src")) == err("duplicated_or_nested_paths")
    assert d.apply(Copy(ns, "/src", "/SRC", autorename=True)).path_display == "/SRC (1)"


def test_move_onto_deleted_history(d, ns):
    d.put(ns, "/dst/old")
    d.apply(Delete(ns, "/dst"))
    d.put(ns, "/src/old", b"new")
    r = d.apply(Move(ns, "/src", "/dst"))
    assert isinstance(r, FolderMeta)
    assert live_paths(d.store, ns) == ["/dst", "/dst/old"]


# -- revisions and restore -----------------------------------------------------------------------


def test_revisions_and_restore(d, ns):
    revs = [d.put(ns, "/f.txt", b"v%d" % i, mode="overwrite") for i in range(5)]
    rl = d.store.list_revisions(ns, "/f.txt", limit=3)
    assert [m.rev for m in rl.entries] == [m.rev for m in revs[::-1][:3]]
    assert rl.has_more and not rl.is_deleted and rl.server_deleted is None
    rest = d.store.list_revisions(ns, "/f.txt", before_rev=rl.entries[-1].rev)
    assert [m.rev for m in rest.entries] == [revs[1].rev, revs[0].rev] and not rest.has_more
    assert d.store.list_revisions(ns, "/f.txt", before_rev="f" * 16) == err("invalid_before_rev")
    assert d.store.list_revisions(ns, "/f.txt", before_rev="xyz") == err("invalid_before_rev")
    r = d.apply(Restore(ns, "/f.txt", revs[1].rev))
    assert r.content_hash == content_hash(b"v1") and r.rev > revs[-1].rev and r.id == revs[0].id
    assert d.store.resolve(ns, "rev:" + revs[1].rev) == revs[1]
    assert d.store.file_blocks(ns, "rev:" + revs[2].rev)[1] == [block(b"v2")]


def test_restore_deleted_file(d, ns):
    m = d.put(ns, "/d/f.txt", b"keep me")
    d.apply(Delete(ns, "/d"))
    rl = d.store.list_revisions(ns, "/d/f.txt")
    assert rl.is_deleted and rl.server_deleted == format_ts(d.now_ms)
    assert rl.entries[0].is_deleted
    r = d.apply(Restore(ns, "/d/f.txt", m.rev))
    assert r.id == m.id and r.path_display == "/d/f.txt" and r.rev != m.rev
    assert live_paths(d.store, ns) == ["/d", "/d/f.txt"]


def test_restore_errors(d, ns):
    m = d.put(ns, "/f.txt")
    o = d.put(ns, "/other.txt", b"o")
    assert d.apply(Restore(ns, "/f.txt", "zz")) == err("invalid_revision")
    assert d.apply(Restore(ns, "/f.txt", "0" * 16)) == err("invalid_revision")
    assert d.apply(Restore(ns, "/f.txt", o.rev)) == err("invalid_revision")
    assert d.apply(Restore(ns, "/f.txt/", m.rev)) == err("path_lookup", "malformed_path")
    d.apply(Delete(ns, "/f.txt"))
    d.apply(CreateFolder(ns, "/f.txt"))
    assert d.apply(Restore(ns, "/f.txt", m.rev)) == err("path_write", "conflict", "folder")


def test_list_revisions_by_id_follows_moves(d, ns):
    m = d.put(ns, "/a.txt", b"1")
    d.put(ns, "/a.txt", b"2", mode="overwrite")
    mv = d.apply(Move(ns, "/a.txt", "/b.txt"))
    by_path = d.store.list_revisions(ns, "/b.txt")
    assert [e.rev for e in by_path.entries] == [mv.rev]
    by_id = d.store.list_revisions(ns, "/b.txt", mode="id")
    assert len(by_id.entries) == 3 and by_id.entries[-1].rev == m.rev
    assert d.store.list_revisions(ns, m.id, mode="id") == by_id
    old = d.store.list_revisions(ns, "/a.txt")
    assert old.is_deleted and len(old.entries) == 2
    assert d.store.list_revisions(ns, "/nope") == err("path", "not_found")
    d.apply(CreateFolder(ns, "/dir"))
    assert d.store.list_revisions(ns, "/dir") == err("path", "not_file")


def test_revision_retention():
    d = Driver(MetaStore(revisions_keep=3, revisions_keep_ms=30 * DAY_MS))
    ns = d.setup()
    first = [d.put(ns, "/f", b"%d" % i, mode="overwrite") for i in range(5)]
    assert len(d.store.list_revisions(ns, "/f", limit=100).entries) == 5  # all young
    d.advance(31 * DAY_MS)
    d.put(ns, "/f", b"new", mode="overwrite")
    kept = d.store.list_revisions(ns, "/f", mode="id", limit=100).entries
    assert len(kept) == 3 and kept[-1].rev == first[3].rev


# -- queries ---------------------------------------------------------------------------------------


def test_resolve_forms(d, ns):
    m = d.put(ns, "/a/b.txt")
    assert d.store.resolve(ns, "/A/B.TXT") == m
    assert d.store.resolve(ns, m.id) == m
    assert d.store.resolve(ns, "rev:" + m.rev) == m
    assert d.store.resolve(ns, f"ns:{ns}/a/b.txt") == m
    assert d.store.resolve(ns, "ns:1/a/b.txt") == err("path", "not_found")
    assert d.store.resolve(ns, "rev:" + "f" * 16) == err("path", "not_found")
    assert d.store.resolve(ns, "a") == err("path", "malformed_path")
    assert d.store.file_blocks(ns, "/a") == err("path", "not_file")
    assert d.store.file_blocks(ns, "/zz") == err("path", "not_found")


def test_changed_since(d, ns):
    i = d.index
    d.put(ns, "/x")
    assert d.store.changed_since(i) == [(ns, d.store.journal_position(ns))]
    assert d.store.changed_since(d.index) == []


# -- exactly-once, atomicity, determinism, durability --------------------------------------------


def test_exactly_once(d, ns):
    payload = encode_command(
        CommitFile(ns, "/once", [block(b"1")], 1, content_hash(b"1"), uploaded=True)
    )
    c = Command(42, 1, 1, T0_MS + 10_000, payload)
    r1 = d.apply_raw(c)
    r2 = d.apply_raw(c)  # a retry after a leader change: a second raft entry
    assert r1 == r2 and isinstance(r2, FileMeta)
    assert len(d.store.list_revisions(ns, "/once").entries) == 1


def test_exactly_once_survives_restart(tmp_path):
    path = str(tmp_path / "meta.db")
    d = Driver(MetaStore(path))
    ns = d.setup()
    payload = encode_command(
        CommitFile(ns, "/once", [block(b"1")], 1, content_hash(b"1"), uploaded=True)
    )
    c = Command(42, 1, 1, T0_MS + 10_000, payload)
    r1 = d.apply_raw(c)
    d.store.close()
    d2 = Driver(MetaStore(path))
    assert d2.index == d.index
    r2 = d2.apply_raw(c)
    assert r2 == r1 and type(r2) is FileMeta
    assert len(d2.store.list_revisions(ns, "/once").entries) == 1


def test_failed_commands_change_nothing(d, ns):
    d.put(ns, "/f.txt")
    d.put(ns, "/dir/x")
    before = content_dump(d.store)
    failing = [
        CommitFile(ns, "/f.txt/deep/x", [], 0, content_hash(b""), uploaded=True),
        CommitFile(ns, "/a/b/c", [block(b"zz")], 2, content_hash(b"zz")),  # need_blocks
        CreateFolder(ns, "/dir"),
        Delete(ns, "/nope"),
        Move(ns, "/f.txt", "/dir/x"),
        Move(ns, "/dir", "/dir/in"),
        Copy(ns, "/dir", "/f.txt"),
        Restore(ns, "/f.txt", "0" * 16),
    ]
    for c in failing:
        assert isinstance(d.apply(c), MetaError), c
        assert content_dump(d.store) == before, c


def test_failure_after_partial_work_rolls_back(d, ns):
    d.put(ns, "/x/file")
    before = content_dump(d.store)
    # creates /p and /p/q implicitly, then fails at the target: all of it is rolled back
    r = d.put(ns, "/p/q/r", b"new", mode="update", update_rev="0" * 16, strict_conflict=True)
    assert r == err("path", "conflict", "file")
    assert content_dump(d.store) == before


def _workload(d: Driver) -> None:
    ns = d.setup()
    d.put(ns, "/a/b/c.txt", b"1")
    d.put(ns, "/a/b/c.txt", b"2", mode="overwrite")
    d.apply(Copy(ns, "/a", "/copy"))
    d.apply(Move(ns, "/a/b", "/moved"))
    d.apply(Delete(ns, "/copy/b"))
    d.put(ns, "/conflict", b"x")
    d.put(ns, "/conflict", b"y", autorename=True)
    d.apply(
        CommitBatch(
            [
                CommitFile(ns, f"/batch/{i}", [], 0, content_hash(b""), uploaded=True)
                for i in range(20)
            ]
        )
    )


def test_determinism_same_log_same_state(tmp_path):
    a = Driver(MetaStore())
    _workload(a)
    b = MetaStore()
    for index, c in a.log:
        b.apply(index, c)
    assert a.store.dump() == b.dump()
    assert a.store.snapshot() == b.snapshot()
    f = MetaStore(str(tmp_path / "f.db"))  # a file-backed replica too
    for index, c in a.log:
        f.apply(index, c)
    assert f.dump() == a.store.dump()


def test_restart_from_file_keeps_applied_index(tmp_path):
    path = str(tmp_path / "meta.db")
    d = Driver(MetaStore(path))
    _workload(d)
    d.store.apply_noop(d.index + 1)
    want = d.store.dump()
    d.store.close()
    s = MetaStore(path)
    assert s.applied_index() == d.index + 1
    assert s.dump() == want
    assert s.secret() == SECRET


def test_snapshot_restore_round_trip(tmp_path):
    d = Driver(MetaStore(str(tmp_path / "src.db")))
    _workload(d)
    snap = d.store.snapshot()
    for target in (MetaStore(), MetaStore(str(tmp_path / "dst.db"))):
        target.restore(snap)
        assert target.applied_index() == d.index
        assert target.dump() == d.store.dump()
        assert target.secret() == SECRET
        # the exactly-once table came along: replaying the last command is answered, not re-run
        index, c = d.log[-1]
        assert target.apply(d.index + 1, c) == decode_result(
            d.store.sessions.sessions[7].results[c.seq]
        )
    # the file-backed restore is durable
    target.close()
    again = MetaStore(str(tmp_path / "dst.db"))
    assert again.applied_index() == d.index + 1


def test_replayed_index_is_skipped(d, ns):
    before = d.store.dump()
    index, c = d.log[-1]
    assert d.store.apply(index, c).tags == ["internal_error"]
    assert d.store.dump() == before


def test_results_survive_the_propose_rpc(d, ns):
    m = d.put(ns, "/a")
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(m))
    assert isinstance(wire, dict) and decode_result(wire) == m
    batch = d.apply(CommitBatch([CommitFile(ns, "/a/x", [], 0, content_hash(b""), uploaded=True)]))
    assert decode_result(msgspec.msgpack.decode(msgspec.msgpack.encode(batch))) == batch
    e = err("lookup_failed", "incorrect_offset", correct_offset=3)
    assert decode_result(msgspec.msgpack.decode(msgspec.msgpack.encode(e))) == e
    assert e.summary == "lookup_failed/incorrect_offset/"


def test_too_many_items_in_one_entry(d, ns, monkeypatch):
    from raftbox.meta import context

    d.apply(
        CommitBatch(
            [CommitFile(ns, f"/d/{i}", [], 0, content_hash(b""), uploaded=True) for i in range(10)]
        )
    )
    before = content_dump(d.store)
    monkeypatch.setattr(context, "MAX_POS", 5)
    assert d.apply(Copy(ns, "/d", "/e")) == err("too_many_files")
    assert content_dump(d.store) == before


def test_a_bug_in_a_command_rolls_back_and_answers_internal_error(d, ns, monkeypatch):
    before = content_dump(d.store)

    def broken(ctx, c):
        writes.ensure_parents(ctx, c.ns, parse_path("/p/q/x"), "path")  # writes, then fails
        raise AttributeError("oops")

    monkeypatch.setitem(fsm.HANDLERS, CreateFolder, broken)
    assert d.apply(CreateFolder(ns, "/x")) == err("internal_error", reason="AttributeError")
    assert content_dump(d.store) == before


def test_forgotten_client_session(d, ns):
    c = Command(99, 5, 3, d.now_ms, encode_command(CreateFolder(ns, "/x")))
    assert d.apply_raw(c).tags == ["client_session_expired"]
    assert d.store.get_metadata(ns, "/x") == err("path", "not_found")


def test_client_session_sweeps_are_persisted(tmp_path):
    path = str(tmp_path / "m.db")
    d = Driver(MetaStore(path))
    ns = d.setup()
    d.advance(2 * 3600 * 1000)  # client 7 idles past the session TTL
    d.apply(CreateFolder(ns, "/x"))  # client 8's first command sweeps client 7
    assert list(d.store.sessions.sessions) == [8]
    assert [r[0] for r in d.store.dump(["client_sessions"])["client_sessions"]] == [8]
    want = d.store.sessions.dump()
    d.store.close()
    assert MetaStore(path).sessions.dump() == want


def test_result_kinds_and_account_namespace(d, ns):
    m = d.put(ns, "/a")
    assert m.kind == "file" and d.store.get_metadata(ns, "/").kind == "error"
    d.apply(Delete(ns, "/a"))
    assert d.store.get_metadata(ns, "/a", include_deleted=True).kind == "deleted"
    acct = d.apply(CreateAccount("noname@x", ""))  # an empty display name is allowed
    assert acct.kind == "account" and acct.namespace_id == acct.home_ns
