"""The sync client's rules (issue 7), each against a real `raftbox up`, one fresh account per test.

Clients are `SyncEngine`s run in-process (one folder each, like two machines); the races the
executor must survive (a file edited between planning and the write, a server version changed
between planning and the commit) are staged for real: plan, change the world, then execute that
plan. The CLI, `--watch` and `status` are driven as subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import unicodedata
from pathlib import Path

import pytest

from raftbox.client import executor as executor_mod
from raftbox.client.config import Config, save
from raftbox.client.engine import Options, Summary, SyncEngine, SyncError
from raftbox.client.executor import Executor
from raftbox.client.remote import Remote
from raftbox.client.watch import watch
from raftbox.meta.values import CLIENT_MODIFIED_MAX_S
from raftbox.testing.procs import wait_for

from .conftest import RAFTBOX


def run_sync(root: Path, cfg: Config, **opt) -> Summary:
    async def go() -> Summary:
        async with SyncEngine(root, cfg, Options(**opt)) as e:
            return await e.sync()

    return asyncio.run(go())


def plan_change_execute(root: Path, cfg: Config, change, **opt):
    """Plan a pass, call `change()`, then execute the plan made before it."""

    async def go():
        async with SyncEngine(root, cfg, Options(**opt)) as e:
            p, scan = await e.plan_pass()
            await asyncio.to_thread(change)  # may run another client's pass
            ex = Executor(e.root, e.index, e.remote, host=e.opt.host, today="2026-01-02",
                          chunking=e.chunking, blocklists=scan.blocklists)  # fmt: skip
            out = await ex.run(p.ops)
            return p, out, ex.c

    return asyncio.run(go())


def tree(root: Path) -> dict[str, object]:
    """Everything under `root` except the state folder: path → bytes / link / None (folder)."""
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".raftbox"]
        rel = os.path.relpath(dirpath, root)
        for d in dirs:
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                out[os.path.normpath(os.path.join(rel, d))] = ("link", os.readlink(p))
            else:
                out[os.path.normpath(os.path.join(rel, d))] = None
        for f in files:
            p = os.path.join(dirpath, f)
            key = os.path.normpath(os.path.join(rel, f))
            if os.path.islink(p):
                out[key] = ("link", os.readlink(p))
            else:
                out[key] = (Path(p).read_bytes(), os.access(p, os.X_OK))
    return out


@pytest.fixture
def pair(account, tmp_path: Path):
    cfg = account()
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    return a, b, cfg


def test_initial_sync_both_ways_then_nothing_to_do(pair) -> None:
    a, b, cfg = pair
    (a / "docs" / "deep").mkdir(parents=True)
    (a / "docs" / "deep" / "n.txt").write_text("nested")
    (a / "empty").write_bytes(b"")
    (a / "Résumé ☃.txt").write_text("unicode")
    (a / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024 + 17))  # streamed, > SMALL_BYTES
    (a / "emptydir").mkdir()
    (b / "from-b.txt").write_text("b was here first")
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 4
    s = run_sync(b, cfg)
    assert s.ok and s.counters.downloaded_files == 4 and s.counters.uploaded_files == 1
    s = run_sync(a, cfg)
    assert s.ok and s.counters.downloaded_files == 1
    assert tree(a) == tree(b)
    # Quiet: nothing is planned, nothing is sent but the cursor check, no file is re-read.
    for root in (a, b):
        s = run_sync(root, cfg)
        assert s.ok and s.passes == 1 and s.counters.uploaded_files == 0
        assert s.counters.downloaded_files == 0 and s.bytes_sent < 2048


def test_edits_deletes_and_folder_deletes_propagate(pair) -> None:
    a, b, cfg = pair
    (a / "d").mkdir()
    (a / "d" / "x").write_text("x")
    (a / "keep").write_text("v1")
    (a / "gone").write_text("bye")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "keep").write_text("v2 longer")
    (a / "gone").unlink()
    (a / "d" / "x").unlink()
    (a / "d").rmdir()
    s = run_sync(a, cfg)
    assert s.counters.deleted_remote == 3 and s.counters.uploaded_files == 1
    s = run_sync(b, cfg)
    assert s.counters.deleted_local == 3
    assert tree(b) == {"keep": (b"v2 longer", False)}


def test_a_file_the_other_side_never_saw_is_uploaded_not_deleted(pair) -> None:
    a, b, cfg = pair
    (a / "f").write_text("one")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "f").unlink()
    run_sync(a, cfg)
    (b / "new-on-b").write_text("never synced")  # created while the delete was travelling
    s = run_sync(b, cfg)
    assert s.ok and not (b / "f").exists() and (b / "new-on-b").exists()
    run_sync(a, cfg)
    assert (a / "new-on-b").read_text() == "never synced"


def test_max_delete_refuses_and_changes_nothing(pair) -> None:
    a, b, cfg = pair
    for i in range(30):
        (a / f"f{i}").write_text(str(i))
    run_sync(a, cfg)
    for i in range(20):
        (a / f"f{i}").unlink()
    s = run_sync(a, cfg, max_delete_share=0.5, max_delete_floor=10)
    assert not s.ok and s.refused and "20 of 30" in s.refused
    run_sync(b, cfg)
    assert len(tree(b)) == 30  # the server kept everything
    s = run_sync(a, cfg, max_delete_share=1.0)  # the user confirms
    assert s.ok and s.counters.deleted_remote == 20


def test_rename_is_a_move_not_a_reupload(pair) -> None:
    a, b, cfg = pair
    (a / "dir").mkdir()
    (a / "dir" / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    (a / "small.txt").write_text("s")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "dir").rename(a / "renamed")
    (a / "small.txt").rename(a / "renamed" / "moved.txt")
    s = run_sync(a, cfg)
    assert s.ok and s.counters.moved == 2 and s.counters.uploaded_files == 0
    assert s.bytes_sent < 64 * 1024
    s = run_sync(b, cfg)
    assert s.ok and s.counters.moved == 2 and s.counters.downloaded_files == 0
    assert s.bytes_received < 64 * 1024
    assert tree(a) == tree(b)


def test_case_only_rename_and_twins(pair) -> None:
    a, b, cfg = pair
    (a / "readme.txt").write_text("r")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "readme.txt").rename(a / "README.txt")
    assert run_sync(a, cfg).ok
    assert run_sync(b, cfg).ok
    assert sorted(os.listdir(b)) == [".raftbox", "README.txt"]
    # Two local names with one key: one is renamed with a message, never merged.
    (b / "Photo.JPG").write_bytes(b"one")
    (b / "photo.jpg").write_bytes(b"two")
    nfc, nfd = unicodedata.normalize("NFC", "Café"), unicodedata.normalize("NFD", "Café")
    (b / nfc).write_bytes(b"nfc")
    (b / nfd).write_bytes(b"nfd")
    s = run_sync(b, cfg)
    assert s.ok
    assert any("letter case" in m for m in s.counters.messages)
    assert any("Unicode" in m for m in s.counters.messages)
    run_sync(a, cfg)
    contents = sorted(v[0] for v in tree(a).values() if isinstance(v, tuple) and v[0] != "link")
    assert contents == [b"nfc", b"nfd", b"one", b"r", b"two"]
    assert tree(a) == tree(b)


def test_concurrent_edits_make_a_conflicted_copy_identical_ones_do_not(pair) -> None:
    a, b, cfg = pair
    (a / "doc.txt").write_text("base")
    (a / "same.txt").write_text("base")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "doc.txt").write_text("edit from A")
    (b / "doc.txt").write_text("edit from B!")
    (a / "same.txt").write_text("same edit")
    (b / "same.txt").write_text("same edit")
    run_sync(a, cfg, host="laptop")
    s = run_sync(b, cfg, host="desktop")
    assert s.counters.conflicts == 1
    run_sync(a, cfg)
    ta = tree(a)
    assert ta == tree(b)
    assert ta["doc.txt"] == (b"edit from A", False)
    copies = [k for k in ta if "conflicted copy from desktop" in k]
    assert len(copies) == 1 and copies[0].startswith("doc (") and copies[0].endswith(").txt")
    assert ta[copies[0]] == (b"edit from B!", False)
    assert ta["same.txt"] == (b"same edit", False)


def test_download_over_a_file_edited_after_the_scan_keeps_the_edit(pair) -> None:
    a, b, cfg = pair
    (a / "f.txt").write_text("v1")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "f.txt").write_text("v2 from A")
    run_sync(a, cfg)

    def edit() -> None:
        (b / "f.txt").write_text("edited on B during the pass")

    p, out, c = plan_change_execute(b, cfg, edit)
    assert [op.kind.value for op in p.ops] == ["download"]
    assert c.conflicts == 1
    assert (b / "f.txt").read_text() == "v2 from A"
    copies = [n for n in os.listdir(b) if "conflicted copy" in n]
    assert len(copies) == 1 and (b / copies[0]).read_text() == "edited on B during the pass"
    run_sync(b, cfg)
    run_sync(a, cfg)
    assert tree(a) == tree(b)


def test_delete_of_a_file_edited_after_the_scan_keeps_it(pair) -> None:
    a, b, cfg = pair
    (a / "f.txt").write_text("v1")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "f.txt").unlink()
    run_sync(a, cfg)

    def edit() -> None:
        (b / "f.txt").write_text("edited while the delete was planned")

    p, out, c = plan_change_execute(b, cfg, edit)
    assert [op.kind.value for op in p.ops] == ["delete_local"]
    assert out.stopped and "changed since the scan" in out.stopped
    assert (b / "f.txt").read_text() == "edited while the delete was planned"
    run_sync(b, cfg)  # an edit wins over a delete: uploaded
    run_sync(a, cfg)
    assert (a / "f.txt").read_text() == "edited while the delete was planned"


def test_upload_refused_by_the_server_ends_as_a_conflicted_copy(pair) -> None:
    a, b, cfg = pair
    (a / "f.txt").write_text("v1")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "f.txt").write_text("A's edit")
    (b / "f.txt").write_text("B's edit, committed first")

    p, out, c = plan_change_execute(a, cfg, lambda: run_sync(b, cfg))
    assert [op.kind.value for op in p.ops] == ["upload"] and c.conflicts == 1
    run_sync(a, cfg)
    run_sync(b, cfg)
    ta = tree(a)
    assert ta == tree(b) and ta["f.txt"] == (b"B's edit, committed first", False)
    assert [v for k, v in ta.items() if "conflicted copy" in k] == [(b"A's edit", False)]


def test_symlinks_stay_links_and_the_executable_bit_travels(pair) -> None:
    a, b, cfg = pair
    (a / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(a / "run.sh", 0o755)
    (a / "target.txt").write_text("t")
    os.symlink("target.txt", a / "link")
    os.symlink("/nonexistent/outside", a / "dangling")
    os.symlink("target.txt", a / "folder-link-target")
    run_sync(a, cfg)
    run_sync(b, cfg)
    assert os.readlink(b / "link") == "target.txt" and os.path.islink(b / "dangling")
    assert os.access(b / "run.sh", os.X_OK) and not os.access(b / "target.txt", os.X_OK)
    os.chmod(b / "run.sh", 0o644)
    os.unlink(b / "link")
    os.symlink("run.sh", b / "link")
    run_sync(b, cfg)
    run_sync(a, cfg)
    assert not os.access(a / "run.sh", os.X_OK) and os.readlink(a / "link") == "run.sh"
    assert tree(a) == tree(b)


def test_ignore_rules_default_and_raftboxignore(pair) -> None:
    a, b, cfg = pair
    (a / ".raftboxignore").write_text("build/\n*.log\n!keep.log\n")
    (a / "build").mkdir()
    (a / "build" / "out.o").write_text("o")
    (a / "x.log").write_text("log")
    (a / "keep.log").write_text("kept")
    (a / "edit.swp").write_text("vim")
    (a / "notes.txt~").write_text("backup")
    (a / "real.txt").write_text("real")
    run_sync(a, cfg)
    run_sync(b, cfg)
    assert sorted(tree(b)) == [".raftboxignore", "keep.log", "real.txt"]


def test_download_reuses_local_blocks(pair) -> None:
    a, b, cfg = pair
    rng = random.Random(11)  # fixed data: fixed block boundaries (the last old block changes)
    base = rng.randbytes(8 * 1024 * 1024)
    (a / "v1.bin").write_bytes(base)
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "v2.bin").write_bytes(base + rng.randbytes(100_000))  # a new file, mostly old blocks
    run_sync(a, cfg)
    s = run_sync(b, cfg)
    assert s.ok and s.counters.downloaded_files == 1
    assert s.counters.reused_bytes > 6 * 1024 * 1024
    assert s.bytes_received < 3 * 1024 * 1024
    assert (b / "v2.bin").read_bytes() == (a / "v2.bin").read_bytes()


def test_many_small_files_commit_in_one_batch(pair, monkeypatch) -> None:
    a, b, cfg = pair
    for i in range(300):
        (a / f"s{i:03}.txt").write_text(f"small {i}")
    calls: list[int] = []
    real = Remote.commit_batch

    async def spy(self, entries):
        calls.append(len(entries))
        return await real(self, entries)

    monkeypatch.setattr(Remote, "commit_batch", spy)
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 300
    assert calls == [300]


def test_a_no_op_pass_does_not_load_the_remote_tree_and_changes_still_arrive(
    pair, monkeypatch
) -> None:
    """Once a pass finds the trees settled, the next one checks its scan against the synced
    tree alone (`Index.agreed`); a change on either side still syncs, since a listing entry
    or an executed plan forgets that the trees agreed."""
    from raftbox.client.index import Index

    a, b, cfg = pair
    (a / "d").mkdir()
    (a / "d" / "f.txt").write_text("one")
    assert run_sync(a, cfg).ok and run_sync(b, cfg).ok
    assert run_sync(a, cfg).ok and run_sync(b, cfg).ok  # each reads back its own changes
    loads: list[str] = []
    real = Index.load_remote

    def spy(self):
        loads.append(str(self.root))
        return real(self)

    monkeypatch.setattr(Index, "load_remote", spy)
    for root in (a, b):
        s = run_sync(root, cfg)
        assert s.ok and s.passes == 1 and not s.did_something
    assert loads == []
    (b / "d" / "f.txt").write_text("two, from B")  # a change on the server, for A
    assert run_sync(b, cfg).counters.uploaded_files == 1
    s = run_sync(a, cfg)
    assert s.ok and s.counters.downloaded_files == 1 and loads
    assert (a / "d" / "f.txt").read_text() == "two, from B"
    assert run_sync(a, cfg).ok and run_sync(b, cfg).ok
    loads.clear()
    (a / "d" / "g.txt").write_text("new here")  # a local change: the remote tree is loaded
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 1 and loads
    assert run_sync(b, cfg).ok and tree(a) == tree(b)


def _spy_routes(monkeypatch) -> list[str]:
    routes: list[str] = []
    real = Remote.api

    async def spy(self, route, arg=None):
        routes.append(route)
        return await real(self, route, arg)

    monkeypatch.setattr(Remote, "api", spy)
    return routes


def test_new_folders_are_created_on_the_server_in_one_batch(pair, monkeypatch) -> None:
    a, b, cfg = pair
    for i in range(30):
        (a / f"top{i % 3}" / f"dir{i:02}" / "leaf").mkdir(parents=True)
    routes = _spy_routes(monkeypatch)
    s = run_sync(a, cfg)
    assert s.ok and s.counters.folders == 63
    assert routes.count("files/create_folder_batch") == 1
    assert "files/create_folder_v2" not in routes
    s = run_sync(b, cfg)
    assert s.ok and tree(a) == tree(b)
    assert run_sync(a, cfg).counters.folders == 0  # recorded as synced: nothing left to do


def test_a_folder_the_batch_refuses_is_skipped_and_its_children_wait(pair, monkeypatch) -> None:
    """Each entry of the batch is handled as its own create_folder_v2 answer: a file appears
    on the server where one planned folder goes, so that folder and its subtree wait (the next
    pass settles them as a conflict, as without the batch); the others are made."""
    a, b, cfg = pair
    for name in ("ok1", "ok2", "clash/inner", "ok3"):
        (a / name).mkdir(parents=True)
    (a / "clash" / "inner" / "f.txt").write_text("kept")
    routes = _spy_routes(monkeypatch)

    def clash() -> None:
        (b / "clash").write_text("a file on the server")
        assert run_sync(b, cfg).ok

    p, out, c = plan_change_execute(a, cfg, clash)
    assert routes.count("files/create_folder_batch") == 1
    assert "files/create_folder_v2" not in routes
    assert out.stopped is not None and "clash" in out.stopped and c.folders == 3
    assert run_sync(a, cfg).ok
    assert run_sync(b, cfg).ok and tree(a) == tree(b)
    assert (b / "ok3").is_dir()
    assert [v for k, v in tree(b).items() if k.endswith("inner/f.txt")] == [(b"kept", False)]


def test_a_second_sync_on_the_same_folder_is_refused(pair) -> None:
    a, _, cfg = pair

    async def go() -> None:
        async with SyncEngine(a, cfg):
            with pytest.raises(SyncError, match="another raftbox sync is running"):
                async with SyncEngine(a, cfg):
                    pass

    asyncio.run(go())


def test_a_folder_stays_bound_to_its_account(pair, account) -> None:
    a, _, cfg = pair
    (a / "mine").write_text("private")
    run_sync(a, cfg)
    other = account()
    with pytest.raises(SyncError, match="is synced with account"):
        run_sync(a, other)


def test_no_temp_file_is_left_and_no_partial_file_appears(pair, monkeypatch) -> None:
    """A download that fails mid-way leaves nothing under the real name."""
    a, b, cfg = pair
    (a / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    run_sync(a, cfg)
    real = Remote.get
    state = {"n": 0}

    async def broken(self, ids):
        async for bid, data in real(self, ids):
            state["n"] += 1
            if state["n"] > 3:
                raise ConnectionResetError("network gone mid-download")
            yield bid, data

    monkeypatch.setattr(Remote, "get", broken)
    s = run_sync(b, cfg, max_passes=1)
    assert not s.ok and not (b / "big.bin").exists()
    monkeypatch.setattr(Remote, "get", real)
    s = run_sync(b, cfg)
    assert s.ok and (b / "big.bin").read_bytes() == (a / "big.bin").read_bytes()
    assert os.listdir(b / ".raftbox" / executor_mod.TMP_DIR) == []


def _cli_env(tmp_path: Path, cfg: Config, name: str) -> Path:
    d = tmp_path / f"cfg-{name}"
    save(cfg, d)
    return d


def test_cli_sync_stats_and_status(pair, tmp_path: Path) -> None:
    a, b, cfg = pair
    ca = _cli_env(tmp_path, cfg, "a")
    (a / "hello.txt").write_text("hello")
    r = subprocess.run([RAFTBOX, "status", str(a), "--config", str(ca)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and "not synced yet" in r.stdout
    stats = tmp_path / "s.json"
    r = subprocess.run([RAFTBOX, "sync", str(a), "--config", str(ca), "--stats-json", str(stats)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("raftbox: synced") and "uploaded 1 files" in r.stdout
    st = json.loads(stats.read_text())
    assert st["ok"] and st["uploaded_files"] == 1 and st["bytes_sent"] > 0
    (a / "new.txt").write_text("pending")
    r = subprocess.run([RAFTBOX, "status", str(a), "--config", str(ca)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and "1 upload" in r.stdout and "/new.txt" in r.stdout
    assert "last sync" in r.stdout


def test_cli_refusal_exits_2_with_the_reason(pair, tmp_path: Path) -> None:
    a, _, cfg = pair
    ca = _cli_env(tmp_path, cfg, "a")
    for i in range(12):
        (a / f"f{i}").write_text("x")
    assert subprocess.run([RAFTBOX, "sync", str(a), "--config", str(ca)],
                          capture_output=True, timeout=120).returncode == 0  # fmt: skip
    for i in range(12):
        (a / f"f{i}").unlink()
    r = subprocess.run([RAFTBOX, "sync", str(a), "--config", str(ca), "--max-delete-min", "5"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "would delete 12 of 12" in r.stdout


def test_watch_keeps_two_folders_in_sync(pair, tmp_path: Path) -> None:
    a, b, cfg = pair
    procs = []
    try:
        for name, root in (("a", a), ("b", b)):
            c = _cli_env(tmp_path, cfg, name)
            log = open(tmp_path / f"watch-{name}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(
                [RAFTBOX, "sync", "--watch", str(root), "--config", str(c)],
                stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        (a / "from-a.txt").write_text("made in A")
        wait_for(lambda: (b / "from-a.txt").exists() and (b / "from-a.txt").read_text()
                 == "made in A", 60.0, "A's new file reached B")  # fmt: skip
        (b / "sub").mkdir()
        (b / "sub" / "from-b.txt").write_text("made in B")
        wait_for(lambda: (a / "sub" / "from-b.txt").exists(), 60.0, "B's new file reached A")
        (a / "from-a.txt").unlink()
        wait_for(lambda: not (b / "from-a.txt").exists(), 60.0, "A's delete reached B")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=30) == 0
        assert tree(a) == tree(b)
        for name in ("a", "b"):  # remote changes came by the push stream, not by retries
            log = (tmp_path / f"watch-{name}.log").read_text()
            assert "push stream lost" not in log and "pass failed" not in log, log
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def test_watch_falls_back_to_periodic_scans_when_the_os_limit_is_hit(pair, monkeypatch) -> None:
    import watchfiles

    a, b, cfg = pair

    async def no_watches(*args, **kw):
        raise OSError("OS file watch limit reached.")
        yield  # pragma: no cover (makes this an async generator)

    monkeypatch.setattr(watchfiles, "awatch", no_watches)
    messages: list[str] = []

    class Collect(executor_mod.Progress):
        def message(self, text: str) -> None:
            messages.append(text)

    async def go() -> None:
        stop = asyncio.Event()
        rounds: list[Summary] = []
        async with SyncEngine(a, cfg, progress=Collect()) as e:
            task = asyncio.create_task(
                watch(e, rounds.append, stop=stop, fallback_scan_s=0.2, periodic_s=600)
            )
            await asyncio.to_thread(
                wait_for, lambda: len(rounds) >= 1, 30.0, "the first round", poll_s=0.02
            )
            (a / "later.txt").write_text("found by a periodic scan")
            await asyncio.to_thread(
                wait_for, lambda: any(r.counters.uploaded_files for r in rounds), 30.0,
                "the periodic scan uploaded the new file", poll_s=0.02,
            )  # fmt: skip
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(go())
    limit = [m for m in messages if "cannot watch" in m]
    assert len(limit) == 1 and "max_user_watches" in limit[0] and "every 0.2 s" in limit[0]
    assert run_sync(b, cfg).counters.downloaded_files == 1


def test_a_watch_task_that_fails_is_not_lost(pair, monkeypatch) -> None:
    """Issue 12: a watcher task failing with an error nobody planned for ends `watch` with
    that error (the command then exits non-zero) instead of dying unseen while the rest runs."""
    import watchfiles

    a, _, cfg = pair

    async def broken(*args, **kw):
        raise ValueError("the file watcher broke")
        yield  # pragma: no cover (makes this an async generator)

    monkeypatch.setattr(watchfiles, "awatch", broken)

    async def go() -> None:
        stop = asyncio.Event()
        rounds: list[Summary] = []
        async with SyncEngine(a, cfg) as e:
            task = asyncio.create_task(watch(e, rounds.append, stop=stop))
            try:
                await asyncio.wait_for(asyncio.shield(task), 30)
            finally:
                stop.set()  # (the old code ran on without its watcher until stopped)
                await asyncio.wait_for(task, 30)

    with pytest.raises(ExceptionGroup) as err:
        asyncio.run(go())
    assert err.group_contains(ValueError, match="the file watcher broke")


def test_local_files_dated_past_2262_or_before_1970_sync(pair) -> None:
    """A local mtime past what SQLite's INTEGER nanoseconds hold (2300) or before the epoch
    used to stop the pass (OverflowError in the index); it syncs, the date sent within what
    every server accepts, and the next pass finds nothing to do (issue 11)."""
    a, b, cfg = pair
    (a / "far.txt").write_text("dated 2300")
    (a / "old.txt").write_text("dated 1900")
    far_ns, old_ns = 10_413_792_000 * 10**9, -2_208_988_800 * 10**9
    os.utime(a / "far.txt", ns=(far_ns, far_ns))
    os.utime(a / "old.txt", ns=(old_ns, old_ns))
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 2
    s = run_sync(a, cfg)
    assert s.ok and s.passes == 1 and not s.counters.uploaded_files
    s = run_sync(b, cfg)
    assert s.ok and (b / "far.txt").read_text() == "dated 2300"
    assert (b / "far.txt").stat().st_mtime_ns == CLIENT_MODIFIED_MAX_S * 10**9  # 2199-12-31
    assert (b / "old.txt").stat().st_mtime_ns == 0


def test_a_stuck_path_does_not_hold_up_the_others(pair) -> None:
    """A folder deleted on the server that cannot be removed here (a new file appeared in it
    after the scan) skips only its own subtree; the rest of the pass goes on."""
    a, b, cfg = pair
    (a / "stuck").mkdir()
    (a / "stuck" / "f").write_text("f")
    (a / "other.txt").write_text("v1")
    run_sync(a, cfg)
    run_sync(b, cfg)
    import shutil

    shutil.rmtree(a / "stuck")
    (a / "other.txt").write_text("v2")
    (a / "new.txt").write_text("new")
    run_sync(a, cfg)

    def late_file() -> None:
        (b / "stuck" / "late.txt").write_text("written after the scan")

    p, out, c = plan_change_execute(b, cfg, late_file)
    assert out.stopped and "not empty" in out.stopped
    assert (b / "other.txt").read_text() == "v2" and (b / "new.txt").read_text() == "new"
    assert (b / "stuck" / "late.txt").exists()
    s = run_sync(b, cfg)  # the late file is kept and uploaded: nothing is lost
    assert s.ok
    run_sync(a, cfg)
    assert (a / "stuck" / "late.txt").read_text() == "written after the scan"
    assert tree(a) == tree(b)


def test_a_folder_deleted_remotely_keeps_local_ignored_files(pair) -> None:
    a, b, cfg = pair
    (a / "proj").mkdir()
    (a / "proj" / "src.c").write_text("int main;")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (b / "proj" / "build.tmp").write_text("ignored by default, and B's own")
    (b / "proj" / ".DS_Store").write_text("clutter")
    import shutil

    shutil.rmtree(a / "proj")
    run_sync(a, cfg)
    s = run_sync(b, cfg)
    assert s.ok and any("not synced (ignored" in m for m in s.counters.messages)
    assert (b / "proj" / "build.tmp").exists() and not (b / "proj" / "src.c").exists()
    s = run_sync(b, cfg)
    assert s.ok and s.passes == 1


def test_entries_that_cannot_be_synced_are_reported_once(pair) -> None:
    a, b, cfg = pair
    os.mkfifo(a / "a-fifo")
    (a / "fine.txt").write_text("ok")
    bad = os.fsencode(str(a)) + b"/bad-\xff-name"
    with open(bad, "wb") as f:
        f.write(b"not utf-8 name")
    s = run_sync(a, cfg)
    notes = [m for m in s.counters.messages if m.startswith("not synced")]
    assert len(notes) == 2 and any("a-fifo" in m for m in notes)
    assert any("not UTF-8" in m for m in notes)
    run_sync(b, cfg)
    assert sorted(tree(b)) == ["fine.txt"]


def test_an_append_sends_about_the_appended_bytes(pair) -> None:
    """Cutting resumes after the old blocks (scanner._read_file): the old last block is not
    sent again, so appending 1 MiB to a big file sends about 1 MiB, and the other side fetches
    about that much (the rest is already on its disk)."""
    a, b, cfg = pair
    with open(a / "log.bin", "wb") as f:
        f.write(os.urandom(20 * 1024 * 1024 + 12345))
    run_sync(a, cfg)
    run_sync(b, cfg)
    with open(a / "log.bin", "ab") as f:
        f.write(os.urandom(1024 * 1024))
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 1
    assert s.bytes_sent < 1024 * 1024 + 64 * 1024, s.bytes_sent
    s = run_sync(b, cfg)
    assert s.ok and s.bytes_received < 1024 * 1024 + 64 * 1024, s.bytes_received
    assert (b / "log.bin").read_bytes() == (a / "log.bin").read_bytes()


def test_a_commit_that_never_got_there_is_not_taken_for_one_that_did(pair, monkeypatch) -> None:
    """The write-ahead row of an upload whose commit failed must not make the next pass
    believe the server has the edit (and then download the old version over it)."""
    import aiohttp

    a, b, cfg = pair
    (a / "f.txt").write_text("version 1")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (a / "f.txt").write_text("version 2: the edit")
    real = Remote.commit_batch

    async def network_gone(self, entries):
        raise aiohttp.ClientConnectionError("connection reset")

    monkeypatch.setattr(Remote, "commit_batch", network_gone)
    s = run_sync(a, cfg, max_passes=1)
    assert s.unavailable
    monkeypatch.setattr(Remote, "commit_batch", real)
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 1 and s.counters.downloaded_files == 0
    run_sync(b, cfg)
    assert (a / "f.txt").read_text() == (b / "f.txt").read_text() == "version 2: the edit"
    (a / "f.txt").write_text("version 1")  # a revert to an old version's content is an edit
    os.utime(a / "f.txt", ns=(1, 1))
    monkeypatch.setattr(Remote, "commit_batch", network_gone)
    run_sync(a, cfg, max_passes=1)
    monkeypatch.setattr(Remote, "commit_batch", real)
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 1
    run_sync(b, cfg)
    assert (a / "f.txt").read_text() == (b / "f.txt").read_text() == "version 1"


def test_what_cannot_be_read_is_left_alone_not_deleted(pair, monkeypatch) -> None:
    """A synced entry whose local state cannot be read this pass (a folder that cannot be
    listed, a file replaced by something that is not a file) is held: never read as deleted."""
    from raftbox.client import scanner

    a, b, cfg = pair
    (a / "docs").mkdir()
    (a / "docs" / "x.txt").write_text("x")
    (a / "f").write_text("f")
    (a / "other.txt").write_text("v1")
    run_sync(a, cfg)
    run_sync(b, cfg)
    os.unlink(a / "f")
    os.mkfifo(a / "f")
    (a / "other.txt").write_text("v2")
    real = os.scandir

    def no_docs(path):
        if os.fspath(path).endswith("/docs"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(scanner.os, "scandir", no_docs)
    s = run_sync(a, cfg)
    assert s.counters.deleted_remote == 0 and s.counters.uploaded_files == 1
    assert any("cannot list" in m for m in s.counters.messages)
    run_sync(b, cfg)
    assert (b / "docs" / "x.txt").exists() and (b / "f").read_text() == "f"
    assert (b / "other.txt").read_text() == "v2"
    monkeypatch.setattr(scanner.os, "scandir", lambda p: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", p)))  # fmt: skip
    with pytest.raises(SyncError, match="nothing was synced"):
        run_sync(a, cfg)


def test_a_folder_swapped_for_a_link_after_the_scan_is_not_followed(pair, tmp_path) -> None:
    a, b, cfg = pair
    (a / "d").mkdir()
    (a / "d" / "x.txt").write_text("same bytes")
    (a / "d" / "y.txt").write_text("y")
    run_sync(a, cfg)
    run_sync(b, cfg)
    (b / "d" / "x.txt").unlink()
    (b / "d" / "y.txt").rename(b / "y-moved.txt")
    run_sync(b, cfg)
    outside = tmp_path / "outside"  # say, the user's backup: same names, same bytes
    outside.mkdir()
    (outside / "x.txt").write_text("same bytes")
    (outside / "y.txt").write_text("y")

    def swap() -> None:
        (a / "d").rename(tmp_path / "d-old")
        os.symlink(outside, a / "d")

    p, out, c = plan_change_execute(a, cfg, swap)
    assert {op.kind.value for op in p.ops} >= {"delete_local", "move_local"}
    assert out.stopped and "link" in out.stopped
    assert (outside / "x.txt").read_text() == "same bytes" and (outside / "y.txt").exists()
    assert not (a / "y-moved.txt").exists()


def test_an_overloaded_server_is_retried_within_one_sync(pair, monkeypatch) -> None:
    """`raftbox sync` (one-shot) meeting 503s or dropped connections for a while keeps trying
    with back-off and finishes the job, instead of stopping at the first one; with no retry
    time it gives up at once, as before."""
    import aiohttp

    a, b, cfg = pair
    (a / "f.txt").write_text("made while the server was overloaded")
    real = Remote.commit_batch
    failures = {"left": 2}

    async def overloaded(self, entries):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise aiohttp.ClientConnectionError("connection reset")
        return await real(self, entries)

    monkeypatch.setattr(Remote, "commit_batch", overloaded)
    s = run_sync(a, cfg, unavailable_retry_s=0.0)
    assert s.unavailable and failures["left"] == 1  # no retry time: one failure ends it
    s = run_sync(a, cfg, unavailable_retry_s=60.0)
    assert failures["left"] == 0
    assert s.ok and s.unavailable is None and s.counters.uploaded_files == 1, s.as_json()
    run_sync(b, cfg)
    assert (b / "f.txt").read_text() == "made while the server was overloaded"


def test_a_server_that_stays_away_ends_the_sync_after_the_retry_time(pair, monkeypatch) -> None:
    import aiohttp

    a, _b, cfg = pair
    (a / "f.txt").write_text("never gets there")
    calls = {"n": 0}

    async def gone(self, entries):
        calls["n"] += 1
        raise aiohttp.ClientConnectionError("connection refused")

    monkeypatch.setattr(Remote, "commit_batch", gone)
    s = run_sync(a, cfg, unavailable_retry_s=1.5)
    assert s.unavailable and not s.ok
    assert calls["n"] >= 2  # retried at least once within the retry time, then gave up
