"""The executor owns the tasks it starts: an upload that fails half-way leaves nothing running.

`_upload_big_recut` sends the previous piece of a big file while it cuts the next one. When the
cut fails (a read error), the send in flight must be ended by the upload before the error leaves
it — it used to be left running, owned by nobody, its outcome never read.
"""

from __future__ import annotations

import asyncio

import pytest

from raftbox.client.executor import Executor
from raftbox.client.executor import uploads as U
from raftbox.client.planner import Upload
from raftbox.client.trees import Kind, Node


class StuckRemote:
    """A server that never answers `has`: a send stays in flight until cancelled."""

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.cancelled = 0

    async def native(self, fn, *args):
        return await fn(*args)

    async def has(self, ids):
        self.sending.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def put(self, items):
        raise AssertionError("never reached")


class FailingChunker(U.Chunker):
    """Cuts the first piece, then the disk fails."""

    calls = 0

    def feed(self, data):
        FailingChunker.calls += 1
        if FailingChunker.calls > 1:
            raise OSError(5, "Input/output error")
        return super().feed(data)


def test_a_failed_cut_ends_the_send_in_flight_before_the_error_leaves_the_upload(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(U, "STREAM_BYTES", 1)  # one 4 MiB read per piece
    monkeypatch.setattr(U, "Chunker", FailingChunker)
    FailingChunker.calls = 0
    (tmp_path / "big.bin").write_bytes(b"\x01" * (9 << 20))
    remote = StuckRemote()

    async def main() -> None:
        ex = Executor(str(tmp_path), None, remote, host="h", today="2026-01-01")  # type: ignore[arg-type]
        op = Upload("/big.bin", Node("/big.bin", Kind.FILE, content_hash="x"), None)
        with pytest.raises(OSError):
            async with asyncio.timeout(30):
                await ex._upload_big_recut(op)
        assert remote.sending.is_set() and remote.cancelled == 1
        leaked = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leaked, f"tasks left running: {leaked}"

    asyncio.run(main())
