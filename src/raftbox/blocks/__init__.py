"""raftbox.blocks: content-addressed blocks — chunking, hashing, stores (DESIGN.md §6).

Layers, bottom up (restic's): `chunker` cuts bytes into blocks (pure); `hashing` names them and
computes the Dropbox content_hash; `codec` is a block's stored form (raw or zstd) and the
verification every read goes through; `store` is the `BlockStore` interface with the memory and
local-directory backends (`s3` for S3-compatible object stores); `wrappers`, `compress` and
`cache` wrap a store with retry, limits, metrics, compression and fact caching; `stack`
assembles them from settings.
"""

import importlib
from typing import Any

# Names are loaded on first use (PEP 562): a program that needs only the chunker (the sync
# client) does not pay for the stores, S3, memcached and Prometheus at start-up.
_WHERE = {
    "cache": ("CachingStore", "FactCache", "GenerationKeyedCache", "LRUCache", "MemcachedCache",
              "open_cache"),
    "chunker": ("CDC", "FIXED", "Chunk", "ChunkedFile", "Chunker", "Chunking", "chunk_bytes",
                "chunk_file"),
    "compress": ("CompressedStore",),
    "errors": ("MAX_BLOCK_BYTES", "BlockMismatch", "BlockNotFound", "BlockStoreError",
               "CorruptBlock", "TransientStoreError"),
    "hashing": ("BLOCK_WINDOW_BYTES", "ContentHasher", "block_id", "content_hash"),
    "stack": ("build_store",),
    "store": ("BlockStore", "LocalStore", "MemoryStore", "open_store"),
    "wrappers": ("LimitedStore", "MetricsStore", "RetryingStore"),
}  # fmt: skip
_MODULE_OF = {name: mod for mod, names in _WHERE.items() for name in names}


def __getattr__(name: str) -> Any:
    mod = _MODULE_OF.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = [
    "BLOCK_WINDOW_BYTES",
    "CDC",
    "FIXED",
    "MAX_BLOCK_BYTES",
    "BlockMismatch",
    "BlockNotFound",
    "BlockStore",
    "BlockStoreError",
    "CachingStore",
    "Chunk",
    "ChunkedFile",
    "Chunker",
    "Chunking",
    "CompressedStore",
    "ContentHasher",
    "CorruptBlock",
    "FactCache",
    "GenerationKeyedCache",
    "LRUCache",
    "LimitedStore",
    "LocalStore",
    "MemcachedCache",
    "MemoryStore",
    "MetricsStore",
    "RetryingStore",
    "TransientStoreError",
    "block_id",
    "build_store",
    "chunk_bytes",
    "chunk_file",
    "content_hash",
    "open_cache",
    "open_store",
]
