"""The durability rule of batched block writes (issue 16): a commit never references a block a
crash can lose. Blocks are stored without an fsync each and made durable together by the
store's `sync()`; every path that proposes a command naming blocks it stored must await that
barrier first.

A kill -9 of the server cannot show a missing barrier (the page cache survives it; that test is
`test_block_durability_kill.py`), so this one checks the ORDER itself, on every commit path:
the store records which blocks were put since the last `sync()`, the meta write is wrapped, and
no proposed command may name a block still waiting for its sync. On the code before batching
(no `sync()` at all) every path fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import msgspec
from tests.blocks.inproc import raftbox

from raftbox.blocks.native import NativeClient
from raftbox.blocks.store import MemoryStore
from raftbox.meta import commands as C


class BarrierStore(MemoryStore):
    """A MemoryStore that knows which blocks are not yet durable: put since the last sync."""

    def __init__(self) -> None:
        super().__init__()
        self.unsynced: set[str] = set()

    async def put(self, block_id: str, data: bytes) -> bool:
        written = await super().put(block_id, data)
        if written:
            self.unsynced.add(block_id)
        return written

    async def sync(self) -> None:
        await super().sync()
        self.unsynced.clear()


def block_ids(x: Any) -> set[str]:
    """Every BlockRef id inside a command."""
    if isinstance(x, C.BlockRef):
        return {x.id}
    if isinstance(x, msgspec.Struct):
        return set().union(*(block_ids(getattr(x, f)) for f in x.__struct_fields__))
    if isinstance(x, list | tuple):
        return set().union(*(block_ids(v) for v in x))
    return set()


def bid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_commit_path_syncs_its_blocks_before_proposing(tmp_path):
    store = BarrierStore()
    proposed: list[tuple[str, set[str]]] = []  # (command, the block ids it names)
    too_early: list[tuple[str, set[str]]] = []

    async def go():
        async with raftbox(tmp_path, store=store) as rb:
            write = rb.meta.write

            async def checked_write(cmd: Any) -> Any:
                named = block_ids(cmd)
                proposed.append((type(cmd).__name__, named))
                if named & store.unsynced:
                    too_early.append((type(cmd).__name__, named & store.unsynced))
                return await write(cmd)

            rb.meta.write = checked_write
            _ns, token = await rb.account("barrier@example.com")

            # files/upload
            await rb.upload(token, "/up.bin", os.urandom(5000))

            # upload sessions: start with data, append, finish with data
            st, res, _ = await rb.content(
                "files/upload_session/start", token, {"close": False}, os.urandom(3000)
            )
            assert st == 200, res
            sid = res["session_id"]
            cur = {"session_id": sid, "offset": 3000}
            st, res, _ = await rb.content(
                "files/upload_session/append_v2", token, {"cursor": cur}, os.urandom(3000)
            )
            assert st == 200, res
            cur = {"session_id": sid, "offset": 6000}
            st, res, _ = await rb.content(
                "files/upload_session/finish",
                token,
                {"cursor": cur, "commit": {"path": "/session.bin", "mode": "add"}},
                os.urandom(2000),
            )
            assert st == 200, res

            # finish_batch_v2 over a closed session
            st, res, _ = await rb.content(
                "files/upload_session/start", token, {"close": True}, os.urandom(4000)
            )
            assert st == 200, res
            entry = {
                "cursor": {"session_id": res["session_id"], "offset": 4000},
                "commit": {"path": "/batch.bin", "mode": "add"},
            }
            st, res = await rb.rpc(
                "files/upload_session/finish_batch_v2", token, {"entries": [entry]}
            )
            assert st == 200 and res["entries"][0][".tag"] == "success", res

            # native: blocks/put, blocks/put_delta, commit_batch
            async with NativeClient(rb.url, token) as nc:
                base = os.urandom(256 * 1024)
                await nc.put([(bid(base), base)])
                new = base[:1000] + b"an edit" + base[1000:]
                assert await nc.put_with_bases([(bid(new), new)], {bid(new): bid(base)}) == 1
                assert nc.delta_blocks == 1  # the delta path ran
                small = os.urandom(100)
                await nc.put([(bid(small), small)])
                out = await nc.commit_batch(
                    [
                        {"path": f"/n/{k}", "blocks": [[bid(b), len(b)]], "size": len(b)}
                        for k, b in enumerate([base, new, small])
                    ]
                )
                assert [e[".tag"] for e in out] == ["success"] * 3, out

    asyncio.run(go())
    kinds = {k for k, named in proposed if named}
    # every kind of command that names stored blocks was exercised
    assert {"CommitFile", "SessionAppend", "RecordUpload", "CommitBatch"} <= kinds, kinds
    assert too_early == [], f"proposed before their blocks were synced: {too_early}"
    assert store.unsynced == set()
