"""Block ids and the Dropbox content_hash.

- A **block id** is the lowercase hex SHA-256 of the block's raw bytes.
- The Dropbox **content_hash** is SHA-256 over the concatenated raw SHA-256 digests of the
  file's consecutive 4 MiB windows (the last may be short; an empty file has no window, so its
  hash is sha256(b"")). With fixed 4 MiB chunking the window digests *are* the block digests;
  with any other chunking `ContentHasher` computes them in the same pass over the data.
"""

from __future__ import annotations

import hashlib

BLOCK_WINDOW_BYTES = 4 * 1024 * 1024


def block_id(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class ContentHasher:
    """Streaming content_hash: feed bytes in any sizes, read `hexdigest()` at the end.

    `window_digests` are the raw digests of the complete windows so far; an upload session that
    is fed 4 MiB-aligned pieces can carry them instead of the bytes.
    """

    def __init__(self) -> None:
        self.window_digests: list[bytes] = []
        self._cur = hashlib.sha256()
        self._cur_len = 0
        self.total = 0

    def update(self, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        self.total += len(mv)
        while mv:
            take = min(len(mv), BLOCK_WINDOW_BYTES - self._cur_len)
            self._cur.update(mv[:take])
            self._cur_len += take
            mv = mv[take:]
            if self._cur_len == BLOCK_WINDOW_BYTES:
                self.window_digests.append(self._cur.digest())
                self._cur = hashlib.sha256()
                self._cur_len = 0

    def digests(self) -> list[bytes]:
        """All window digests, the partial last window included."""
        return self.window_digests + ([self._cur.digest()] if self._cur_len else [])

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(self.digests())).hexdigest()


def content_hash(data: bytes) -> str:
    h = ContentHasher()
    h.update(data)
    return h.hexdigest()


def content_hash_from_digests(digests: list[bytes]) -> str:
    return hashlib.sha256(b"".join(digests)).hexdigest()
