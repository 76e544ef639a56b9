"""Behaviour that wraps a `BlockStore` instead of living inside one (restic's backend wrappers).

- `RetryingStore`: retries `TransientStoreError` only, a bounded number of times, sleeping a
  full-jitter exponential back-off between attempts. `BlockNotFound`, `CorruptBlock`,
  `BlockMismatch`, ValueError and permanent backend errors pass straight through: retrying
  cannot change them. Every operation is idempotent on a content-addressed store, so a put
  that timed out after the write landed is safe to repeat. `list()` is not retried (a listing
  that fails part-way is restarted by its caller).
- `LimitedStore`: at most `max_concurrency` operations in flight in the wrapped store; the
  rest wait. Under `RetryingStore` a back-off sleep holds no slot.
- `MetricsStore`: Prometheus counters and a latency histogram per operation, on the registry
  it is given, labelled with a store name so several stacks can share one registry.

Each forwards every `BlockStore` method, `sync` included (it holds no slot and is not retried:
a failed sync fails the write waiting for it); `inner` is the wrapped store.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from .errors import BlockNotFound, BlockStoreError, CorruptBlock, TransientStoreError
from .store import BlockStore

T = TypeVar("T")


class RetryingStore:
    def __init__(
        self,
        inner: BlockStore,
        *,
        attempts: int = 4,
        base_delay_s: float = 0.05,
        max_delay_s: float = 2.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.inner = inner
        self.attempts = attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.retries = 0  # attempts repeated after a transient error, over the store's life

    def backoff_s(self, attempt: int) -> float:
        """Delay after failed attempt number `attempt` (1-based): full jitter, capped."""
        return self.rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))

    async def _retry(self, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 1
        while True:
            try:
                return await fn()
            except TransientStoreError:
                if attempt >= self.attempts:
                    raise
                self.retries += 1
                await self.sleep(self.backoff_s(attempt))
                attempt += 1

    async def put(self, block_id: str, data: bytes) -> bool:
        return await self._retry(lambda: self.inner.put(block_id, data))

    async def get(self, block_id: str) -> bytes:
        return await self._retry(lambda: self.inner.get(block_id))

    async def has(self, block_id: str) -> bool:
        return await self._retry(lambda: self.inner.has(block_id))

    async def delete(self, block_id: str) -> None:
        await self._retry(lambda: self.inner.delete(block_id))

    async def stored_size(self, block_id: str) -> int:
        return await self._retry(lambda: self.inner.stored_size(block_id))

    async def sync(self) -> None:
        await self.inner.sync()

    def list(self) -> AsyncIterator[str]:
        return self.inner.list()

    async def aclose(self) -> None:
        await self.inner.aclose()


class LimitedStore:
    def __init__(self, inner: BlockStore, max_concurrency: int) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.inner = inner
        self.max_concurrency = max_concurrency
        self._sem = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        self.peak_in_flight = 0

    async def _limited(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self._sem:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return await fn()
            finally:
                self.in_flight -= 1

    async def put(self, block_id: str, data: bytes) -> bool:
        return await self._limited(lambda: self.inner.put(block_id, data))

    async def get(self, block_id: str) -> bytes:
        return await self._limited(lambda: self.inner.get(block_id))

    async def has(self, block_id: str) -> bool:
        return await self._limited(lambda: self.inner.has(block_id))

    async def delete(self, block_id: str) -> None:
        await self._limited(lambda: self.inner.delete(block_id))

    async def stored_size(self, block_id: str) -> int:
        return await self._limited(lambda: self.inner.stored_size(block_id))

    async def sync(self) -> None:
        await self.inner.sync()

    def list(self) -> AsyncIterator[str]:
        return self.inner.list()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _StoreMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ops = Counter(
            "raftbox_blockstore_ops",
            "Block store operations by outcome (ok, exists: a put that wrote nothing, error)",
            ["store", "op", "outcome"],
            registry=registry,
        )
        self.bytes = Counter(
            "raftbox_blockstore_bytes",
            "Block bytes through this layer: in = bytes put (a zstd frame if a CompressedStore "
            "above compressed them), out = raw bytes returned by get",
            ["store", "direction"],
            registry=registry,
        )
        self.errors = Counter(
            "raftbox_blockstore_errors",
            "Block store errors by kind (not_found, corrupt, transient, invalid, other)",
            ["store", "op", "kind"],
            registry=registry,
        )
        self.seconds = Histogram(
            "raftbox_blockstore_op_seconds",
            "Block store operation latency",
            ["store", "op"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )


_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _StoreMetrics] = (
    weakref.WeakKeyDictionary()
)


def _error_kind(e: BaseException) -> str:
    if isinstance(e, BlockNotFound):
        return "not_found"
    if isinstance(e, CorruptBlock):
        return "corrupt"
    if isinstance(e, TransientStoreError):
        return "transient"
    if isinstance(e, ValueError):
        return "invalid"
    if isinstance(e, BlockStoreError):
        return "backend"
    return "other"


class MetricsStore:
    def __init__(
        self,
        inner: BlockStore,
        registry: CollectorRegistry,
        *,
        store: str = "blocks",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner = inner
        self.store = store
        self.clock = clock
        m = _metrics_by_registry.get(registry)
        if m is None:
            m = _metrics_by_registry[registry] = _StoreMetrics(registry)
        self.m = m

    async def _observe(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        t0 = self.clock()
        try:
            result = await fn()
        except Exception as e:
            self.m.ops.labels(self.store, op, "error").inc()
            self.m.errors.labels(self.store, op, _error_kind(e)).inc()
            raise
        finally:
            self.m.seconds.labels(self.store, op).observe(self.clock() - t0)
        outcome = "exists" if op == "put" and result is False else "ok"
        self.m.ops.labels(self.store, op, outcome).inc()
        return result

    async def put(self, block_id: str, data: bytes) -> bool:
        written = await self._observe("put", lambda: self.inner.put(block_id, data))
        if written:
            self.m.bytes.labels(self.store, "in").inc(len(data))
        return written

    async def get(self, block_id: str) -> bytes:
        data = await self._observe("get", lambda: self.inner.get(block_id))
        self.m.bytes.labels(self.store, "out").inc(len(data))
        return data

    async def has(self, block_id: str) -> bool:
        return await self._observe("has", lambda: self.inner.has(block_id))

    async def delete(self, block_id: str) -> None:
        await self._observe("delete", lambda: self.inner.delete(block_id))

    async def stored_size(self, block_id: str) -> int:
        return await self._observe("stored_size", lambda: self.inner.stored_size(block_id))

    async def list(self) -> AsyncIterator[str]:
        try:
            async for block_id in self.inner.list():
                yield block_id
        except Exception as e:
            self.m.errors.labels(self.store, "list", _error_kind(e)).inc()
            raise
        self.m.ops.labels(self.store, "list", "ok").inc()

    async def sync(self) -> None:
        await self._observe("sync", self.inner.sync)

    async def aclose(self) -> None:
        await self.inner.aclose()
