"""`files/upload` requests that arrive together are proposed as one Raft entry
(`raftbox.api.commitgroup`), and each still gets exactly its own answer: the results of one
entry per request, a failing entry failing alone."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tests.blocks.inproc import raftbox

from raftbox.meta import commands as C
from raftbox.testing.procs import await_for


def test_concurrent_uploads_share_one_entry_and_keep_their_own_results(tmp_path):
    proposed: list[tuple[str, int]] = []

    async def go():
        async with raftbox(tmp_path) as rb:
            _ns, token = await rb.account("group@example.com")
            await rb.upload(token, "/taken.bin", b"first")
            group = rb.api.content.uploads
            write = rb.meta.write

            async def gated_write(cmd: Any) -> Any:
                n = len(cmd.entries) if isinstance(cmd, C.CommitBatch) else 1
                proposed.append((type(cmd).__name__, n))
                if len(proposed) == 1:  # hold the first until all 8 others wait behind it
                    await await_for(
                        lambda: asyncio.sleep(0, len(group._waiting) >= 8), 30, "8 waiting"
                    )
                return await write(cmd)

            rb.meta.write = gated_write
            bodies = {f"/g/{k}.bin": os.urandom(1000 + k) for k in range(7)}
            bodies["/taken.bin"] = b"second"  # mode add: a conflict, for this entry only

            async def up(path: str, data: bytes) -> tuple[int, Any]:
                st, res, _ = await rb.content(
                    "files/upload", token, {"path": path, "mode": "add"}, data
                )
                return st, res

            first = asyncio.create_task(up("/g/first.bin", b"one"))
            await await_for(lambda: asyncio.sleep(0, proposed), 30, "the first proposal")
            rest = await asyncio.gather(*(up(p, d) for p, d in bodies.items()))
            assert (await first)[0] == 200
            for (path, data), (st, res) in zip(bodies.items(), rest, strict=True):
                if path == "/taken.bin":
                    assert st == 409 and "conflict" in str(res), res
                    continue
                assert st == 200, res
                assert res["path_display"] == path and res["size"] == len(data)
                assert await rb.download(token, path) == data
            assert await rb.download(token, "/taken.bin") == b"first"
            assert await rb.download(token, "/g/first.bin") == b"one"

    asyncio.run(go())
    assert proposed == [("CommitFile", 1), ("CommitBatch", 8)], proposed
