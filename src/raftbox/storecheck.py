"""At start, check that this process reaches the cluster's one block store.

Blocks are not replicated between members: every meta member and every blockserver of a
cluster must reach the same store (`--blocks`: one shared directory or one S3 bucket), or a
download through one of them of what another took fails half-way. Nothing in the request path
can tell early, so a process checks at start, before it serves:

- The first leader writes a *marker block* into its store — a few bytes (a fixed prefix and a
  random id), stored under its SHA-256 like any block — and records its id in the replicated
  state (`SetStoreMarker`; the first one wins, so two leaders racing agree on one). GC keeps it
  (`meta.fsm.gc_mark_db`).
- Every process reads the id from the replicated state — a member after it has caught up (a
  linearizable read), a blockserver through its meta client — and reads the block from its own
  store. Missing (or corrupt) means its `--blocks` is not the cluster's store: it refuses to
  start (`WrongStore`: the process exits with status 78, EX_CONFIG) with a message that says
  what to fix.

A member started before the marker exists (while the first leader is still starting) waits for
it, up to `timeout_s`, and the leader writes it as soon as its own start reaches this step. We
wait rather than check later in the background because a member must not serve a single request
until it knows its store is right; the wait costs nothing once the marker exists (one read of
the replicated state and one block read), and on a new cluster it is the time the leader takes
to write one small block. `raftbox up` is its own leader: one put and one command, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable

from raftbox.blocks.store import BlockNotFound, BlockStore, CorruptBlock

MARKER_PREFIX = b"raftbox block store marker\n"
FIX = (
    "give every member the same --blocks (a shared directory or an S3 bucket); a blockserver "
    "needs that same --blocks too"
)


class WrongStore(Exception):
    """This process's block store is not the cluster's (a configuration error: don't retry)."""


def new_marker() -> tuple[str, bytes]:
    """(block id, bytes) of a fresh marker block."""
    data = MARKER_PREFIX + secrets.token_hex(16).encode() + b"\n"
    return hashlib.sha256(data).hexdigest(), data


async def verify(store: BlockStore, block_id: str, where: str, what: str = "member") -> None:
    """`WrongStore` unless the marker `block_id` is in `store` (`where`: its URL, for the
    message)."""
    try:
        data = await store.get(block_id)
    except BlockNotFound:
        why = "is missing"
    except CorruptBlock:
        why = "is corrupt"
    else:
        if data.startswith(MARKER_PREFIX):
            return
        why = "is not a marker"
    raise WrongStore(
        f"this {what}'s --blocks does not reach the cluster's block store: the cluster's "
        f"store marker {block_id} {why} in {where}; {FIX}"
    )


async def check(
    store: BlockStore,
    where: str,
    read_marker: Callable[[], Awaitable[str | None]],
    record_marker: Callable[[str], Awaitable[object]] | None = None,
    may_record: Callable[[], bool] = lambda: True,
    *,
    what: str = "member",
    timeout_s: float = 30.0,
    poll_s: float = 0.1,
) -> str:
    """Check the marker (waiting for it up to `timeout_s`); returns its id. `read_marker` must
    be linearizable. A meta member passes `record_marker(id)`, which proposes
    `SetStoreMarker(id)` (only the first such command takes effect: the marker is read again
    after it), and `may_record()`, true while it leads: only a leader writes a marker."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        marker = await read_marker()
        if marker:
            await verify(store, marker, where, what)
            return marker
        if record_marker is not None and may_record():
            block_id, data = new_marker()
            await store.put(block_id, data)
            await store.sync()  # durable before the cluster records it
            await record_marker(block_id)
            continue
        if loop.time() > deadline:
            raise WrongStore(
                f"the cluster recorded no block store marker within {timeout_s:.0f} s: is a meta "
                "member (its leader) running, and able to write to its --blocks?"
            )
        await asyncio.sleep(poll_s)
