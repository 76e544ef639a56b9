"""Async jobs in the state machine (`raftbox.meta.jobs`): a `RunJob` runs its batch and keeps the
result under its id in the same entry; a job is found only by its own namespace and kind; ids are
never reused; count and age are bounded; replicas applying the same log agree."""

from __future__ import annotations

from raftbox.meta import jobs
from raftbox.meta.commands import (
    Copy,
    CopyAcross,
    CreateAccount,
    CreateFolder,
    Delete,
    DeletedMeta,
    FileMeta,
    FolderMeta,
    MetaError,
    Move,
    MoveAcross,
    RemoveAccount,
    RunJob,
    ShareFolder,
    WriteBatch,
    encode_command,
)
from raftbox.meta.fsm import MetaStore

from .helpers import Driver, content_dump


def job(jid: str, ns: int, batch, kind: str = "k", refused=()) -> RunJob:
    return RunJob(jid, ns, kind, encode_command(batch), list(refused))


def test_a_job_runs_its_batch_in_order_and_keeps_the_result(tmp_path) -> None:
    d = Driver()
    ns = d.setup()
    d.put(ns, "/a.txt")
    d.apply(CreateFolder(ns, "/g"))
    batch = WriteBatch(
        [
            CreateFolder(ns, "/f"),
            Copy(ns, "/a.txt", "/f/a.txt"),
            Move(ns, "/f/a.txt", "/f/b.txt"),  # sees the copy just made
            Delete(ns, "/nope"),
            CreateFolder(ns, "/g"),
        ]
    )
    r = d.apply(job("dbjid:1", ns, batch))
    assert [type(x) for x in r] == [FolderMeta, FileMeta, FileMeta, MetaError, MetaError]
    assert r[2].path_display == "/f/b.txt"
    assert r[3].tags == ["path_lookup", "not_found"]
    assert r[4].tags == ["path", "conflict", "folder"]
    done_ms, kept = d.store.job("dbjid:1", ns, "k")
    assert kept == r and done_ms == d.now_ms


def test_refused_entries_keep_their_slots() -> None:
    d = Driver()
    ns = d.setup()
    refused = [MetaError(["path", "malformed_path"]), None, MetaError(["x"]), None]
    r = d.apply(
        job("j", ns, WriteBatch([CreateFolder(ns, "/a"), CreateFolder(ns, "/b")]), refused=refused)
    )
    assert [getattr(x, "tags", None) or x.path_display for x in r] == [
        ["path", "malformed_path"],
        "/a",
        ["x"],
        "/b",
    ]
    assert d.store.job("j", ns, "k")[1] == r


def test_a_job_is_found_only_by_its_namespace_and_kind() -> None:
    d = Driver()
    ns = d.setup()
    other = d.apply(CreateAccount("b@example.com", "Bob", b"tok-b")).home_ns
    d.apply(job("dbjid:x", ns, WriteBatch([CreateFolder(ns, "/a")]), kind="delete_batch"))
    assert d.store.job("dbjid:x", ns, "delete_batch") is not None
    assert d.store.job("dbjid:x", other, "delete_batch") is None
    assert d.store.job("dbjid:x", ns, "copy_batch") is None
    assert d.store.job("dbjid:y", ns, "delete_batch") is None
    assert d.store.job("z" * 10_000, ns, "delete_batch") is None


def test_a_bad_job_runs_nothing() -> None:
    d = Driver()
    ns = d.setup()
    d.apply(job("j", ns, WriteBatch([CreateFolder(ns, "/a")])))
    before = content_dump(d.store)
    for bad in (
        job("j", ns, WriteBatch([CreateFolder(ns, "/b")])),  # the id is taken
        job("", ns, WriteBatch([CreateFolder(ns, "/b")])),
        job("j" * 101, ns, WriteBatch([CreateFolder(ns, "/b")])),
        job("j2", 999_999, WriteBatch([CreateFolder(ns, "/b")])),  # no such namespace
        job("j3", ns, job("j4", ns, WriteBatch([CreateFolder(ns, "/b")]))),  # a job in a job
        RunJob("j5", ns, "k", b"\xc1garbage"),
        job(
            "j6",
            ns,
            WriteBatch([CreateFolder(ns, "/b")]),
            refused=[DeletedMeta("n", "/n", "/n")],  # only an error or a folder done before
        ),
        RunJob(  # `shown` has one slot per entry of the whole batch, each "" or a path
            "j7", ns, "k", encode_command(WriteBatch([CreateFolder(ns, "/b")])), [None], ["", ""]
        ),
        RunJob("j8", ns, "k", encode_command(WriteBatch([CreateFolder(ns, "/b")])), [None], ["x"]),
    ):
        r = d.apply(bad)
        assert isinstance(r, MetaError) and r.tags == ["invalid_command"], bad
    assert content_dump(d.store) == before


def test_jobs_are_bounded_in_number_per_namespace_and_in_age(monkeypatch) -> None:
    monkeypatch.setattr(jobs, "JOBS_PER_NS_MAX", 3)
    d = Driver()
    ns = d.setup()
    for i in range(5):
        d.apply(job(f"j{i}", ns, WriteBatch([])))
    kept = [i for i in range(5) if d.store.job(f"j{i}", ns, "k") is not None]
    assert kept == [2, 3, 4]
    d.advance(jobs.JOB_KEEP_MS)
    assert d.store.job("j4", ns, "k") is not None  # kept until the next job sweeps
    d.apply(job("late", ns, WriteBatch([])))
    assert [i for i in range(5) if d.store.job(f"j{i}", ns, "k") is not None] == []
    assert d.store.job("late", ns, "k") is not None


def test_removing_the_account_forgets_its_jobs() -> None:
    d = Driver()
    ns = d.setup()
    d.apply(job("j", ns, WriteBatch([])))
    d.apply(RemoveAccount("a@example.com"))
    assert d.store.job("j", ns, "k") is None


def test_two_replicas_applying_the_same_log_keep_the_same_jobs() -> None:
    d = Driver()
    ns = d.setup()
    d.put(ns, "/a.txt")
    d.apply(job("j", ns, WriteBatch([Copy(ns, "/a.txt", "/b.txt"), Move(ns, "/b.txt", "/c")])))
    replica = MetaStore()
    for index, c in d.log:
        replica.apply(index, c)
    assert replica.dump(["jobs"]) == d.store.dump(["jobs"])
    assert replica.job("j", ns, "k") == d.store.job("j", ns, "k")


def test_a_folder_named_twice_in_a_batch_is_created_once() -> None:
    d = Driver()
    ns = d.setup()
    r = d.apply(
        WriteBatch(
            [
                CreateFolder(ns, "/A", autorename=True),
                CreateFolder(ns, "/a", autorename=True),  # the same path (case-insensitive)
                CreateFolder(ns, f"ns:{ns}/A", autorename=True),
            ]
        )
    )
    assert r[0] == r[1] == r[2] and r[0].path_display == "/A"
    assert [m.path_display for m in d.store.list_folder(ns, "", False, False, 100).entries] == [
        "/A"
    ]


def test_a_batch_past_an_entrys_positions_fails_the_rest_entry_by_entry(monkeypatch) -> None:
    """Positions (ids, revs) are bounded per raft entry (`context.MAX_POS`): the entries that
    run out fail with Dropbox's too-many tags, the ones before them stand."""
    from raftbox.meta import context

    d = Driver()
    ns = d.setup()
    d.put(ns, "/a.txt")
    monkeypatch.setattr(context, "MAX_POS", 3)
    r = d.apply(
        WriteBatch(
            [CreateFolder(ns, f"/f{i}") for i in range(4)]  # positions 0..3
            + [Copy(ns, "/a.txt", "/b.txt"), CreateFolder(ns, "/f4")]
        )
    )
    assert [m.path_display for m in r[:4]] == ["/f0", "/f1", "/f2", "/f3"]
    assert r[4].tags == ["too_many_files"]
    assert r[5].tags == ["too_many_write_operations"]
    assert d.store.get_metadata(ns, "/b.txt").tags == ["path", "not_found"]


def test_a_job_writes_across_namespaces_and_shows_results_under_their_mount() -> None:
    """Batch entries inside a mounted shared folder: `CopyAcross` and `MoveAcross` entries
    (the move is both or neither), `shown` puts each result under its mount point, a folder
    the API unmounted before the job sits in its `refused` slot."""
    d = Driver()
    home = d.setup()
    acct = d.store.auth_token(b"tok-a")
    d.apply(CreateFolder(home, "/Project"))
    shared = d.apply(ShareFolder(acct.account_id, "/Project")).ns
    d.put(home, "/a.txt", b"a")
    d.put(home, "/b.txt", b"b")
    d.put(shared, "/in.txt", b"in")
    done = FolderMeta("id:gone", "Old", "/old", "/Old")
    batch = WriteBatch(
        [
            CopyAcross(home, "/a.txt", shared, "/a.txt"),
            MoveAcross(home, "/b.txt", shared, "/b.txt"),
            MoveAcross(shared, "/in.txt", home, "/in.txt"),
            MoveAcross(home, "/missing", shared, "/x"),  # fails whole: nothing copied
            MoveAcross(home, "/in.txt", shared, "/a.txt"),  # a conflict: the source stays
        ]
    )
    shown = ["", "/Project", "/Project", "", "", "/Project"]
    r = d.apply(RunJob("j", home, "k", encode_command(batch), [done, None, None, None, None, None],
                       shown))  # fmt: skip
    assert r[0] == done
    assert [getattr(x, "path_display", None) for x in r[1:4]] == [
        "/Project/a.txt",
        "/Project/b.txt",
        "/in.txt",
    ]
    assert r[1].path_lower == "/project/a.txt"
    assert r[4].tags == ["from_lookup", "not_found"]
    assert r[5].tags[:2] == ["to", "conflict"]
    assert d.store.job("j", home, "k")[1] == r
    files = {e.path_display for e in d.store.list_folder(home, "", recursive=True).entries}
    assert files == {"/Project", "/a.txt", "/in.txt"}
    inside = {e.path_display for e in d.store.list_folder(shared, "", recursive=True).entries}
    assert inside == {"/a.txt", "/b.txt"}
