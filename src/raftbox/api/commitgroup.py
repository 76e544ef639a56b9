"""Group proposals: the commits of concurrent `files/upload` requests go to Raft together.

What. `CommitGroup(mc).write(cmd)` proposes a `CommitFile` and returns its result, exactly as
`mc.write(cmd)` would. While one proposal of the group is in flight, the commits that arrive
wait; when it is answered, the first of them proposes every waiting commit at once (at most
`max_entries`) as ONE `CommitBatch`, and each caller gets its own entry's result. A commit that
arrives alone is proposed alone, as a plain `CommitFile`.

Contract. Same results as one write per request: `CommitBatch` applies each entry on its own
(`meta.writes.commit`, the function a `CommitFile` runs, with its quota and GC checks; one
entry's failure is that entry's `MetaError` and changes nothing else). A failure of the whole
proposal (a timeout, no leader, a batch-level `MetaError`) is every member's answer. Entries are
ordered by arrival; concurrent requests had no order to keep. The blocks every command names
are already durable (the rule in `raftbox.blocks.store`: each request synced before it came).
A caller cancelled while its group's proposal is in flight does not cancel it: the proposal
runs in a task the group keeps until it is answered, and its result reaches every member.

Why. A small upload costs one Raft entry, and an entry costs a state-machine transaction (its
own `BEGIN`/`COMMIT`, the client session's row, the applied index) on top of the file's rows:
with 32 uploads in flight about a third of the meta apply time went to that per-entry share
(py-spy, `benchmarks/meta_bench.py`). One entry for the uploads that arrive together pays it
once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from raftbox.meta import commands as C
from raftbox.meta.context import MAX_BATCH_ENTRIES

from .metaclient import MetaClient


class CommitGroup:
    def __init__(self, mc: MetaClient, max_entries: int = 256) -> None:
        if not 1 <= max_entries <= MAX_BATCH_ENTRIES:
            raise ValueError(f"max_entries must be in 1..{MAX_BATCH_ENTRIES}")
        self.mc = mc
        self.max_entries = max_entries
        self._waiting: list[tuple[C.CommitFile, asyncio.Future[Any]]] = []
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.proposals = 0  # proposals made (for tests and benchmarks)

    async def write(self, cmd: C.CommitFile) -> Any:
        loop = asyncio.get_running_loop()
        if self._turn is None or self._loop is not loop:
            self._turn, self._loop = asyncio.Lock(), loop
        mine: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((cmd, mine))
        async with self._turn:  # one proposal of the group at a time
            if not mine.done():
                batch = self._waiting[: self.max_entries]
                del self._waiting[: self.max_entries]
                task = loop.create_task(self._propose(batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                await asyncio.shield(task)
        return await mine

    async def _propose(self, batch: list[tuple[C.CommitFile, asyncio.Future[Any]]]) -> None:
        self.proposals += 1
        try:
            if len(batch) == 1:
                results: Any = [await self.mc.write(batch[0][0])]
            else:
                results = await self.mc.write(C.CommitBatch([c for c, _ in batch]))
                if not isinstance(results, list):  # the batch failed as a whole
                    results = [results] * len(batch)
        except BaseException as e:  # every member gets the failure (and sees it)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (_, fut), r in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(r)
