"""Members that do not share a block store are found at start (issue 11, attack 5): a cluster
started as the README's cluster section once read, without `--blocks` (each member its own
DATA/blocks), has every member but the first leader refuse to start, saying what to fix; a
blockserver with another store refuses too; and the marker check itself, in process."""

from __future__ import annotations

import asyncio

import pytest

from api.procs import RAFTBOX, ApiCluster, Proc, free_port, wait_for
from raftbox import storecheck
from raftbox.blocks.store import MemoryStore
from raftbox.meta import commands as C
from raftbox.meta.fsm import MetaStore
from raftbox.raft.sessions import Command

FIX = "give every member the same --blocks"
EX_CONFIG = 78


def _without_blocks(args: list[str]) -> list[str]:
    i = args.index("--blocks")
    return args[:i] + args[i + 2 :]


def test_members_without_a_shared_store_refuse_to_start_and_say_why(tmp_path):
    c = ApiCluster(tmp_path, n=3)
    for i in c.members:
        c.proc(i).args = _without_blocks(c.proc(i).args)  # each member: its own DATA/blocks
    try:
        for i in c.members:
            c.proc(i).start()

        def two_refused() -> list[int]:
            gone = [i for i in c.members if not c.proc(i).alive]
            return gone if len(gone) == 2 else []

        refused = wait_for(two_refused, 90, "two members refused to start")
        for i in refused:
            p = c.proc(i)
            assert p.proc.returncode == EX_CONFIG, p.tail()
            out = p.output()
            assert "does not reach the cluster's block store" in out and FIX in out, out
            assert "Traceback" not in out
        (alive,) = set(c.members) - set(refused)
        c.proc(alive).wait_output(f"raftbox member {alive} serving", 30)
    except BaseException:
        print(c.tails())
        raise
    finally:
        c.stop()


def test_a_blockserver_with_another_store_refuses_to_start(tmp_path):
    c = ApiCluster(tmp_path, n=1)
    try:
        c.start()
        member = c.members[1]
        args = [RAFTBOX, "serve", "--roles", "block", "--data", str(tmp_path / "bs"),
                "--listen", f"127.0.0.1:{free_port()}", "--plain-http",
                "--meta", f"https://{member.hostport}", "--ca", c.ca,
                "--admin-token", c.admin_token]  # fmt: skip
        wrong = Proc("blockserver", [*args, "--blocks", f"file://{tmp_path / 'other'}"],
                     tmp_path / "bs-wrong.log")  # fmt: skip
        wrong.start()
        wait_for(lambda: not wrong.alive, 60, "the blockserver with another store exited")
        assert wrong.proc.returncode == EX_CONFIG, wrong.tail()
        assert "this blockserver's --blocks does not reach" in wrong.output()
        right = Proc("blockserver", [*args, "--blocks", c.blocks], tmp_path / "bs-right.log")
        right.start()
        try:
            right.wait_output("serving block", 60)
        finally:
            right.stop()
    except BaseException:
        print(c.tails())
        raise
    finally:
        c.stop()


def test_the_first_marker_wins_and_every_store_is_checked_against_it():
    async def body():
        shared, other = MemoryStore(), MemoryStore()
        recorded: list[str] = []

        async def read() -> str | None:
            return recorded[0] if recorded else None

        async def record(block_id: str) -> None:
            if not recorded:  # SetStoreMarker: the first one wins
                recorded.append(block_id)

        marker = await storecheck.check(shared, "memory://shared", read, record)
        assert recorded == [marker] and await shared.has(marker)
        # Another leader (or a restart) finds it and writes nothing new.
        assert await storecheck.check(shared, "memory://shared", read, record) == marker
        assert len([b async for b in shared.list()]) == 1
        # A follower on the same store passes; on another store it is refused, and says so.
        assert await storecheck.check(shared, "memory://shared", read) == marker
        with pytest.raises(storecheck.WrongStore, match=f"is missing in memory://other; {FIX}"):
            await storecheck.check(other, "memory://other", read)
        # Before any marker exists, a follower waits for one, then gives up with a reason.
        with pytest.raises(storecheck.WrongStore, match="no block store marker"):
            await storecheck.check(other, "x", lambda: _none(), timeout_s=0.2, poll_s=0.01)

    asyncio.run(body())


async def _none() -> None:
    return None


def test_the_marker_is_replicated_state_kept_by_gc():
    store = MetaStore()
    cmd = lambda i, c: Command(1, i, 0, 1_000, C.encode_command(c))  # noqa: E731
    store.apply(1, cmd(1, C.InitCluster(b"s" * 32)))
    first, second = "a" * 64, "b" * 64
    assert store.apply(2, cmd(2, C.SetStoreMarker(first))) is True
    assert store.apply(3, cmd(3, C.SetStoreMarker(second))) is False
    assert store.store_marker() == first
    bad = store.apply(4, cmd(4, C.SetStoreMarker("not-a-block-id")))
    assert isinstance(bad, C.MetaError) and bad.tags == ["invalid_command"]
    _, live = store.gc_mark(now_ms=10**13, upload_keep_ms=0)
    assert first in live
