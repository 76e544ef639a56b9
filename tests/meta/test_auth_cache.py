"""What a bad bearer token may cost the meta group (raftbox.meta.service, "Authentication"):
one ReadIndex round per distinct unknown token, rounds shared by concurrent lookups, and a
token that exists as soon as this member applied it works at once, negative entry or not."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from raftbox.meta import commands as C
from raftbox.meta.fsm import MetaStore
from raftbox.meta.service import MetaService
from raftbox.meta.tokens import NegativeTokenCache, SharedRounds, token_hash
from raftbox.raft.node import NodeConfig, RaftNode, Unavailable
from raftbox.testing.procs import free_port

HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def meta_member(tmp_path, **kw):
    """A single-member meta group; `rounds` counts every ReadIndex the node is asked for."""
    port = free_port()
    store = MetaStore(str(tmp_path / "meta.db"))
    node = RaftNode(
        NodeConfig(1, str(tmp_path), (HOST, port), {1: (HOST, port)}, tick_s=0.01), store
    )
    await node.start()
    meta = MetaService(node, store, **kw)
    try:
        await meta.start()
        real = node.read_index
        meta.read_index_calls = 0

        async def counted(*a, **k):
            meta.read_index_calls += 1
            return await real(*a, **k)

        node.read_index = counted
        yield meta
    finally:
        await node.stop()
        store.close()


def run(body, timeout_s: float = 30.0) -> None:
    async def main():
        async with asyncio.timeout(timeout_s):
            await body()

    asyncio.run(main())


def test_a_bad_token_repeated_costs_one_read_index_round(tmp_path):
    async def body():
        async with meta_member(tmp_path) as meta:
            for _ in range(50):
                assert await meta.auth("rbx_not-a-token") is None
            await asyncio.gather(*(meta.auth("rbx_not-a-token") for _ in range(50)))
            assert meta.read_index_calls == 1
            assert meta.auth_read_rounds == 1

    run(body)


def test_concurrent_lookups_of_distinct_bad_tokens_share_rounds(tmp_path):
    async def body():
        async with meta_member(tmp_path) as meta:
            got = await asyncio.gather(*(meta.auth(f"rbx_bad-{i}") for i in range(200)))
            assert got == [None] * 200
            # One round in flight, the others share the next one.
            assert meta.read_index_calls <= 2
            assert meta.auth_read_rounds == meta.read_index_calls

    run(body)


def test_a_token_added_after_a_miss_works_at_once(tmp_path):
    async def body():
        # A negative entry that would outlive the test: only the local replica can save us.
        async with meta_member(tmp_path, auth_negative_ttl_s=3600) as meta:
            acct, good = await meta.create_account("a@example.com", "A")
            assert (await meta.auth(good)).account_id == acct.account_id
            late = "rbx_added-later"
            assert await meta.auth(late) is None  # remembered as unknown
            assert await meta.auth(late) is None
            assert await meta.write(C.AddToken(acct.account_id, token_hash(late))) is None
            who = await meta.auth(late)
            assert who is not None and who.account_id == acct.account_id
            # A fresh account's token works at once too.
            acct2, token2 = await meta.create_account("b@example.com", "B")
            assert (await meta.auth(token2)).account_id == acct2.account_id

    run(body)


def test_negative_entries_expire_and_are_bounded():
    cache = NegativeTokenCache(ttl_s=3600, max_entries=3)
    for h in (b"a", b"b", b"c", b"d"):
        cache.add(h)
    assert len(cache) == 3
    assert b"a" not in cache  # the oldest went first
    assert b"d" in cache
    cache.discard(b"d")
    assert b"d" not in cache

    expired = NegativeTokenCache(ttl_s=0.0)
    expired.add(b"x")
    assert b"x" not in expired and len(expired) == 0


def test_a_shared_round_counts_only_if_it_started_after_the_caller_asked():
    """The linearizability of a shared round: a lookup that arrives while a round is in flight
    must not be answered by that round (it may have been confirmed before the token existed)."""

    async def body():
        gates: list[asyncio.Event] = []

        async def round_() -> None:
            gate = asyncio.Event()
            gates.append(gate)
            await gate.wait()

        rounds = SharedRounds(round_)
        first = asyncio.create_task(rounds.wait())
        while not gates:
            await asyncio.sleep(0)
        late = [asyncio.create_task(rounds.wait()) for _ in range(10)]
        await asyncio.sleep(0)
        gates[0].set()
        await first
        while len(gates) < 2:
            await asyncio.sleep(0)
        assert not any(t.done() for t in late)  # round 1 started before they asked
        gates[1].set()
        await asyncio.gather(*late)
        assert rounds.runs == 2

    run(body)


def test_a_failed_round_fails_every_lookup_that_shared_it():
    async def body():
        async def round_() -> None:
            await asyncio.sleep(0)
            raise Unavailable("no majority")

        rounds = SharedRounds(round_)
        results = await asyncio.gather(*(rounds.wait() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results)
        assert rounds.runs <= 2

    run(body)


def test_a_cancelled_round_is_run_again_for_the_others():
    async def body():
        gate = asyncio.Event()
        runs = 0

        async def round_() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                await asyncio.Event().wait()  # never ends: its caller gives up
            await gate.wait()

        rounds = SharedRounds(round_)
        first = asyncio.create_task(rounds.wait())
        await asyncio.sleep(0)
        other = asyncio.create_task(rounds.wait())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        await other
        assert runs == 2

    run(body)
