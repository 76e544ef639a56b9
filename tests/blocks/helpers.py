"""Small helpers for the block tests: running a coroutine, seeded data, a reference hash."""

from __future__ import annotations

import hashlib
import random

from raftbox.testing import run  # noqa: F401 - re-exported for the tests

MiB = 1024 * 1024


def rand_bytes(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(n)


def text_bytes(n: int, seed: int = 0) -> bytes:
    """Deterministic compressible bytes (words from a small vocabulary)."""
    rng = random.Random(seed)
    words = [b"raft", b"box", b"block", b"leader", b"term", b"commit", b"log", b"entry"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def bid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dropbox_content_hash(data: bytes) -> str:
    """The reference algorithm from Dropbox's documentation, written out independently:
    SHA-256 of each 4 MiB block, concatenated, SHA-256 of that."""
    block = 4 * 1024 * 1024
    digests = b"".join(
        hashlib.sha256(data[i : i + block]).digest() for i in range(0, len(data), block)
    )
    return hashlib.sha256(digests).hexdigest()
