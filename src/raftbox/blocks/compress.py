"""`CompressedStore`: zstd per block, when it pays.

`put` compresses the raw block at `level` (in a worker thread) and stores the zstd frame only if
it is at least `min_saving` (default 5%) smaller; otherwise it stores the raw bytes. Whether to
try is decided from a 64 KiB sample first (`codec.worth_trying`), so already compressed media
costs a sample's compression, not a whole trial. The block id is always the
SHA-256 of the raw bytes. The layer below checks, before writing, that the frame decompresses
to bytes with that id, and every read is verified after decompression (`codec.decode`), so
a compressor fault can neither be written nor served.

Reading needs no wrapper: every store decodes both stored forms, which is why the two coexist
and compression can be switched on, off or re-levelled at any time. `get` here simply
forwards; `stored_size` reports what a block takes in the store.

A put first asks the store whether it has the block, so duplicates — the common case under
dedup — cost no compression at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from . import codec
from .errors import check_id
from .store import BlockStore


class CompressedStore:
    def __init__(self, inner: BlockStore, *, level: int = 3, min_saving: float = 0.05) -> None:
        if not 1 <= level <= 22:
            raise ValueError(f"zstd level must be in 1..22, got {level}")
        if not 0.0 <= min_saving < 1.0:
            raise ValueError(f"min_saving is a fraction in [0, 1), got {min_saving}")
        self.inner = inner
        self.level = level
        self.min_saving = min_saving

    async def put(self, block_id: str, data: bytes) -> bool:
        check_id(block_id)
        if await self.inner.has(block_id):
            await asyncio.to_thread(codec.check_put, block_id, data)
            return False
        stored = await asyncio.to_thread(codec.compress, data, self.level, self.min_saving)
        return await self.inner.put(block_id, stored)

    async def get(self, block_id: str) -> bytes:
        return await self.inner.get(block_id)

    async def has(self, block_id: str) -> bool:
        return await self.inner.has(block_id)

    async def delete(self, block_id: str) -> None:
        await self.inner.delete(block_id)

    async def stored_size(self, block_id: str) -> int:
        return await self.inner.stored_size(block_id)

    async def sync(self) -> None:
        await self.inner.sync()

    def list(self) -> AsyncIterator[str]:
        return self.inner.list()

    async def aclose(self) -> None:
        await self.inner.aclose()
