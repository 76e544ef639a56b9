"""Block stores: one narrow interface, several backends (restic's backend layering).

`BlockStore` is `put(id, data)`, `get(id) -> bytes`, `has(id)`, `delete(id)`, `list()`, plus
`stored_size(id)` and `aclose()`. Blocks are immutable and content-addressed:

- `put` of an id that exists writes nothing and returns False; a new block is written once,
  atomically, and `put` returns True. Concurrent puts of one id write it once. `data` is the
  raw block or a zstd frame of it (see `codec`); bytes that do not decode to the id raise
  `BlockMismatch` before anything is written.
- `get` re-hashes what it read and raises `CorruptBlock` rather than return bytes that do not
  match their id (after decompressing, if the block is stored compressed).
- ids are 64 lowercase hex digits; any other id raises ValueError in every method.

Retry, concurrency limits, metrics, compression and caching wrap a store (`wrappers`,
`compress`, `cache`); they are not flags inside one. `stack.build_store` assembles them.

Backends: `MemoryStore` (tests), `LocalStore` (below), `S3Store` (`s3.py`). `open_store(url)`:

- `memory://`
- `file://DIR` (DIR relative or absolute: `file:///var/lib/raftbox/blocks`)
- `s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&addressing=path|virtual|auto&profile=NAME
  &workers=N&conditional=1|0]` — credentials come from the standard AWS chain (environment,
  shared config/credentials files, instance role), never from the URL; see `s3.py`.

`LocalStore` keeps each block in `ROOT/ab/cd/<id>` (fan-out keeps directories small) and writes
it once: temp file, fsync, hard-link to its name (fails if the name exists, so two writers of one
id cannot both win), fsync the directory — a crash leaves the block whole or absent. The
blocking file work and hashing run in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
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

    async def aclose(self) -> None: ...


class MemoryStore:
    """Blocks in a dict, for tests. `writes` counts blocks actually written."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.writes = 0

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

    async def aclose(self) -> None:
        pass


class LocalStore:
    """Blocks as files under `root`, fanned out as `ab/cd/<id>`."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)

    def path_of(self, block_id: str) -> str:
        check_id(block_id)
        return os.path.join(self.root, block_id[:2], block_id[2:4], block_id)

    async def put(self, block_id: str, data: bytes) -> bool:
        path = self.path_of(block_id)
        return await asyncio.to_thread(self._put, block_id, path, data)

    def _put(self, block_id: str, path: str, data: bytes) -> bool:
        codec.check_put(block_id, data)
        if os.path.exists(path):
            return False
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return atomic.create(path, data)

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
        return os.path.exists(self.path_of(block_id))

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
