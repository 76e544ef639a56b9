"""Issue 16: an edit inside a big file sends no more than rsync would.

A 100-byte insertion in the middle of a synced 64 MiB file changes the one or two ~1 MiB CDC
blocks it lands in; the sync client sends them as deltas against the blocks they replace
(`raftbox.blocks.delta`), so the pass sends fewer bytes than `rsync --no-whole-file` did for
the same edit (32,975 bytes, measured by `benchmarks/delta_bench.py`). Bytes are the client's
own count of request bodies (`Summary.bytes_sent`), never time.
"""

from __future__ import annotations

import random

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
