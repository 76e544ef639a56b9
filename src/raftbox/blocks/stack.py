"""`build_store`: a backend from a URL, wrapped in the standard order.

Outermost first:

    CachingStore      presence and size facts; a known block costs no backend call
    CompressedStore   zstd once per new block, before any retry
    MetricsStore      what reaches the backend: ops, bytes, errors, latency (retries included)
    RetryingStore     transient errors only, bounded, jittered back-off
    LimitedStore      at most N backend operations in flight; back-off sleeps hold no slot
    backend           memory://, file://DIR or s3://BUCKET/PREFIX?...

A layer whose setting is None (or 0 retries) is left out.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from .cache import CachingStore, FactCache, open_cache
from .compress import CompressedStore
from .store import BlockStore, open_store
from .wrappers import LimitedStore, MetricsStore, RetryingStore


def build_store(
    url: str,
    *,
    compress_level: int | None = 3,
    retries: int = 4,
    max_concurrency: int | None = 32,
    cache: FactCache | str | None = None,
    metrics_registry: CollectorRegistry | None = None,
    store_name: str = "blocks",
    present_ttl_s: int = 3600,
) -> BlockStore:
    """`retries` is the number of extra attempts after a transient failure; `cache` is a
    `FactCache` or a cache URL for `open_cache` ("" means the in-process LRU)."""
    store: BlockStore = open_store(url)
    if max_concurrency:
        store = LimitedStore(store, max_concurrency)
    if retries > 0:
        store = RetryingStore(store, attempts=retries + 1)
    if metrics_registry is not None:
        store = MetricsStore(store, metrics_registry, store=store_name)
    if compress_level is not None:
        store = CompressedStore(store, level=compress_level)
    if cache is not None:
        fc = open_cache(cache) if isinstance(cache, str) else cache
        store = CachingStore(store, fc, present_ttl_s=present_ttl_s)
    return store
