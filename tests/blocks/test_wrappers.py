"""Retry, limits and metrics wrap a store: retries only transient failures, with bounded
jittered back-off; limits cap operations in flight; metrics count what passes through."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from raftbox.blocks import (
    BlockMismatch,
    BlockNotFound,
    BlockStoreError,
    CachingStore,
    CompressedStore,
    CorruptBlock,
    LimitedStore,
    LocalStore,
    MemoryStore,
    MetricsStore,
    RetryingStore,
    TransientStoreError,
    build_store,
)
from raftbox.testing import wait_until

from .helpers import bid, rand_bytes, run, text_bytes

DATA = rand_bytes(10_000, seed=1)


class FaultyStore:
    """Forwards to a MemoryStore after raising `fault` on the first `failures` calls."""

    def __init__(self, fault: BaseException, failures: int) -> None:
        self.inner = MemoryStore()
        self.fault, self.failures = fault, failures
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.fault

    async def put(self, i, d):
        self._maybe_fail()
        return await self.inner.put(i, d)

    async def get(self, i):
        self._maybe_fail()
        return await self.inner.get(i)

    async def has(self, i):
        self._maybe_fail()
        return await self.inner.has(i)

    async def delete(self, i):
        self._maybe_fail()
        return await self.inner.delete(i)

    async def stored_size(self, i):
        self._maybe_fail()
        return await self.inner.stored_size(i)

    def list(self):
        return self.inner.list()

    async def aclose(self):
        pass


def retrying(inner, **kw):
    sleeps: list[float] = []

    async def sleep(s: float) -> None:  # records instead of sleeping on the real clock
        sleeps.append(s)

    kw.setdefault("rng", random.Random(1))
    return RetryingStore(inner, sleep=sleep, **kw), sleeps


def test_transient_failures_are_retried_with_growing_jittered_back_off():
    faulty = FaultyStore(TransientStoreError("503 SlowDown"), failures=3)
    s, sleeps = retrying(faulty, attempts=5, base_delay_s=0.1, max_delay_s=10)
    assert run(lambda: s.put(bid(DATA), DATA)) is True
    assert faulty.calls == 4 and s.retries == 3 and len(sleeps) == 3
    assert all(0 <= d <= 0.1 * 2**k for k, d in enumerate(sleeps))
    assert run(lambda: faulty.inner.get(bid(DATA))) == DATA


def test_retries_are_bounded():
    faulty = FaultyStore(TransientStoreError("timeout"), failures=100)
    s, sleeps = retrying(faulty, attempts=3)
    with pytest.raises(TransientStoreError):
        run(lambda: s.get(bid(DATA)))
    assert faulty.calls == 3 and len(sleeps) == 2


def test_back_off_is_capped_and_seeded():
    a, _ = retrying(MemoryStore(), base_delay_s=0.05, max_delay_s=1.5, rng=random.Random(9))
    b, _ = retrying(MemoryStore(), base_delay_s=0.05, max_delay_s=1.5, rng=random.Random(9))
    delays = [a.backoff_s(n) for n in range(1, 30)]
    assert delays == [b.backoff_s(n) for n in range(1, 30)]
    assert max(delays) <= 1.5 and len(set(delays)) > 20


@pytest.mark.parametrize(
    "fault",
    [
        CorruptBlock("bad bytes"),
        BlockNotFound("x"),
        BlockMismatch("caller's bytes"),
        BlockStoreError("403 AccessDenied"),
        ValueError("bad id"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_failures_are_not_retried(fault):
    faulty = FaultyStore(fault, failures=1)
    s, sleeps = retrying(faulty, attempts=5)
    with pytest.raises(type(fault)):
        run(lambda: s.get(bid(DATA)))
    assert faulty.calls == 1 and sleeps == [] and s.retries == 0


def test_a_real_corrupt_block_under_retry_is_reported_once():
    inner = MemoryStore()
    run(lambda: inner.put(bid(DATA), DATA))
    inner.blocks[bid(DATA)] = DATA[:-1] + b"\x00"
    s, sleeps = retrying(inner)
    with pytest.raises(CorruptBlock):
        run(lambda: s.get(bid(DATA)))
    assert sleeps == []


class GatedStore(MemoryStore):
    """get() waits for a gate, so a test can see how many are in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def get(self, block_id):
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().get(block_id)


def test_limited_store_caps_operations_in_flight():
    gated = GatedStore()
    s = LimitedStore(gated, max_concurrency=3)

    async def go():
        await s.put(bid(DATA), DATA)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(s.get(bid(DATA))) for _ in range(10)]
            await wait_until(lambda: gated.waiting == 3, what="3 gets in flight")
            for _ in range(20):  # nothing else gets in while the gate is shut
                await asyncio.sleep(0)
            assert gated.waiting == 3 and s.in_flight == 3
            gated.gate.set()
        assert all(t.result() == DATA for t in tasks)
        assert s.peak_in_flight == 3 and s.in_flight == 0

    run(go)


def sample(reg: CollectorRegistry, name: str, **labels) -> float:
    return reg.get_sample_value(name, {"store": "t", **labels}) or 0.0


def test_metrics_count_operations_bytes_errors_and_latency():
    reg = CollectorRegistry()
    inner = MemoryStore()
    s = MetricsStore(inner, reg, store="t")

    async def go():
        await s.put(bid(DATA), DATA)
        await s.put(bid(DATA), DATA)
        assert await s.get(bid(DATA)) == DATA
        with pytest.raises(BlockNotFound):
            await s.get(bid(b"absent"))
        inner.blocks[bid(DATA)] = b"rot"
        with pytest.raises(CorruptBlock):
            await s.get(bid(DATA))
        assert [i async for i in s.list()] == [bid(DATA)]

    run(go)
    ops = "raftbox_blockstore_ops_total"
    assert sample(reg, ops, op="put", outcome="ok") == 1
    assert sample(reg, ops, op="put", outcome="exists") == 1
    assert sample(reg, ops, op="get", outcome="ok") == 1
    assert sample(reg, ops, op="get", outcome="error") == 2
    assert sample(reg, ops, op="list", outcome="ok") == 1
    errors = "raftbox_blockstore_errors_total"
    assert sample(reg, errors, op="get", kind="not_found") == 1
    assert sample(reg, errors, op="get", kind="corrupt") == 1
    assert sample(reg, "raftbox_blockstore_bytes_total", direction="in") == len(DATA)
    assert sample(reg, "raftbox_blockstore_bytes_total", direction="out") == len(DATA)
    assert sample(reg, "raftbox_blockstore_op_seconds_count", op="get") == 3
    # a second stack on the same registry gets its own label, not a registration clash
    MetricsStore(MemoryStore(), reg, store="other")


def test_build_store_wraps_in_the_documented_order(tmp_path):
    reg = CollectorRegistry()
    s = build_store("file://" + str(tmp_path), cache="lru://?entries=10", metrics_registry=reg)
    layers = []
    while s is not None:
        layers.append(type(s))
        s = getattr(s, "inner", None)
    assert layers == [
        CachingStore,
        CompressedStore,
        MetricsStore,
        RetryingStore,
        LimitedStore,
        LocalStore,
    ]
    bare = build_store("memory://", compress_level=None, retries=0, max_concurrency=None)
    assert type(bare) is MemoryStore


def test_the_stack_compresses_and_counts_stored_bytes(tmp_path):
    reg = CollectorRegistry()
    s = build_store("file://" + str(tmp_path), metrics_registry=reg, store_name="t")
    text = text_bytes(200_000)

    async def go():
        await s.put(bid(text), text)
        assert await s.get(bid(text)) == text
        return await s.stored_size(bid(text))

    size = run(go)
    assert size < len(text) / 2
    assert sample(reg, "raftbox_blockstore_bytes_total", direction="in") == size
