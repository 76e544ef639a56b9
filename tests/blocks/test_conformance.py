"""One conformance suite, run against every store (`harness` is parametrized over them all):
a content-addressed store is immutable, verified on every read, and writes a block once."""

from __future__ import annotations

import asyncio

import pytest

from raftbox.blocks import BlockMismatch, BlockNotFound, CorruptBlock

from .helpers import MiB, bid, rand_bytes, run, text_bytes

INCOMPRESSIBLE = rand_bytes(300_000, seed=1)
COMPRESSIBLE = text_bytes(300_000, seed=2)


def test_put_then_get_returns_the_same_bytes(harness):
    s = harness.store
    blocks = [b"", b"x", INCOMPRESSIBLE, COMPRESSIBLE, rand_bytes(4 * MiB, seed=3)]

    async def go():
        for data in blocks:
            assert await s.put(bid(data), data) is True
        for data in blocks:
            assert await s.get(bid(data)) == data
            assert await s.has(bid(data))
            assert await s.stored_size(bid(data)) <= max(len(data), 64)

    run(go)
    assert harness.writes() == len(blocks)


def test_put_of_an_existing_block_writes_nothing(harness):
    s = harness.store

    async def go():
        assert await s.put(bid(INCOMPRESSIBLE), INCOMPRESSIBLE) is True
        writes = harness.writes()
        assert await s.put(bid(INCOMPRESSIBLE), INCOMPRESSIBLE) is False
        assert await s.put(bid(INCOMPRESSIBLE), INCOMPRESSIBLE) is False
        assert harness.writes() == writes == 1

    run(go)


def test_has_delete_and_list(harness):
    s = harness.store
    blocks = [rand_bytes(1000, seed=i) for i in range(5)]

    async def go():
        assert [i async for i in s.list()] == []
        for data in blocks:
            await s.put(bid(data), data)
        assert sorted([i async for i in s.list()]) == sorted(bid(d) for d in blocks)
        gone = bid(blocks[0])
        await s.delete(gone)
        await s.delete(gone)  # deleting an absent block is not an error
        assert not await s.has(gone)
        with pytest.raises(BlockNotFound):
            await s.get(gone)
        with pytest.raises(BlockNotFound):
            await s.stored_size(gone)
        assert sorted([i async for i in s.list()]) == sorted(bid(d) for d in blocks[1:])
        assert await s.put(gone, blocks[0]) is True  # a deleted block can be stored again
        assert await s.get(gone) == blocks[0]

    run(go)


def test_missing_block_is_not_found_and_a_key_error(harness):
    async def go():
        with pytest.raises(BlockNotFound) as e:
            await harness.store.get(bid(b"never stored"))
        assert isinstance(e.value, KeyError)
        assert not await harness.store.has(bid(b"never stored"))

    run(go)


BAD_IDS = [
    "",
    "abc",
    bid(b"x").upper(),
    bid(b"x")[:63],
    bid(b"x") + "0",
    "../" + bid(b"x")[3:],
    "g" * 64,
    bid(b"x")[:32] + "/" + bid(b"x")[33:],
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_rejected_by_every_method(harness, bad):
    s = harness.store

    async def go():
        for call in (
            lambda: s.put(bad, b"x"),
            lambda: s.get(bad),
            lambda: s.has(bad),
            lambda: s.delete(bad),
            lambda: s.stored_size(bad),
        ):
            with pytest.raises(ValueError):
                await call()

    run(go)
    assert harness.writes() == 0


def test_put_of_bytes_that_do_not_match_the_id_writes_nothing(harness):
    async def go():
        with pytest.raises(BlockMismatch):
            await harness.store.put(bid(b"one thing"), b"another thing")
        assert not await harness.store.has(bid(b"one thing"))

    run(go)
    assert harness.writes() == 0


@pytest.mark.parametrize("data", [INCOMPRESSIBLE, COMPRESSIBLE], ids=["raw", "compressible"])
def test_a_corrupt_block_is_reported_and_never_served(harness, data):
    s = harness.store
    i = bid(data)

    async def go():
        await s.put(i, data)
        assert await s.get(i) == data
        harness.corrupt(i)
        for _ in range(2):  # and again: nothing remembers the good copy and serves it
            with pytest.raises(CorruptBlock):
                await s.get(i)
        harness.replace(i, harness.stored(i)[:-10])  # truncated
        with pytest.raises(CorruptBlock):
            await s.get(i)
        harness.replace(i, b"")
        with pytest.raises(CorruptBlock):
            await s.get(i)

    run(go)


def test_a_block_stored_under_another_id_is_corrupt(harness):
    """Bytes that are a perfectly good block, but not *this* block, are not served."""
    a, b = rand_bytes(5000, seed=10), rand_bytes(5000, seed=11)

    async def go():
        await harness.store.put(bid(a), a)
        await harness.store.put(bid(b), b)
        harness.replace(bid(a), harness.stored(bid(b)))
        with pytest.raises(CorruptBlock):
            await harness.store.get(bid(a))

    run(go)


def test_concurrent_puts_of_one_block_store_one_copy(harness):
    s = harness.store
    data = rand_bytes(1 * MiB, seed=20)

    async def go():
        results = await asyncio.gather(*(s.put(bid(data), data) for _ in range(8)))
        assert True in results
        if harness.exclusive_create:
            assert results.count(True) == 1
            assert harness.writes() == 1
        assert [i async for i in s.list()] == [bid(data)]
        assert await s.get(bid(data)) == data

    run(go)


def test_concurrent_puts_of_many_blocks(harness):
    s = harness.store
    blocks = [rand_bytes(20_000, seed=100 + i) for i in range(24)]

    async def go():
        assert all(await asyncio.gather(*(s.put(bid(d), d) for d in blocks)))
        got = await asyncio.gather(*(s.get(bid(d)) for d in blocks))
        assert got == blocks

    run(go)
    assert harness.writes() == len(blocks)
