"""The native block protocol (`raftbox.blocks.native`) against real processes — `raftbox up` and
the 3-member cluster — and `raftbox admin gc` from the command line."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
from pathlib import Path

from raftbox.blocks import CDC
from raftbox.blocks.chunker import chunk_bytes
from raftbox.blocks.native import NativeClient, NativeError

from . import procs
from .sdk import Account, Target
from .util import MiB, data


def _client(t: Target, acct: Account) -> NativeClient:
    ctx = ssl.create_default_context(cafile=t.ca)
    return NativeClient(f"https://{t.hostports[t.default_member]}", acct.token, ssl_context=ctx)


def test_native_round_trip_and_no_leak(target: Target, tmp_path) -> None:
    a, b = target.new_account("native-a"), target.new_account("native-b")
    src = tmp_path / "f.bin"
    body = data(5 * MiB + 11, seed=3)
    src.write_bytes(body)

    async def main():
        async with _client(target, a) as na, _client(target, b) as nb:
            meta = await na.upload(str(src), "/n/f.bin")
            assert meta["size"] == len(body)
            out = tmp_path / "out.bin"
            await na.download("/n/f.bin", str(out))
            assert out.read_bytes() == body
            ids = [c.id for c in chunk_bytes(body, CDC)]
            assert await nb.has(ids) == set()
            try:
                async for _ in nb.get(ids[:1]):
                    raise AssertionError("B read A's block")
            except NativeError as e:
                assert e.status == 409 and "not_found" in json.dumps(e.body)
            # B sends the bytes itself: stored once, and now B may use them
            await nb.upload(str(src), "/mine.bin")
            assert await nb.has(ids) == set(ids)

    asyncio.run(main())
    assert a.dbx().files_get_metadata("/n/f.bin").size == len(body)


def blocks_on_disk(root: Path) -> int:
    """The block files of a file:// store, counted from its layout (ab/cd/abcd...)."""
    name = re.compile(r"[0-9a-f]{64}")
    return sum(
        1
        for f in root.glob("??/??/*")
        if name.fullmatch(f.name) and f.name[:2] == f.parent.parent.name and f.is_file()
    )


def test_admin_gc_from_the_command_line(
    up: procs.UpServer, up_target: Target, cluster: procs.ApiCluster
) -> None:
    before = blocks_on_disk(up.data / "blocks")
    up_target.new_account("gc").dbx().files_upload(data(2 * MiB, seed=12), "/gc/f.bin")
    on_disk = blocks_on_disk(up.data / "blocks")
    assert on_disk > before
    r = subprocess.run(
        [procs.RAFTBOX, "admin", "gc", "--data", str(up.data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["listed"] == on_disk  # it saw every block in the store
    assert report["deleted"] == 0  # nothing is past its grace period
    live = next(i for i in cluster.members if cluster.proc(i).alive)
    r = subprocess.run(
        [procs.RAFTBOX, "admin", "gc", "--server", f"https://{cluster.members[live].hostport}",
         "--admin-token", cluster.admin_token, "--ca", cluster.ca],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["listed"] == blocks_on_disk(Path(cluster.blocks.removeprefix("file://")))
    assert report["deleted"] == 0
