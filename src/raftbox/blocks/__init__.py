"""raftbox.blocks: content-addressed blocks — chunking, hashing, stores (DESIGN.md §6).

Layers, bottom up (restic's): `chunker` cuts bytes into blocks (pure); `hashing` names them and
computes the Dropbox content_hash; `codec` is a block's stored form (raw or zstd) and the
verification every read goes through; `store` is the `BlockStore` interface with the memory and
local-directory backends (`s3` for S3-compatible object stores); `wrappers`, `compress` and
`cache` wrap a store with retry, limits, metrics, compression and fact caching; `stack`
assembles them from settings.
"""

from .cache import CachingStore, FactCache, LRUCache, MemcachedCache, open_cache
from .chunker import CDC, FIXED, Chunk, ChunkedFile, Chunker, Chunking, chunk_bytes, chunk_file
from .compress import CompressedStore
from .errors import (
    MAX_BLOCK_BYTES,
    BlockMismatch,
    BlockNotFound,
    BlockStoreError,
    CorruptBlock,
    TransientStoreError,
)
from .hashing import BLOCK_WINDOW_BYTES, ContentHasher, block_id, content_hash
from .stack import build_store
from .store import BlockStore, LocalStore, MemoryStore, open_store
from .wrappers import LimitedStore, MetricsStore, RetryingStore

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
