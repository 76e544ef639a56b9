"""Block stores: one narrow interface, several backends (restic's backend layering).

`BlockStore` is `put(id, data)`, `get(id) -> bytes`, `has(id)`, `delete(id)`, `list()`. Blocks
are immutable and content-addressed: `put` of an id that exists writes nothing; `get` re-hashes
what it read and raises `CorruptBlock` rather than return bytes that do not match their id.
Retry, limits, caching and compression wrap a store; they are not flags inside one.

`LocalStore` keeps each block in `ROOT/ab/cd/<id>` (fan-out keeps directories small) and writes
it once: temp file, fsync, rename, fsync the directory — a crash leaves the block whole or absent.
The blocking file work runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from typing import Protocol

_ID = re.compile(r"^[0-9a-f]{64}$")


class BlockStoreError(Exception):
    pass


class BlockNotFound(BlockStoreError, KeyError):
    pass


class CorruptBlock(BlockStoreError):
    """The stored bytes no longer hash to their id: reported, never served."""


def check_id(block_id: str) -> None:
    if not _ID.match(block_id):
        raise ValueError(f"not a block id: {block_id!r}")


def verify(block_id: str, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != block_id:
        raise CorruptBlock(f"block {block_id} is corrupt (hash mismatch)")


class BlockStore(Protocol):
    async def put(self, block_id: str, data: bytes) -> bool:
        """Store a block; returns False if it was already there (nothing written)."""
        ...

    async def get(self, block_id: str) -> bytes: ...

    async def has(self, block_id: str) -> bool: ...

    async def delete(self, block_id: str) -> None: ...

    def list(self) -> AsyncIterator[str]: ...


class MemoryStore:
    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}
        self.puts = 0

    async def put(self, block_id: str, data: bytes) -> bool:
        check_id(block_id)
        verify(block_id, data)
        if block_id in self.blocks:
            return False
        self.blocks[block_id] = bytes(data)
        self.puts += 1
        return True

    async def get(self, block_id: str) -> bytes:
        check_id(block_id)
        try:
            data = self.blocks[block_id]
        except KeyError:
            raise BlockNotFound(block_id) from None
        verify(block_id, data)
        return data

    async def has(self, block_id: str) -> bool:
        return block_id in self.blocks

    async def delete(self, block_id: str) -> None:
        self.blocks.pop(block_id, None)

    async def list(self) -> AsyncIterator[str]:
        for k in list(self.blocks):
            yield k


class LocalStore:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def _path(self, block_id: str) -> str:
        check_id(block_id)
        return os.path.join(self.root, block_id[:2], block_id[2:4], block_id)

    async def put(self, block_id: str, data: bytes) -> bool:
        verify(block_id, data)
        return await asyncio.to_thread(self._put, block_id, data)

    def _put(self, block_id: str, data: bytes) -> bool:
        path = self._path(block_id)
        if os.path.exists(path):
            return False
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return True

    async def get(self, block_id: str) -> bytes:
        return await asyncio.to_thread(self._get, block_id)

    def _get(self, block_id: str) -> bytes:
        try:
            with open(self._path(block_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlockNotFound(block_id) from None
        verify(block_id, data)
        return data

    async def has(self, block_id: str) -> bool:
        return os.path.exists(self._path(block_id))

    async def delete(self, block_id: str) -> None:
        try:
            os.unlink(self._path(block_id))
        except FileNotFoundError:
            pass

    async def list(self) -> AsyncIterator[str]:
        for _dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if _ID.match(name):
                    yield name
            await asyncio.sleep(0)


def open_store(url: str) -> BlockStore:
    """`file://DIR` or `memory://`."""
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :])
    if url == "memory://":
        return MemoryStore()
    raise ValueError(f"unsupported block store {url!r} (use file://DIR or memory://)")
