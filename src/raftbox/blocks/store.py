"""Block stores: one narrow interface, several backends (restic's backend layering).

`BlockStore` is `put(id, data)`, `get(id) -> bytes`, `has(id)`, `delete(id)`, `list()`, plus
`stored_size(id)`, `sync()` and `aclose()`. Blocks are immutable and content-addressed:

- `put` of an id that exists writes nothing and returns False; a new block is written once,
  atomically, and `put` returns True. Concurrent puts of one id write it once. `data` is the
  raw block or a zstd frame of it (see `codec`); bytes that do not decode to the id raise
  `BlockMismatch` before anything is written.
- `get` re-hashes what it read and raises `CorruptBlock` rather than return bytes that do not
  match their id (after decompressing, if the block is stored compressed).
- ids are 64 lowercase hex digits; any other id raises ValueError in every method.
- `put` makes a block readable, not necessarily durable: `sync()` returns once every block a
  `put` of this process returned for (written, or found already there) survives a crash of the
  machine. THE RULE every writer keeps: await `sync()` after storing blocks and before
  proposing anything that references them (a file commit, an upload session piece, a
  `RecordUpload`), so a commit never references a block a crash can lose. `BlockService.ingest`
  does it for the bodies it stores; the native `blocks/put` and `blocks/put_delta` do it before
  their `RecordUpload`.

Retry, concurrency limits, metrics, compression and caching wrap a store (`wrappers`,
`compress`, `cache`); they are not flags inside one. `stack.build_store` assembles them.

Backends: `MemoryStore` (tests), `LocalStore` (below), `S3Store` (`s3.py`). `open_store(url)`:

- `memory://`
- `file://DIR` (DIR relative or absolute: `file:///var/lib/raftbox/blocks`)
- `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&addressing=path|virtual|auto&profile=NAME
  &workers=N&conditional=1|0]` — credentials come from the standard AWS chain (environment,
  shared config/credentials files, instance role), never from the URL; see `s3.py`.

`LocalStore` keeps each block in `ROOT/ab/cd/<id>` (fan-out keeps directories small) and writes
it once: temp file, hard-link to its name (fails if the name exists, so two writers of one id
cannot both win) — a reader sees the block whole or not at all. Durability comes in batches
(group commit): `put` does not fsync; `sync()` runs one `syncfs` of the store's file system,
shared by every caller that arrives while it runs (a caller waits for a flush that STARTED after
it called, so its blocks are in it). One flush per batch of requests replaced an fsync of each
block file and of its directory, one by one, which was most of the store's time under small
uploads. `syncfs` covers blocks another process wrote to the same directory (blockserver
workers, a presence cache that skipped a put) as well. A machine crash between a `put` and its
`sync` can leave a block's name with lost content; nothing references such a block (the rule
above), and `has` and `put` do not take it for the block: a block this process did not write
or check yet is read and hashed once (a cost only when a block is stored twice; the ids known
whole are kept, at most `KNOWN_WHOLE_MAX`), and `put` writes it again if it is not whole.
Where the system has no `syncfs` (`atomic.HAVE_SYNCFS`), or with `sync_each_block=True`, every
`put` is durable on its own (temp file fsynced, then the directory) and `sync()` does nothing. The
blocking file work and hashing run in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from raftbox import atomic

from . import codec
from .errors import (
    MAX_BLOCK_BYTES,
    BlockMismatch,
    BlockNotFound,
    BlockStoreError,
    CorruptBlock,
    TransientStoreError,
    check_id,
    is_block_id,
)

__all__ = [
    "BlockMismatch",
    "BlockNotFound",
    "BlockStore",
    "BlockStoreError",
    "CorruptBlock",
    "GroupSync",
    "LocalStore",
    "MemoryStore",
    "TransientStoreError",
    "check_id",
    "open_store",
    "verify",
]

log = logging.getLogger("raftbox.blocks")


def verify(block_id: str, data: bytes) -> None:
    """Raise `CorruptBlock` unless `data` (raw or a zstd frame) decodes to `block_id`."""
    codec.decode(block_id, data)


def report_corrupt(where: str, block_id: str) -> None:
    log.error("corrupt block %s in %s: not served", block_id, where)


class BlockStore(Protocol):
    async def put(self, block_id: str, data: bytes) -> bool:
        """Store a block; returns False if it was already there (nothing written)."""
        ...

    async def get(self, block_id: str) -> bytes:
        """The raw bytes, verified; `BlockNotFound` or `CorruptBlock` otherwise."""
        ...

    async def has(self, block_id: str) -> bool: ...

    async def delete(self, block_id: str) -> None:
        """Remove a block; deleting an absent block is not an error."""
        ...

    def list(self) -> AsyncIterator[str]:
        """Every stored block id, in no particular order."""
        ...

    async def stored_size(self, block_id: str) -> int:
        """Bytes the block takes in the store (compressed size if stored compressed)."""
        ...

    async def sync(self) -> None:
        """Return once every block `put` returned for is durable (see the module docstring)."""
        ...

    async def aclose(self) -> None: ...


class GroupSync:
    """Group commit of a blocking `flush`: `await sync()` returns once a flush that started
    after the call has finished. Callers that arrive while a flush runs share the next one, so
    N concurrent callers cost about two flushes, not N. A flush that fails raises in the caller
    that ran it; the callers it would have covered run their own. `flushes` counts them."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._asked = 0  # tickets handed out, one per call
        self._done = 0  # every ticket up to this one is covered by a finished flush
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.flushes = 0

    async def sync(self) -> None:
        self._asked += 1
        ticket = self._asked
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            if self._done >= ticket:
                return
            covers = self._asked  # every call made so far: their puts came before this flush
            await asyncio.to_thread(self._flush)
            self.flushes += 1
            self._done = max(self._done, covers)


class MemoryStore:
    """Blocks in a dict, for tests. `writes` counts blocks actually written, `syncs` the calls
    of `sync` (nothing to flush: the dict is as durable as it gets)."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.writes = 0
        self.syncs = 0

    @property
    def puts(self) -> int:  # the name older tests use
        return self.writes

    async def put(self, block_id: str, data: bytes) -> bool:
        check_id(block_id)
        codec.check_put(block_id, data)
        if block_id in self.blocks:
            return False
        self.blocks[block_id] = bytes(data)
        self.writes += 1
        return True

    async def get(self, block_id: str) -> bytes:
        check_id(block_id)
        try:
            data = self.blocks[block_id]
        except KeyError:
            raise BlockNotFound(block_id) from None
        try:
            return codec.decode(block_id, data)
        except CorruptBlock:
            report_corrupt("memory", block_id)
            raise

    async def has(self, block_id: str) -> bool:
        check_id(block_id)
        return block_id in self.blocks

    async def delete(self, block_id: str) -> None:
        check_id(block_id)
        self.blocks.pop(block_id, None)

    async def list(self) -> AsyncIterator[str]:
        for k in list(self.blocks):
            yield k

    async def stored_size(self, block_id: str) -> int:
        check_id(block_id)
        try:
            return len(self.blocks[block_id])
        except KeyError:
            raise BlockNotFound(block_id) from None

    async def sync(self) -> None:
        self.syncs += 1

    async def aclose(self) -> None:
        pass


KNOWN_WHOLE_MAX = 100_000  # ids a LocalStore remembers as checked whole (about 13 MiB)


class LocalStore:
    """Blocks as files under `root`, fanned out as `ab/cd/<id>`; durable in batches (`sync`)
    unless `sync_each_block` (the default where the system has no `syncfs`)."""

    def __init__(self, root: str, *, sync_each_block: bool | None = None) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        if sync_each_block is None:
            sync_each_block = not atomic.HAVE_SYNCFS
        self.sync_each_block = sync_each_block
        self._group = GroupSync(self._flush)
        self._whole_ids: OrderedDict[str, None] = OrderedDict()  # written or checked here
        self._whole_lock = threading.Lock()

    def path_of(self, block_id: str) -> str:
        check_id(block_id)
        return os.path.join(self.root, block_id[:2], block_id[2:4], block_id)

    async def put(self, block_id: str, data: bytes) -> bool:
        path = self.path_of(block_id)
        return await asyncio.to_thread(self._put, block_id, path, data)

    def _put(self, block_id: str, path: str, data: bytes) -> bool:
        codec.check_put(block_id, data)
        durable = self.sync_each_block
        if os.path.exists(path):
            if durable or self._whole(block_id, path):
                return False
            # a name a machine crash left without its content (put, no sync): write it again
            log.warning("block %s in %s did not hold its bytes: written again", block_id, path)
            atomic.replace(path, data)
            self._note_whole(block_id)
            return True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        written = atomic.create(path, data, durable=durable)
        if not durable:
            self._note_whole(block_id)
        return written

    def _note_whole(self, block_id: str) -> None:
        with self._whole_lock:
            self._whole_ids[block_id] = None
            self._whole_ids.move_to_end(block_id)
            if len(self._whole_ids) > KNOWN_WHOLE_MAX:
                self._whole_ids.popitem(last=False)

    def _whole(self, block_id: str, path: str) -> bool:
        """Does `path` hold the block (known from this process, or read and hashed now)?"""
        with self._whole_lock:
            if block_id in self._whole_ids:
                return True
        try:
            with open(path, "rb") as f:
                codec.decode(block_id, f.read(MAX_BLOCK_BYTES + 1))
        except (OSError, CorruptBlock):
            return False
        self._note_whole(block_id)
        return True

    async def sync(self) -> None:
        if not self.sync_each_block:
            await self._group.sync()

    def _flush(self) -> None:
        atomic.syncfs(self.root)

    @property
    def flushes(self) -> int:
        """How many flushes `sync` ran (for tests and benchmarks)."""
        return self._group.flushes

    async def get(self, block_id: str) -> bytes:
        path = self.path_of(block_id)
        return await asyncio.to_thread(self._get, block_id, path)

    def _get(self, block_id: str, path: str) -> bytes:
        try:
            with open(path, "rb", buffering=0) as f:
                # a buffer of the file's size, not of the largest block: a 4 MiB buffer shrunk
                # to a 1 MiB block leaves holes malloc cannot reuse, and every read then faults
                # in fresh pages (profiled: one fault per 4 KiB read)
                size = os.fstat(f.fileno()).st_size
                data = f.read(min(size, MAX_BLOCK_BYTES) + 1)
        except FileNotFoundError:
            raise BlockNotFound(block_id) from None
        try:
            return codec.decode(block_id, data)
        except CorruptBlock:
            report_corrupt(path, block_id)
            raise

    async def has(self, block_id: str) -> bool:
        path = self.path_of(block_id)
        if not os.path.exists(path):
            return False
        if self.sync_each_block:
            return True
        with self._whole_lock:
            if block_id in self._whole_ids:
                return True
        return await asyncio.to_thread(self._whole, block_id, path)

    async def delete(self, block_id: str) -> None:
        try:
            os.unlink(self.path_of(block_id))
        except FileNotFoundError:
            pass

    async def list(self) -> AsyncIterator[str]:
        try:
            tops = await asyncio.to_thread(os.listdir, self.root)
        except FileNotFoundError:
            return
        for top in sorted(tops):
            if len(top) != 2:
                continue
            ids = await asyncio.to_thread(self._list_fanout, os.path.join(self.root, top))
            for block_id in ids:
                yield block_id

    @staticmethod
    def _list_fanout(top: str) -> list[str]:
        out = []
        for _dirpath, _dirs, files in os.walk(top):
            out.extend(name for name in files if is_block_id(name))
        return out

    async def stored_size(self, block_id: str) -> int:
        try:
            return os.stat(self.path_of(block_id)).st_size
        except FileNotFoundError:
            raise BlockNotFound(block_id) from None

    async def aclose(self) -> None:
        pass


def open_store(url: str) -> BlockStore:
    """A bare backend from a URL (see the module docstring); `stack.build_store` wraps it."""
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :])
    if url == "memory://":
        return MemoryStore()
    if url.startswith("s3://"):
        from .s3 import S3Store

        return S3Store.from_url(url)
    raise ValueError(f"unsupported block store {url!r} (use file://DIR, memory:// or s3://BUCKET)")
