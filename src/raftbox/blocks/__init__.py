"""raftbox.blocks: content-addressed blocks — chunking, hashing, stores (DESIGN.md §6)."""

from .hashing import BLOCK_WINDOW_BYTES, ContentHasher, block_id, content_hash
from .store import BlockStore, CorruptBlock, LocalStore, MemoryStore, open_store

__all__ = [
    "BLOCK_WINDOW_BYTES",
    "BlockStore",
    "ContentHasher",
    "CorruptBlock",
    "LocalStore",
    "MemoryStore",
    "block_id",
    "content_hash",
    "open_store",
]
