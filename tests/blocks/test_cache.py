"""Fact caches: an in-process LRU, and a real memcached (started here) that may die at any
moment — a dead or silent memcached slows things down but never errs or answers wrongly."""

from __future__ import annotations

import socket
import time

import pytest

from raftbox.blocks import (
    BlockNotFound,
    CachingStore,
    LRUCache,
    MemcachedCache,
    MemoryStore,
    open_cache,
)

from .helpers import bid, rand_bytes, run
from .procs import HOST, free_port

DATA = rand_bytes(10_000, seed=1)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lru_round_trip_eviction_and_ttl():
    clock = FakeClock()
    c = LRUCache(3, clock=clock)

    async def go():
        assert await c.get("rev:1") is None
        await c.set("rev:1", b"meta1")
        await c.set(b"rev:2", b"meta2")
        assert await c.get(b"rev:1") == b"meta1"  # str and bytes keys are the same key
        await c.set("rev:3", b"meta3")
        await c.set("rev:4", b"meta4")  # evicts rev:2, the least recently used
        assert await c.get("rev:2") is None
        assert [await c.get(f"rev:{i}") for i in (1, 3, 4)] == [b"meta1", b"meta3", b"meta4"]
        await c.set("short", b"v", ttl_s=10)
        clock.t += 9.9
        assert await c.get("short") == b"v"
        clock.t += 0.2
        assert await c.get("short") is None
        await c.delete("rev:1")
        assert await c.get("rev:1") is None
        assert len(c) <= 3

    run(go)


def test_open_cache_urls():
    assert isinstance(open_cache(""), LRUCache)
    assert open_cache("lru://?entries=7").max_entries == 7
    mc = open_cache("memcached://127.0.0.1:11211?namespace=c1&timeout_ms=50")
    assert isinstance(mc, MemcachedCache) and mc.port == 11211
    for bad in ("memcached://nohost", "redis://x:1"):
        with pytest.raises(ValueError):
            open_cache(bad)


def test_memcached_facts_round_trip(memcached):
    c = MemcachedCache(HOST, memcached.port, namespace="t1")
    other = MemcachedCache(HOST, memcached.port, namespace="t2")
    long_key = "rev:" + "x" * 500
    spaced = b"path with spaces\n\x00"

    async def go():
        assert await c.get("rev:1") is None
        await c.set("rev:1", b"\x00binary meta\xff")
        await c.set(long_key, b"long")
        await c.set(spaced, b"spaced")
        assert await c.get("rev:1") == b"\x00binary meta\xff"
        assert await c.get(long_key) == b"long"
        assert await c.get(spaced) == b"spaced"
        assert await other.get("rev:1") is None  # namespaces do not see each other
        await c.delete("rev:1")
        assert await c.get("rev:1") is None
        assert c.errors == 0 and c.hits == 3
        await c.set("too big", bytes(2 * 1024 * 1024))  # over memcached's item size: refused
        assert c.errors == 1 and not c.is_down  # one request refused, the server is fine
        assert await c.get(long_key) == b"long"
        await c.aclose()
        await other.aclose()

    run(go)


def test_a_memcached_killed_mid_test_gives_fast_misses_then_recovers(memcached):
    clock = FakeClock()
    c = MemcachedCache(HOST, memcached.port, down_s=5.0, clock=clock)

    async def go():
        await c.set("blk:p:a", b"1")
        assert await c.get("blk:p:a") == b"1"
        memcached.kill()
        t0 = time.monotonic()
        for i in range(200):
            assert await c.get("blk:p:a") is None
            await c.set(f"k{i}", b"v")
            await c.delete(f"k{i}")
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0, elapsed
        assert c.errors >= 1 and c.skipped >= 500 and c.is_down
        memcached.start()  # back on the same port, empty
        assert await c.get("blk:p:a") is None and c.is_down  # still in its back-off period
        clock.t += 60
        await c.set("blk:p:a", b"1")
        assert await c.get("blk:p:a") == b"1"
        await c.aclose()

    run(go)


def test_an_unreachable_memcached_costs_one_failed_connect():
    c = MemcachedCache(HOST, free_port(), connect_timeout_s=0.2)

    async def go():
        t0 = time.monotonic()
        for _ in range(100):
            assert await c.get("x") is None
        assert time.monotonic() - t0 < 1.0
        assert c.errors == 1 and c.skipped == 99
        await c.aclose()

    run(go)


def test_a_silent_memcached_times_out_quickly():
    """Accepts connections, never answers: each call is bounded by the socket timeout."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(16)
        c = MemcachedCache(HOST, listener.getsockname()[1], timeout_s=0.1, connect_timeout_s=0.1)

        async def go():
            t0 = time.monotonic()
            assert await c.get("x") is None
            assert await c.get("y") is None  # marked down: no second wait
            assert time.monotonic() - t0 < 1.0
            assert c.errors == 1
            await c.aclose()

        run(go)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def has(self, block_id):
        self.calls.append("has")
        return await super().has(block_id)

    async def put(self, block_id, data):
        self.calls.append("put")
        return await super().put(block_id, data)

    async def stored_size(self, block_id):
        self.calls.append("stored_size")
        return await super().stored_size(block_id)


def test_caching_store_remembers_presence_and_size_but_never_absence():
    inner = CountingStore()
    s = CachingStore(inner, LRUCache(100))
    i = bid(DATA)

    async def go():
        assert not await s.has(i)
        await inner.put(i, DATA)  # arrives behind the cache's back
        assert await s.has(i)  # absence was not remembered
        inner.calls.clear()
        assert await s.has(i) and await s.put(i, DATA) is False
        assert await s.stored_size(i) == await s.stored_size(i) == len(DATA)
        assert inner.calls == ["stored_size"]
        await s.delete(i)
        assert not await s.has(i)
        assert await s.put(i, DATA) is True

    run(go)


def test_caching_store_forgets_a_stale_presence_fact_when_get_finds_nothing():
    inner = MemoryStore()
    s = CachingStore(inner, LRUCache(100))
    i = bid(DATA)

    async def go():
        await s.put(i, DATA)
        await s.sync()  # remembered present once durable
        await inner.delete(i)  # e.g. garbage collection in another process
        assert await s.has(i)  # believed until the fact expires or is contradicted
        with pytest.raises(BlockNotFound):
            await s.get(i)
        assert not await s.has(i)

    run(go)


def test_caching_store_remembers_a_put_block_only_once_synced():
    """A presence fact (shared through memcached) must not claim a block a machine crash may
    still lose: a put is remembered only after the sync that made it durable."""
    inner = CountingStore()
    s = CachingStore(inner, LRUCache(100))
    i = bid(DATA)

    async def go():
        assert await s.put(i, DATA) is True
        await inner.delete(i)  # lost before any sync (what a machine crash may do)
        assert not await s.has(i)  # not believed present
        assert await s.put(i, DATA) is True
        await s.sync()
        inner.calls.clear()
        assert await s.has(i) and inner.calls == []  # now known, from the cache

    run(go)


def test_caching_store_over_a_dead_memcached_still_answers_correctly(memcached):
    inner = CountingStore()
    cache = MemcachedCache(HOST, memcached.port)
    s = CachingStore(inner, cache)
    a, b = rand_bytes(1000, seed=2), rand_bytes(1000, seed=3)

    async def go():
        assert await s.put(bid(a), a) is True
        await s.sync()  # remembered present once durable
        inner.calls.clear()
        assert await s.has(bid(a)) and inner.calls == []  # served by memcached
        memcached.kill()
        assert await s.has(bid(a)) and inner.calls == ["has"]  # asked the store instead
        assert not await s.has(bid(b))
        assert await s.put(bid(b), b) is True
        assert await s.get(bid(b)) == b
        assert await s.stored_size(bid(b)) == len(b)
        assert cache.errors >= 1
        await cache.aclose()

    run(go)
