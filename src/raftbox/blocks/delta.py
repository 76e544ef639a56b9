"""Block deltas: send a changed block as the few bytes that differ from a block the server has.

Why
---
CDC dedup alone sends a whole ~1 MiB block for a 100-byte insertion (the block it lands in
changes). rsync sends ~33 KB for it. To do as well the client must send the new block as a
delta against the block it replaces. The client no longer has that block's bytes (the file
was edited in place), so, like rsync, it asks the side that has them for a *signature* — a few
bytes per small piece of the base — and sends only the pieces of the new block the signature
does not contain. The server rebuilds the block from its copy of the base, checks that the
result hashes to the claimed block id, and stores it as a normal block. Nothing about a stored
block says it arrived as a delta.

Theory of operation
-------------------
Both sides cut a block into *pieces* with content-defined chunking at a small scale
(`PIECES`: FastCDC, 512 B min, 2 KiB average, 8 KiB max): an insertion changes the piece it
lands in, every other piece keeps its bytes and so its hash, wherever it moves.

- `signature(base)`: for every piece of the base, 8 bytes of BLAKE2b and its size
  (`SIG_ENTRY`: 12 bytes per ~2.5 KiB, ~5 KB for a 1 MiB block).
- `make_delta(sig, new)`: cut `new` the same way; a piece whose (hash, size) is in the signature
  becomes "copy base[offset:offset+size]" (neighbouring copies merge), any other piece a
  literal. The op stream is zstd-compressed (literals that compress, do). `worth_it` says
  whether to send it: only when it is at most half the block.
- `apply_delta(base, delta, max_out_bytes)`: decode and execute the ops. Bounded: the op stream
  is decompressed to at most `max_out_bytes` plus the op headers an output of that size can
  need (with a zstd window of at most `MAX_WINDOW_BYTES`), every copy must lie inside the
  base, and the output never exceeds `max_out_bytes`. Time is linear in the op stream. Any violation is `DeltaError` (the sender's fault).

A truncated 64-bit hash can collide; a collision makes the server's rebuilt block hash to
something else, which it refuses (`BlockMismatch`-style 400), and the client sends the whole
block. Correctness never rests on the signature, only on the block id.

Op stream (after zstd decompression)::

    b"C" u32 offset u32 size      copy `size` bytes of the base from `offset`
    b"L" u32 size   bytes         `size` literal bytes

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

import zstandard

from .chunker import FastCDC

PIECE_MIN_BYTES = 512
PIECE_AVG_BYTES = 2048
PIECE_MAX_BYTES = 8192
SIG_ENTRY = struct.Struct(">8sI")  # BLAKE2b-64 of the piece, its size
_COPY = struct.Struct(">cII")
_LIT = struct.Struct(">cI")
ZSTD_LEVEL = 3
MAX_WINDOW_BYTES = 16 * 1024 * 1024  # a frame asking the decoder for more is refused

_cdc = FastCDC(PIECE_AVG_BYTES, min_size=PIECE_MIN_BYTES, max_size=PIECE_MAX_BYTES)


class DeltaError(ValueError):
    """A delta or a signature is malformed or out of bounds (the sender's fault)."""


def _pieces(data: bytes) -> Iterable[tuple[int, int]]:
    """(offset, size) of each piece of `data`."""
    if not data:
        return []
    return ((c.offset, c.length) for c in _cdc.cut_buf(data))


def _h(view: memoryview) -> bytes:
    return hashlib.blake2b(view, digest_size=8).digest()


def signature(base: bytes) -> bytes:
    """The signature of `base`: `SIG_ENTRY` per piece, in order."""
    mv = memoryview(base)
    return b"".join(SIG_ENTRY.pack(_h(mv[o : o + n]), n) for o, n in _pieces(base))


def parse_signature(sig: bytes, max_base_bytes: int) -> dict[tuple[bytes, int], int]:
    """(hash, size) → offset in the base, of every piece; `DeltaError` if malformed."""
    if len(sig) % SIG_ENTRY.size:
        raise DeltaError("a signature is whole entries")
    out: dict[tuple[bytes, int], int] = {}
    off = 0
    for h, n in SIG_ENTRY.iter_unpack(sig):
        if n == 0:
            raise DeltaError("a signature piece is not empty")
        out.setdefault((h, n), off)
        off += n
        if off > max_base_bytes:
            raise DeltaError(f"a signature for more than {max_base_bytes} bytes")
    return out


def make_delta(sig: bytes, new: bytes, max_base_bytes: int) -> bytes:
    """The delta that rebuilds `new` from the base whose signature is `sig` (always valid;
    whether it is worth sending is `worth_it`'s call)."""
    known = parse_signature(sig, max_base_bytes)
    mv = memoryview(new)
    ops = bytearray()
    copy: list[int] | None = None  # [offset, size] of the copy being extended
    lit_start = lit_end = 0
    for o, n in _pieces(new):
        at = known.get((_h(mv[o : o + n]), n))
        if at is None:
            if copy is not None:
                ops += _COPY.pack(b"C", *copy)
                copy = None
            if lit_end != o:  # a new literal run
                lit_start = o
            lit_end = o + n
            continue
        if lit_end > lit_start:
            ops += _LIT.pack(b"L", lit_end - lit_start) + mv[lit_start:lit_end]
            lit_start = lit_end = 0
        if copy is not None and copy[0] + copy[1] == at:
            copy[1] += n
        else:
            if copy is not None:
                ops += _COPY.pack(b"C", *copy)
            copy = [at, n]
    if copy is not None:
        ops += _COPY.pack(b"C", *copy)
    if lit_end > lit_start:
        ops += _LIT.pack(b"L", lit_end - lit_start) + mv[lit_start:lit_end]
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(bytes(ops))


def worth_it(delta_bytes: int, block_bytes: int) -> bool:
    """Send the delta instead of the block? Only when it is at most half the block: the delta
    costs the server a base read and a rebuild, and a fallback costs the client a round trip."""
    return delta_bytes * 2 <= block_bytes


def apply_delta(base: bytes, delta: bytes, max_out_bytes: int) -> bytes:
    """Rebuild the block `delta` describes from `base`, within the bounds in the module doc."""
    # Every op of an output of at most max_out_bytes covers >= 1 byte: at most that many ops.
    max_ops_bytes = max_out_bytes + _COPY.size * (max_out_bytes + 1)
    max_ops_bytes = min(max_ops_bytes, 2 * max_out_bytes + 1024 * 1024)
    try:
        dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
        reader = dctx.stream_reader(delta)
        ops = reader.read(max_ops_bytes + 1)
        trailing = reader.read(1)
    except zstandard.ZstdError as e:
        raise DeltaError(f"the delta is not a zstd frame: {e}") from None
    if len(ops) > max_ops_bytes or trailing:
        raise DeltaError(f"the delta's op stream exceeds {max_ops_bytes} bytes")
    out = bytearray()
    bmv, omv = memoryview(base), memoryview(ops)
    i = 0
    while i < len(ops):
        tag = ops[i : i + 1]
        if tag == b"C":
            if i + _COPY.size > len(ops):
                raise DeltaError("a copy op is cut short")
            _, off, n = _COPY.unpack_from(ops, i)
            i += _COPY.size
            if n == 0 or off + n > len(base):
                raise DeltaError(f"a copy of [{off}, {off + n}) from a base of {len(base)} bytes")
            piece = bmv[off : off + n]
        elif tag == b"L":
            if i + _LIT.size > len(ops):
                raise DeltaError("a literal op is cut short")
            _, n = _LIT.unpack_from(ops, i)
            i += _LIT.size
            if n == 0 or i + n > len(ops):
                raise DeltaError("a literal is cut short")
            piece = omv[i : i + n]
            i += n
        else:
            raise DeltaError(f"unknown op {tag!r}")
        if len(out) + n > max_out_bytes:
            raise DeltaError(f"the delta rebuilds more than {max_out_bytes} bytes")
        out += piece
    return bytes(out)


def pick_bases(
    old: Sequence[tuple[str, int]],
    new: Sequence[tuple[str, int]],
    wanted: Iterable[str],
    new_start: int = 0,
) -> dict[str, str]:
    """For each block id in `wanted` (blocks of `new` to send), the block of `old` (the
    previous version's blocklist) it most likely replaces: the one overlapping most of the same
    byte range (past the old end: the old last block). `new` may be a part of the new
    blocklist starting at byte `new_start`. Old blocks `new` still has are skipped (they
    move, they do not change)."""
    want = set(wanted)
    if not want or not old:
        return {}
    keep = {b for b, _ in new}
    spans: list[tuple[int, int, str]] = []
    off = 0
    for b, n in old:
        if b not in keep:
            spans.append((off, off + n, b))
        off += n
    out: dict[str, str] = {}
    j = 0
    off = new_start
    for b, n in new:
        lo, hi = off, off + n
        off = hi
        if b not in want or b in out:
            continue
        while j < len(spans) and spans[j][1] <= lo:
            j += 1
        best, best_n = None, 0
        k = j
        while k < len(spans) and spans[k][0] < hi:
            ov = min(hi, spans[k][1]) - max(lo, spans[k][0])
            if ov > best_n:
                best, best_n = spans[k][2], ov
            k += 1
        if best is None and j < len(spans):  # past the old file's end: its last block
            best = spans[min(j, len(spans) - 1)][2]
        elif best is None and spans:
            best = spans[-1][2]
        if best is not None:
            out[b] = best
    return out
