"""The stored form of a block, and the one check every read goes through.

A block is stored either **raw** (the bytes themselves, so a stored object's SHA-256 is its
name) or as one **zstd frame** of them (zstd's own 4-byte magic number is the header). The
stored form is self-describing, so both forms coexist in one store: turning compression on or
off, or changing its level, never makes an existing block unreadable.

`decode(block_id, stored)` returns the raw bytes only if they hash to `block_id`. A raw block
that happens to start with the zstd magic (the first block of a .zst file) is recognised
because its decompression does not hash to the id while the stored bytes do; telling the two
forms apart this way would need a SHA-256 collision to go wrong. A frame is only decompressed
if its header declares a content size of at most `MAX_BLOCK_BYTES`.

`compress` decides from a cheap sample first (`worth_trying`): eight 8 KiB slices spread evenly
over the block (64 KiB in all) are compressed together, and a block whose sample does not save
`min_saving` is stored raw without compressing the whole of it. Random or already compressed
data (media, archives, encrypted files: what fills big uploads) then costs ~1/16 of a trial
compression instead of a whole one (profiled: the trial was ~1.3 ms of server CPU per MiB of
random data, a quarter of a native upload's server CPU). A block whose sample misleads is
stored raw (a compressible stretch that falls between two slices: narrower than a
seventh of the block): that costs space, never correctness, and a block whose sample compresses is still
stored raw unless the whole block saves `min_saving`.
"""

from __future__ import annotations

import hashlib
import threading

import zstandard

from .errors import MAX_BLOCK_BYTES, BlockMismatch, CorruptBlock

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_local = threading.local()  # zstd contexts are not thread-safe; one per thread


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cs = getattr(_local, "c", None)
    if cs is None:
        cs = _local.c = {}
    c = cs.get(level)
    if c is None:
        c = cs[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _try_decompress(stored: bytes) -> bytes | None:
    try:
        size = zstandard.frame_content_size(stored)
        if not 0 <= size <= MAX_BLOCK_BYTES:
            return None
        raw = _decompressor().decompress(stored)
    except zstandard.ZstdError:
        return None
    return raw if len(raw) == size else None


def _raw_of(block_id: str, stored: bytes) -> bytes | None:
    if stored[:4] == ZSTD_MAGIC:
        raw = _try_decompress(stored)
        if raw is not None and hashlib.sha256(raw).hexdigest() == block_id:
            return raw
    if hashlib.sha256(stored).hexdigest() == block_id:
        return bytes(stored)
    return None


def decode(block_id: str, stored: bytes) -> bytes:
    """Raw bytes of a stored block, verified against its id; else `CorruptBlock`."""
    raw = _raw_of(block_id, stored)
    if raw is None:
        raise CorruptBlock(f"block {block_id} is corrupt (stored bytes do not hash to its id)")
    return raw


def check_put(block_id: str, stored: bytes) -> int:
    """Before writing: `stored` (raw or a zstd frame) must decode to bytes hashing to
    `block_id`, else `BlockMismatch`. Returns the raw size."""
    if len(stored) > MAX_BLOCK_BYTES:
        raise BlockMismatch(f"block {block_id}: {len(stored)} bytes > {MAX_BLOCK_BYTES}")
    raw = _raw_of(block_id, stored)
    if raw is None:
        raise BlockMismatch(f"data does not hash to block id {block_id}")
    return len(raw)


SAMPLE_SLICE_BYTES = 8 * 1024
SAMPLE_SLICES = 8


def worth_trying(data: bytes | memoryview, level: int, min_saving: float) -> bool:
    """Whether a sample of `data` (`SAMPLE_SLICES` slices of `SAMPLE_SLICE_BYTES`, spread from
    its start to its end) saves at least `min_saving` under zstd `level`. Data no bigger than
    twice the sample is always worth trying (the whole costs little more than a sample)."""
    n = len(data)
    if n <= 2 * SAMPLE_SLICES * SAMPLE_SLICE_BYTES:
        return True
    mv = memoryview(data)
    step = (n - SAMPLE_SLICE_BYTES) // (SAMPLE_SLICES - 1)
    sample = b"".join(mv[i * step : i * step + SAMPLE_SLICE_BYTES] for i in range(SAMPLE_SLICES))
    return len(_compressor(level).compress(sample)) <= len(sample) * (1.0 - min_saving)


def compress(data: bytes, level: int, min_saving: float) -> bytes:
    """A zstd frame of `data` if it is at least `min_saving` (a fraction) smaller, else `data`
    (without compressing the whole when a sample says it will not be: `worth_trying`)."""
    if not worth_trying(data, level, min_saving):
        return data
    frame = _compressor(level).compress(data)
    return frame if len(frame) <= len(data) * (1.0 - min_saving) else data
