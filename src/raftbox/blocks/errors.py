"""Block store errors: whose fault it was, and whether retrying can help.

- `BlockNotFound`: no such block. A fact, not a failure; never retried.
- `CorruptBlock`: the store holds bytes that do not hash to their id. Reported (logged and
  counted) and never served; retrying cannot help.
- `BlockMismatch`: the caller's bytes do not hash to the id it gave (the caller's fault).
- `TransientStoreError`: the backend failed in a way that may pass (timeouts, connection
  resets, 5xx, throttling). The only error `RetryingStore` retries.
- `BlockStoreError`: anything else from a backend (access denied, no such bucket, disk full):
  an operator must act; retrying does not help.
"""

from __future__ import annotations

import re

_ID = re.compile(r"^[0-9a-f]{64}$")

# No block is larger than this (chunkers cut at most 4 MiB; FastCDC's own ceiling is 16 MiB).
# It also bounds what a read may decompress, so a damaged frame header cannot balloon memory.
MAX_BLOCK_BYTES = 16 * 1024 * 1024


class BlockStoreError(Exception):
    pass


class BlockNotFound(BlockStoreError, KeyError):
    pass


class CorruptBlock(BlockStoreError):
    """The stored bytes no longer hash to their id: reported, never served."""


class BlockMismatch(BlockStoreError, ValueError):
    """put() was given bytes that do not hash to the given id."""


class TransientStoreError(BlockStoreError):
    """A backend failure that may pass; retrying with back-off can help."""


def is_block_id(s: object) -> bool:
    return isinstance(s, str) and _ID.match(s) is not None


def check_id(block_id: str) -> None:
    """A block id is 64 lowercase hex digits; anything else is the caller's error."""
    if not is_block_id(block_id):
        raise ValueError(f"not a block id: {block_id!r}")
