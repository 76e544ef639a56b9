"""Issue 16: an edit inside a big file sends no more than rsync would.

A 100-byte insertion in the middle of a synced 64 MiB file changes the one or two ~1 MiB CDC
blocks it lands in; the sync client sends them as deltas against the blocks they replace
(`raftbox.blocks.delta`), so the pass sends fewer bytes than `rsync --no-whole-file` did for
the same edit (32,975 bytes, measured by `benchmarks/delta_bench.py`). Bytes are the client's
own count of request bodies (`Summary.bytes_sent`), never time.
"""

from __future__ import annotations

import asyncio
import random

from raftbox.client.engine import Options, SyncEngine
from raftbox.client.executor import Executor
from raftbox.client.remote import Remote

from .test_sync import pair, run_sync, tree  # noqa: F401 (pair is a fixture)

MiB = 1024 * 1024
RSYNC_SENT_BYTES = 32_975  # rsync --no-whole-file, the same edit (README, benchmarks)


def _insert(path, at: int, data: bytes) -> None:
    body = path.read_bytes()
    path.write_bytes(body[:at] + data + body[at:])


def test_a_100_byte_insertion_into_64_mib_sends_less_than_rsync(pair) -> None:  # noqa: F811
    a, b, cfg = pair
    r = random.Random(16)
    (a / "big.bin").write_bytes(r.randbytes(64 * MiB))
    assert run_sync(a, cfg).ok
    _insert(a / "big.bin", 32 * MiB + 12_345, r.randbytes(100))
    s = run_sync(a, cfg)
    assert s.ok and s.counters.uploaded_files == 1
    assert s.bytes_sent < RSYNC_SENT_BYTES, s.bytes_sent
    s = run_sync(b, cfg)  # the server rebuilt the right bytes
    assert s.ok and (b / "big.bin").read_bytes() == (a / "big.bin").read_bytes()


def test_a_server_without_deltas_gets_whole_blocks(pair, monkeypatch) -> None:  # noqa: F811
    a, b, cfg = pair
    r = random.Random(17)
    (a / "big.bin").write_bytes(r.randbytes(8 * MiB))
    assert run_sync(a, cfg).ok

    async def no_route(self, ids):  # what an older server answers: 404, no signatures
        self.deltas = False
        return {}

    monkeypatch.setattr(Remote, "signatures", no_route)
    _insert(a / "big.bin", 4 * MiB, r.randbytes(100))
    s = run_sync(a, cfg)
    assert s.ok and s.bytes_sent > 256 * 1024  # at least one whole block
    assert run_sync(b, cfg).ok
    assert tree(a) == tree(b)


def test_a_file_changed_after_the_scan_is_cut_again_and_still_sent_as_deltas(pair) -> None:  # noqa: F811
    """The scan's blocklist no longer matches (the file changed between plan and upload): the
    upload cuts the file again while sending (`_upload_big_recut`), with deltas too."""
    a, b, cfg = pair
    r = random.Random(18)
    (a / "big.bin").write_bytes(r.randbytes(16 * MiB))
    assert run_sync(a, cfg).ok
    _insert(a / "big.bin", 3 * MiB, r.randbytes(100))

    async def go():
        async with SyncEngine(a, cfg, Options()) as e:
            p, scan = await e.plan_pass()
            _insert(a / "big.bin", 11 * MiB, r.randbytes(100))  # after the scan
            ex = Executor(e.root, e.index, e.remote, host="h", today="2026-01-02",
                          chunking=e.chunking, blocklists=scan.blocklists)  # fmt: skip
            sent0 = e.remote.bytes_sent
            await ex.run(p.ops)
            return ex.c, e.remote.bytes_sent - sent0, e.remote.delta_blocks

    c, sent, deltas = asyncio.run(go())
    assert c.uploaded_files == 1 and deltas >= 2, (c, deltas)
    assert sent < RSYNC_SENT_BYTES, sent
    s = run_sync(b, cfg)
    assert s.ok and (b / "big.bin").read_bytes() == (a / "big.bin").read_bytes()
