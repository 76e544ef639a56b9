"""The block role: bytes in, content-addressed blocks out, and back.

`ingest(stream)` reads a request body as it arrives and pushes it through the streaming
`Chunker` of the cluster's chunking setting (content-defined by default, fixed 4 MiB optional;
a block cut under one setting stays valid under the other: a block is its bytes and its id).
The chunker names every block (SHA-256) and computes the Dropbox content_hash — and the raw
digests of the 4 MiB content_hash windows, which an upload session keeps per piece so that a
finished session's content_hash needs no second read — in the same pass over the data. That
CPU work runs in a worker thread once `feed_bytes` have arrived, so the event loop keeps
serving while a big body is hashed. Each block is stored as soon as it is cut, with at most
`puts_in_flight` puts running at once: memory stays at a few blocks whatever the file size. A
block already in the store costs no second write (the store's `put` contract). `ingest` returns
only once its blocks are durable (the store's `sync`, one flush shared by the requests that
arrive together), so its caller may propose a commit that references them at once; a caller of
`put_verified` awaits `sync()` itself before proposing anything that names those blocks.

`read_range` streams a byte range of a file back from its blocklist, block by block, every
block re-verified by the store, the next block read while the current one is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .chunker import CDC, Chunk, Chunker, Chunking
from .hashing import BLOCK_WINDOW_BYTES, ContentHasher, content_hash_from_digests
from .store import BlockStore

KiB = 1024
MiB = 1024 * KiB


class PayloadTooLarge(Exception):
    pass


@dataclass(frozen=True)
class Ingested:
    blocks: list[tuple[str, int]]  # (block id, size) in file order
    size: int
    content_hash: str
    # raw SHA-256 of each 4 MiB content_hash window from the start of this body (the last one
    # may be short): what an upload session piece carries (`SessionAppend.window_digests`)
    window_digests: list[bytes] = field(default_factory=list)


def _first_error(eg: BaseExceptionGroup) -> BaseException:
    e: BaseException = eg
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e


class BlockService:
    def __init__(
        self,
        store: BlockStore,
        chunking: Chunking = CDC,
        *,
        read_bytes: int = 1 * MiB,
        feed_bytes: int = 1 * MiB,
        puts_in_flight: int = 4,
        thread_min_bytes: int = 64 * KiB,
    ) -> None:
        if puts_in_flight < 1:
            raise ValueError("puts_in_flight must be >= 1")
        from .malloc import tune_for_blocks

        tune_for_blocks()  # this process moves blocks: see `raftbox.blocks.malloc`
        self.store = store
        self.chunking = chunking
        self.read_bytes = read_bytes
        self.feed_bytes = feed_bytes
        self.puts_in_flight = puts_in_flight
        self.thread_min_bytes = thread_min_bytes

    async def _feed(self, ch: Chunker, pieces: list[bytes], n: int, last: bool) -> list[Chunk]:
        def work() -> list[Chunk]:
            out: list[Chunk] = []
            for p in pieces:
                out.extend(ch.feed(p))
            if last:
                out.extend(ch.finish())
            return out

        if n >= self.thread_min_bytes:
            return await asyncio.to_thread(work)
        return work()

    async def ingest(self, stream, limit_bytes: int) -> Ingested:
        """Read `stream` (anything with `async read(n)`) to EOF, storing blocks as they are cut;
        `PayloadTooLarge` (and nothing recorded) past `limit_bytes`."""
        ch = Chunker(self.chunking)
        blocks: list[tuple[str, int]] = []
        slots = asyncio.Semaphore(self.puts_in_flight)
        feeding: asyncio.Future[list[Chunk]] | None = None

        async def put(c: Chunk) -> None:
            try:
                await self.store.put(c.id, c.data)
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as tg:

                async def store_all(chunks: list[Chunk]) -> None:
                    for c in chunks:
                        blocks.append((c.id, c.size))
                        await slots.acquire()
                        tg.create_task(put(c))

                # The chunker works on one batch in a thread while the next batch is read:
                # network reads, hashing and store writes overlap.
                feeding: asyncio.Future[list[Chunk]] | None = None
                total = 0
                pending: list[bytes] = []
                pending_n = 0
                while True:
                    piece = await stream.read(self.read_bytes)
                    if not piece:
                        break
                    total += len(piece)
                    if total > limit_bytes:
                        raise PayloadTooLarge(f"body larger than {limit_bytes} bytes")
                    pending.append(piece)
                    pending_n += len(piece)
                    if pending_n >= self.feed_bytes:
                        if feeding is not None:
                            await store_all(await feeding)
                        feeding = asyncio.ensure_future(self._feed(ch, pending, pending_n, False))
                        pending, pending_n = [], 0
                if feeding is not None:
                    await store_all(await feeding)
                    feeding = None
                await store_all(await self._feed(ch, pending, pending_n, True))
            if blocks:
                await self.store.sync()  # durable before any commit may name them
        except BaseExceptionGroup as eg:
            raise _first_error(eg) from None
        finally:
            if feeding is not None and not feeding.done():
                # the chunker thread cannot be interrupted: let it finish before `ch` is dropped
                await asyncio.shield(feeding)
        return Ingested(blocks, ch.size, ch.content_hash(), ch.window_digests())

    async def put_verified(self, block_id: str, data: bytes) -> None:
        """Store one block the caller named (the store checks that `data` hashes to it); not
        durable before `sync()`."""
        await self.store.put(block_id, data)

    async def sync(self) -> None:
        """Every block stored so far is durable once this returns (the store's `sync`)."""
        await self.store.sync()

    async def read_range(self, blocks: list, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the file made of `blocks` ((id, size) or BlockRef); the next
        block is fetched while the current one is being sent."""
        wanted: list[tuple[str, int, int]] = []  # (id, lo, hi) within each block
        pos = 0
        for b in blocks:
            bid, size = (b.id, b.size) if hasattr(b, "id") else b
            lo, hi = pos, pos + size
            pos = hi
            if hi <= start:
                continue
            if lo >= end:
                break
            wanted.append((bid, max(0, start - lo), min(size, end - lo)))
        if not wanted:
            return
        nxt: asyncio.Task | None = asyncio.ensure_future(self.store.get(wanted[0][0]))
        try:
            for i, (_bid, a, b) in enumerate(wanted):
                assert nxt is not None
                data = await nxt
                nxt = (
                    asyncio.ensure_future(self.store.get(wanted[i + 1][0]))
                    if i + 1 < len(wanted)
                    else None
                )
                yield data[a:b] if (a, b) != (0, len(data)) else data
        finally:
            if nxt is not None:
                nxt.cancel()
                if nxt.done() and not nxt.cancelled():
                    nxt.exception()  # retrieved: the caller stopped reading, nothing to report

    async def read_blocks(self, blocks: list) -> AsyncIterator[bytes]:
        """Whole blocks, in order (the next one fetched while this one is sent)."""
        ids = [b.id if hasattr(b, "id") else b[0] for b in blocks]
        if not ids:
            return
        nxt: asyncio.Future | None = asyncio.ensure_future(self.store.get(ids[0]))
        try:
            for i in range(len(ids)):
                assert nxt is not None
                data = await nxt
                nxt = (
                    asyncio.ensure_future(self.store.get(ids[i + 1])) if i + 1 < len(ids) else None
                )
                yield data
        finally:
            if nxt is not None:
                nxt.cancel()
                if nxt.done() and not nxt.cancelled():
                    nxt.exception()

    async def content_hash_of(self, blocks: list[tuple[str, int]]) -> str:
        """content_hash of a file given its blocklist: derived from the block ids when every
        block but the last is exactly one 4 MiB window, else by re-reading the blocks."""
        if all(s == BLOCK_WINDOW_BYTES for _, s in blocks[:-1]) and all(s > 0 for _, s in blocks):
            return content_hash_from_digests([bytes.fromhex(b) for b, _ in blocks])
        ch = ContentHasher()
        for bid, _ in blocks:
            data = await self.store.get(bid)
            if len(data) >= self.thread_min_bytes:
                await asyncio.to_thread(ch.update, data)
            else:
                ch.update(data)
        return ch.hexdigest()
