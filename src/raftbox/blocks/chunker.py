"""Cutting a byte stream into blocks: content-defined (FastCDC) or fixed 4 MiB.

Theory of operation
-------------------
A `Chunker` is pushed bytes as they arrive (`feed`) and hands back every chunk whose end is
already decided; `finish()` flushes the rest at EOF. It is pure: no I/O, no clock, no asyncio, so
an async ingest loop, the sync client (`chunk_file`) and the tests all drive the same code.

- **cdc** (the default): FastCDC 2020 via pyfastcdc's compiled backend — minimum 256 KiB,
  nominal average 1 MiB (FastCDC's real mean is about avg + min, 1.25 MiB on random data),
  maximum 4 MiB. A cut point depends only on the bytes from the chunk's start to at most
  `max_bytes` past it, so the chunker cuts a chunk only once `max_bytes` are buffered beyond its
  start (or at EOF). That makes the cuts identical to cutting the whole input at once, whatever
  the sizes of the pieces fed — the property the tests check against `FastCDC.cut_buf`.
  An insertion changes the block it lands in (sometimes the next) instead of every block after
  it, which is what makes dedup work across edits.
- **fixed**: exactly `max_bytes` (4 MiB) per block, the last one short: the seed's behaviour,
  where every block is one Dropbox content_hash window.

Memory is one fixed buffer of `2 * max_bytes` plus the chunks handed out. Each chunk carries its
block id (SHA-256 of its raw bytes); the Dropbox content_hash of the whole stream is computed in
the same pass (`content_hash()` after `finish()`); under fixed 4 MiB chunking the window digests
are the block digests, so the bytes are hashed once.

The chunking setting is part of the cluster's identity only for dedup: a block cut under one
setting is still a valid block under another.

pyfastcdc silently falls back to a pure-Python chunker about 300x slower when its Cython
extension fails to load. Importing this module checks that the compiled backend loaded and
raises `CompiledChunkerMissing` otherwise: a server that would crawl must not start.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from .hashing import BLOCK_WINDOW_BYTES, ContentHasher, content_hash_from_digests

KiB = 1024
MiB = 1024 * KiB


class CompiledChunkerMissing(ImportError):
    """pyfastcdc's compiled (Cython) backend is not importable; only its slow fallback is."""


def _load_compiled_fastcdc():
    try:
        from pyfastcdc.cy import fastcdc as cy_fastcdc
    except ImportError as e:
        raise CompiledChunkerMissing(
            "pyfastcdc's compiled backend (pyfastcdc.cy) failed to load; its pure-Python fallback "
            "is ~300x slower and raftbox refuses to run on it. Reinstall pyfastcdc from a wheel "
            f"for this platform (pip install --force-reinstall pyfastcdc): {e}"
        ) from e
    path = getattr(cy_fastcdc, "__file__", "") or ""
    if not path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        raise CompiledChunkerMissing(f"pyfastcdc.cy.fastcdc is not a compiled extension: {path!r}")
    return cy_fastcdc.FastCDC


FastCDC = _load_compiled_fastcdc()
CDC_BACKEND = "pyfastcdc.cy (compiled)"


@dataclass(frozen=True, slots=True)
class Chunking:
    """How to cut: `mode` with its size bounds in bytes. Validated when built."""

    mode: Literal["cdc", "fixed"]
    min_bytes: int
    avg_bytes: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.mode == "fixed":
            if not (self.min_bytes == self.avg_bytes == self.max_bytes > 0):
                raise ValueError("fixed chunking has one size: min = avg = max > 0")
        elif self.mode == "cdc":
            if not (64 <= self.min_bytes <= self.avg_bytes <= self.max_bytes):
                raise ValueError(f"cdc needs 64 <= min <= avg <= max, got {self}")
            FastCDC(self.avg_bytes, min_size=self.min_bytes, max_size=self.max_bytes)  # bounds
        else:
            raise ValueError(f"unknown chunking mode {self.mode!r} (cdc or fixed)")

    @classmethod
    def cdc(cls, min_bytes=256 * KiB, avg_bytes=1 * MiB, max_bytes=4 * MiB) -> Chunking:
        return cls("cdc", min_bytes, avg_bytes, max_bytes)

    @classmethod
    def fixed(cls, block_bytes: int = BLOCK_WINDOW_BYTES) -> Chunking:
        return cls("fixed", block_bytes, block_bytes, block_bytes)

    @classmethod
    def parse(cls, name: str) -> Chunking:
        """The cluster setting: "cdc" or "fixed"."""
        if name == "cdc":
            return CDC
        if name == "fixed":
            return FIXED
        raise ValueError(f"unknown chunking {name!r} (cdc or fixed)")


CDC = Chunking.cdc()
FIXED = Chunking.fixed()


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int  # of the first byte in the stream
    data: bytes
    id: str  # lowercase hex SHA-256 of `data`

    @property
    def size(self) -> int:
        return len(self.data)


_FIRST_BUFFER_BYTES = 64 * 1024


class Chunker:
    """Push bytes in with `feed`, take complete chunks out; `finish` at EOF. Single use."""

    def __init__(self, chunking: Chunking = CDC) -> None:
        self.chunking = chunking
        self._max = chunking.max_bytes
        self._cdc = (
            FastCDC(chunking.avg_bytes, min_size=chunking.min_bytes, max_size=chunking.max_bytes)
            if chunking.mode == "cdc"
            else None
        )
        # Fixed 4 MiB blocks are content_hash windows: their digests serve both purposes.
        self._windows_are_blocks = chunking.mode == "fixed" and self._max == BLOCK_WINDOW_BYTES
        self._hasher = None if self._windows_are_blocks else ContentHasher()
        self._digests: list[bytes] = []
        # Starts small (most files are small: an 8 MiB buffer per 4 KiB file was most of the
        # cost of hashing many small files) and grows to 2 * max_bytes as data arrives.
        self._buf = bytearray(min(2 * self._max, _FIRST_BUFFER_BYTES))
        self._view = memoryview(self._buf)
        self._start = 0  # first byte of the next chunk in _buf
        self._end = 0  # end of buffered bytes in _buf
        self._offset = 0  # stream offset of _buf[_start]
        self.size = 0
        self._finished = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """Buffer `data`; return the chunks it completed, in stream order."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        src = memoryview(data).cast("B")
        if self._hasher is not None:
            self._hasher.update(src)
        self.size += len(src)
        out: list[Chunk] = []
        while src:
            if self._end == len(self._buf):
                self._make_room()
            take = min(len(src), len(self._buf) - self._end)
            self._view[self._end : self._end + take] = src[:take]
            self._end += take
            src = src[take:]
            while self._end - self._start >= self._max:
                out.append(self._emit(self._cut(self._view[self._start : self._end])))
        return out

    def feed_from(
        self, readinto: Callable[[memoryview], int | None], max_bytes: int
    ) -> tuple[list[Chunk], int]:
        """`feed` without the copy: `readinto(view)` (a raw file's `readinto`) writes at most
        `max_bytes` straight into the chunker's buffer and returns how many it wrote (0 or None:
        nothing, e.g. EOF). Returns (the chunks completed, bytes read). A big upload profiled a
        quarter of its client CPU in copies and in page faults on fresh read buffers: this keeps
        one read buffer for the whole stream and one copy per byte (the chunk handed out)."""
        if self._finished:
            raise RuntimeError("feed_from() after finish()")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        if self._end == len(self._buf):
            self._make_room()
        room = self._view[self._end : min(len(self._buf), self._end + max_bytes)]
        n = readinto(room) or 0
        if n:
            if self._hasher is not None:
                self._hasher.update(room[:n])
            self.size += n
            self._end += n
        out: list[Chunk] = []
        while self._end - self._start >= self._max:
            out.append(self._emit(self._cut(self._view[self._start : self._end])))
        return out, n

    def finish(self) -> list[Chunk]:
        """EOF: return the remaining chunks (none for an empty stream)."""
        if self._finished:
            raise RuntimeError("finish() twice")
        self._finished = True
        out: list[Chunk] = []
        while self._end > self._start:
            out.append(self._emit(self._cut(self._view[self._start : self._end])))
        return out

    def content_hash(self) -> str:
        """The Dropbox content_hash of everything fed; valid after `finish()`."""
        if not self._finished:
            raise RuntimeError("content_hash() before finish()")
        if self._hasher is not None:
            return self._hasher.hexdigest()
        return content_hash_from_digests(self._digests)

    def window_digests(self) -> list[bytes]:
        """Raw SHA-256 digests of the 4 MiB content_hash windows; complete after `finish()`."""
        if self._hasher is not None:
            return self._hasher.digests() if self._finished else list(self._hasher.window_digests)
        return list(self._digests)

    def _cut(self, view: memoryview) -> int:
        """Length of the next chunk at the start of `view` (which holds >= max bytes or EOF)."""
        if self._cdc is None:
            return min(len(view), self._max)
        return next(iter(self._cdc.cut_buf(view))).length

    def _emit(self, length: int) -> Chunk:
        assert 0 < length <= min(self._max, self._end - self._start), length
        data = bytes(self._view[self._start : self._start + length])
        digest = hashlib.sha256(data).digest()
        if self._windows_are_blocks:
            self._digests.append(digest)
        chunk = Chunk(self._offset, data, digest.hex())
        self._start += length
        self._offset += length
        return chunk

    def _make_room(self) -> None:
        n = self._end - self._start
        if len(self._buf) < 2 * self._max and n >= len(self._buf) // 2:
            buf = bytearray(min(2 * self._max, 4 * len(self._buf)))
            buf[:n] = self._view[self._start : self._end]
            self._buf, self._view = buf, memoryview(buf)
            self._start, self._end = 0, n
        else:
            self._compact()

    def _compact(self) -> None:
        n = self._end - self._start
        assert n < self._max, "a full window of max_bytes is always cut before compacting"
        self._view[:n] = self._view[self._start : self._end]
        self._start, self._end = 0, n


def chunk_bytes(data: bytes | bytearray | memoryview, chunking: Chunking = CDC) -> list[Chunk]:
    """One-shot: all chunks of `data`."""
    ch = Chunker(chunking)
    return ch.feed(data) + ch.finish()


class ChunkedFile:
    """The chunks of a file, read in `read_bytes` pieces: iterate once; afterwards `size`,
    `content_hash` and `blocks` ((id, size) in order) describe the whole file."""

    def __init__(self, path, chunking: Chunking = CDC, read_bytes: int = 1 * MiB) -> None:
        self.path = path
        self.read_bytes = read_bytes
        self._chunker = Chunker(chunking)
        self.blocks: list[tuple[str, int]] = []
        self.size = 0
        self.content_hash: str | None = None

    def __iter__(self) -> Iterator[Chunk]:
        ch = self._chunker
        with open(self.path, "rb") as f:
            while piece := f.read(self.read_bytes):
                for c in ch.feed(piece):
                    self.blocks.append((c.id, c.size))
                    yield c
        for c in ch.finish():
            self.blocks.append((c.id, c.size))
            yield c
        self.size = ch.size
        self.content_hash = ch.content_hash()


def chunk_file(path, chunking: Chunking = CDC) -> ChunkedFile:
    """For the sync client: `for c in (cf := chunk_file(p)): ...`, then `cf.content_hash`."""
    return ChunkedFile(path, chunking)
