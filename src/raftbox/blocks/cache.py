"""Caches of immutable facts, and `CachingStore`, which puts one in front of a block store.

A fact is a value that never changes once known for its key: a revision's metadata, "this block
is in the store", a block's stored size. Because facts do not change, a cache needs no
invalidation protocol beyond forgetting on delete, and a cache that loses or refuses an entry
costs only a trip to the source of truth. Absence is not a fact (a block can arrive at any
moment) and is never cached.

`FactCache` is the interface (async; keys are str or bytes under the cache's namespace; values
are bytes):

- `LRUCache`: in-process, bounded by entry count; the default.
- `MemcachedCache`: a shared memcached (`--cache memcached://HOST:PORT`). Memcached is an
  optimisation, never a dependency: every error is swallowed and counted and reads as a miss,
  connect and socket timeouts are short, and after a failure the server is marked down for a
  back-off period (doubling up to `max_down_s`) during which calls return at once without
  touching the network. A dead memcached slows things down; it never causes an error or a
  wrong answer.

`GenerationKeyedCache` wraps one so that its keys carry the GC generation a process believes:
after a garbage collection deleted blocks, "this block is in the store" learned before is a miss.

`open_cache(url)`: `lru://[?entries=N]` (also `""` and `memory://`) or
`memcached://HOST:PORT[?namespace=NAME&timeout_ms=N]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from pymemcache.client.base import PooledClient
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from . import codec
from .errors import BlockNotFound, check_id
from .store import BlockStore

log = logging.getLogger("raftbox.cache")
UNSYNCED_IDS_MAX = 10_000  # ids a CachingStore keeps to remember after the next sync

Key = str | bytes


class FactCache(Protocol):
    async def get(self, key: Key) -> bytes | None: ...

    async def set(self, key: Key, value: bytes, ttl_s: int = 0) -> None:
        """Remember a fact; `ttl_s` 0 keeps it until evicted."""
        ...

    async def delete(self, key: Key) -> None: ...

    async def aclose(self) -> None: ...


def _key_bytes(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


class LRUCache:
    """At most `max_entries` facts in process memory, least recently used evicted first."""

    def __init__(
        self,
        max_entries: int = 100_000,
        *,
        max_value_bytes: int = 64 * 1024,
        namespace: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.max_value_bytes = max_value_bytes
        self._ns = namespace.encode() + b":" if namespace else b""
        self.clock = clock
        self._d: OrderedDict[bytes, tuple[bytes, float | None]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    async def get(self, key: Key) -> bytes | None:
        k = self._ns + _key_bytes(key)
        e = self._d.get(k)
        if e is not None and e[1] is not None and self.clock() >= e[1]:
            del self._d[k]
            e = None
        if e is None:
            self.misses += 1
            return None
        self._d.move_to_end(k)
        self.hits += 1
        return e[0]

    async def set(self, key: Key, value: bytes, ttl_s: int = 0) -> None:
        if len(value) > self.max_value_bytes:
            return
        k = self._ns + _key_bytes(key)
        self._d[k] = (bytes(value), self.clock() + ttl_s if ttl_s > 0 else None)
        self._d.move_to_end(k)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    async def delete(self, key: Key) -> None:
        self._d.pop(self._ns + _key_bytes(key), None)

    async def aclose(self) -> None:
        self._d.clear()


class MemcachedCache:
    """Facts in memcached; every failure is a miss (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        namespace: str = "raftbox",
        connect_timeout_s: float = 0.1,
        timeout_s: float = 0.1,
        down_s: float = 1.0,
        max_down_s: float = 30.0,
        workers: int = 4,
        max_in_flight: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self._ns = namespace.encode() + b":"
        self.down_s, self.max_down_s = down_s, max_down_s
        self.max_in_flight = max_in_flight
        self.clock = clock
        self._client = PooledClient(
            (host, port),
            connect_timeout=connect_timeout_s,
            timeout=timeout_s,
            no_delay=True,
            max_pool_size=workers,
            pool_idle_timeout=60,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memcached")
        self._down_until = 0.0
        self._backoff_s = down_s
        self._in_flight = 0
        self.hits = self.misses = 0
        self.errors = 0  # calls that failed (each a miss or a dropped write)
        self.skipped = 0  # calls answered at once while marked down or overloaded

    @property
    def is_down(self) -> bool:
        return self.clock() < self._down_until

    def _key(self, key: Key) -> bytes:
        k = self._ns + _key_bytes(key)
        # memcached keys: <= 250 bytes of printable ASCII
        if len(k) > 240 or any(c <= 32 or c >= 127 for c in k):
            k = self._ns + b"#" + hashlib.sha256(k).hexdigest().encode()
        return k

    async def _call(self, fn, *args):
        """Run one pymemcache call in a worker; (ok, result). Never raises."""
        if self.clock() < self._down_until or self._in_flight >= self.max_in_flight:
            self.skipped += 1
            return False, None
        self._in_flight += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except (MemcacheClientError, MemcacheServerError) as e:
            if isinstance(e, MemcacheUnexpectedCloseError):
                return self._failed(e)
            # the server is up and refused this one request (e.g. a value over its item size)
            self.errors += 1
            log.debug("memcached refused a request: %s", e)
            return False, None
        except Exception as e:  # memcached is an optimisation: any failure is a miss
            return self._failed(e)
        finally:
            self._in_flight -= 1
        self._backoff_s = self.down_s
        return True, result

    def _failed(self, e: Exception) -> tuple[bool, None]:
        """The server is unreachable or broken: bypass it for a back-off period."""
        self.errors += 1
        self._down_until = self.clock() + self._backoff_s
        log.warning(
            "memcached %s:%d failed (%s: %s); bypassing it for %.1fs",
            self.host,
            self.port,
            type(e).__name__,
            e,
            self._backoff_s,
        )
        self._backoff_s = min(self.max_down_s, self._backoff_s * 2)
        return False, None

    async def get(self, key: Key) -> bytes | None:
        ok, value = await self._call(self._client.get, self._key(key))
        if ok and value is not None:
            self.hits += 1
            return value
        self.misses += 1
        return None

    async def set(self, key: Key, value: bytes, ttl_s: int = 0) -> None:
        await self._call(self._client.set, self._key(key), bytes(value), ttl_s, False)

    async def delete(self, key: Key) -> None:
        await self._call(self._client.delete, self._key(key), False)

    async def aclose(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self._client.close()
        except Exception:
            pass


def open_cache(url: str = "") -> FactCache:
    """`lru://[?entries=N]` (the default, also "" or memory://) or
    `memcached://HOST:PORT[?namespace=NAME&timeout_ms=N]`."""
    u = urlsplit(url)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    if url in ("", "memory://") or u.scheme == "lru":
        return LRUCache(int(q.get("entries", "100000")))
    if u.scheme == "memcached":
        if not u.hostname or not u.port:
            raise ValueError(f"memcached URL needs HOST:PORT: {url!r}")
        timeout_s = int(q.get("timeout_ms", "100")) / 1000
        return MemcachedCache(
            u.hostname,
            u.port,
            namespace=q.get("namespace", "raftbox"),
            connect_timeout_s=timeout_s,
            timeout_s=timeout_s,
        )
    raise ValueError(f"unsupported cache {url!r} (use lru:// or memcached://HOST:PORT)")


class CachingStore:
    """Remembers which blocks the store has and their stored sizes, in a `FactCache`.

    `has` and `put` of a block known present skip the store (a put still checks that the bytes
    match the id). A block this store put is remembered present only once a `sync` made it
    durable (a presence fact, shared through memcached, must not outlive a machine crash that
    lost the block); until then `has` asks the store. Presence facts live `present_ttl_s` so that a block deleted by another
    process (garbage collection) is not believed present forever; `delete` through this store
    forgets at once. A `get` that finds no block forgets a stale presence fact. Block contents
    are never cached here.
    """

    def __init__(self, inner: BlockStore, cache: FactCache, *, present_ttl_s: int = 3600) -> None:
        self.inner = inner
        self.cache = cache
        self.present_ttl_s = present_ttl_s
        self._put_unsynced: list[str] = []  # put here, to remember once a sync covers them

    @staticmethod
    def _present_key(block_id: str) -> str:
        return "blk:p:" + block_id

    @staticmethod
    def _size_key(block_id: str) -> str:
        return "blk:s:" + block_id

    async def _known_present(self, block_id: str) -> bool:
        return await self.cache.get(self._present_key(block_id)) == b"1"

    async def _remember_present(self, block_id: str) -> None:
        await self.cache.set(self._present_key(block_id), b"1", self.present_ttl_s)

    async def _forget(self, block_id: str) -> None:
        await self.cache.delete(self._present_key(block_id))
        await self.cache.delete(self._size_key(block_id))

    async def put(self, block_id: str, data: bytes) -> bool:
        check_id(block_id)
        if await self._known_present(block_id):
            await asyncio.to_thread(codec.check_put, block_id, data)
            return False
        written = await self.inner.put(block_id, data)
        if len(self._put_unsynced) < UNSYNCED_IDS_MAX:  # past it: just not remembered
            self._put_unsynced.append(block_id)
        return written

    async def get(self, block_id: str) -> bytes:
        try:
            return await self.inner.get(block_id)
        except BlockNotFound:
            await self._forget(block_id)
            raise

    async def has(self, block_id: str) -> bool:
        check_id(block_id)
        if await self._known_present(block_id):
            return True
        present = await self.inner.has(block_id)
        if present:
            await self._remember_present(block_id)
        return present

    async def delete(self, block_id: str) -> None:
        check_id(block_id)
        await self._forget(block_id)
        await self.inner.delete(block_id)
        await self._forget(block_id)

    async def stored_size(self, block_id: str) -> int:
        check_id(block_id)
        key = self._size_key(block_id)
        cached = await self.cache.get(key)
        if cached is not None and cached.isdigit():
            return int(cached)
        size = await self.inner.stored_size(block_id)
        await self.cache.set(key, str(size).encode(), self.present_ttl_s)
        return size

    async def sync(self) -> None:
        ids, self._put_unsynced = self._put_unsynced, []
        await self.inner.sync()  # a flush that started after these puts: they are durable
        for block_id in dict.fromkeys(ids):
            await self._remember_present(block_id)

    def list(self) -> AsyncIterator[str]:
        return self.inner.list()

    async def aclose(self) -> None:
        await self.inner.aclose()


class GenerationKeyedCache:
    """A `FactCache` whose keys carry the GC generation `generation()` returns, for the block
    cache of a blockserver: after the blockserver reads a new generation (blocks were deleted),
    every presence fact learned before is a miss (why: `raftbox.gc`'s module docstring)."""

    def __init__(self, inner: FactCache, generation: Callable[[], int]) -> None:
        self.inner = inner
        self.generation = generation

    def _k(self, key: Key) -> bytes:
        k = key.encode() if isinstance(key, str) else bytes(key)
        return b"g%d:" % self.generation() + k

    async def get(self, key: Key) -> bytes | None:
        return await self.inner.get(self._k(key))

    async def set(self, key: Key, value: bytes, ttl_s: int = 0) -> None:
        await self.inner.set(self._k(key), value, ttl_s)

    async def delete(self, key: Key) -> None:
        await self.inner.delete(self._k(key))

    async def aclose(self) -> None:
        await self.inner.aclose()
