"""The block role: bytes in, content-addressed blocks out, and back.

`ingest(stream)` reads a request body as it arrives, cuts it into blocks of at most
`BLOCK_WINDOW_BYTES` (fixed 4 MiB chunking: each block is one content_hash window), hashes each
block once for both its id and the Dropbox content_hash, and stores each block before reading
the next: memory stays at one block whatever the file size. A block already in the store costs
no second write. `read_range` streams a byte range of a file back from its blocklist, block by
block, every block re-verified by the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .hashing import BLOCK_WINDOW_BYTES, ContentHasher, content_hash_from_digests
from .store import BlockStore


class PayloadTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Ingested:
    blocks: list[tuple[str, int]]  # (block id, size) in file order
    size: int
    content_hash: str


class BlockService:
    def __init__(self, store: BlockStore, block_bytes: int = BLOCK_WINDOW_BYTES) -> None:
        self.store = store
        self.block_bytes = block_bytes

    async def ingest(self, stream, limit_bytes: int) -> Ingested:
        """Read `stream` (anything with `async read(n)`) to EOF, storing blocks as they fill."""
        blocks: list[tuple[str, int]] = []
        ch = ContentHasher()
        buf = bytearray()
        total = 0
        while True:
            chunk = await stream.read(self.block_bytes - len(buf))
            if not chunk:
                break
            total += len(chunk)
            if total > limit_bytes:
                raise PayloadTooLarge(f"body larger than {limit_bytes} bytes")
            buf += chunk
            if len(buf) >= self.block_bytes:
                blocks.append(await self._put(bytes(buf), ch))
                buf.clear()
        if buf:
            blocks.append(await self._put(bytes(buf), ch))
        return Ingested(blocks, total, ch.hexdigest())

    async def _put(self, data: bytes, ch: ContentHasher) -> tuple[str, int]:
        ch.update(data)
        bid = hashlib.sha256(data).hexdigest()
        await self.store.put(bid, data)
        return bid, len(data)

    async def read_range(self, blocks: list, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the file made of `blocks` ((id, size) or BlockRef)."""
        pos = 0
        for b in blocks:
            bid, size = (b.id, b.size) if hasattr(b, "id") else b
            lo, hi = pos, pos + size
            pos = hi
            if hi <= start:
                continue
            if lo >= end:
                break
            data = await self.store.get(bid)
            yield data[max(0, start - lo) : min(size, end - lo)]

    async def content_hash_of(self, blocks: list[tuple[str, int]]) -> str:
        """content_hash of a file given its blocklist: derived from the block ids when every
        block but the last is exactly one 4 MiB window, else by re-reading the blocks."""
        if all(s == BLOCK_WINDOW_BYTES for _, s in blocks[:-1]) and all(s > 0 for _, s in blocks):
            return content_hash_from_digests([bytes.fromhex(b) for b, _ in blocks])
        ch = ContentHasher()
        for bid, _ in blocks:
            ch.update(await self.store.get(bid))
        return ch.hexdigest()
