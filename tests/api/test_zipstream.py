"""`raftbox.api.zipstream` in process, on a real MetaStore: the zip holds exactly the listed
files as they were listed, under the folder's name; empty folders appear; the bounds refuse
before a byte is sent; the content goes out block by block."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile

import pytest

from meta.helpers import Driver
from raftbox.api import zipstream
from raftbox.meta.commands import CreateFolder, MetaError


class Meta:
    """What zipstream needs of a MetaService: `read(fn)` on the store."""

    def __init__(self, store) -> None:
        self.store = store

    async def read(self, fn, stale: bool = False):
        return fn(self.store)


class Blocks:
    """A block store of the bytes the driver committed (one block per file)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.max_chunk = 0

    def put(self, data: bytes) -> None:
        self.data[hashlib.sha256(data).hexdigest()] = data

    async def read_range(self, blocks, start, end):
        for b in blocks:
            chunk = self.data[b.id]
            self.max_chunk = max(self.max_chunk, len(chunk))
            yield chunk


class Resp:
    prepared = True

    def __init__(self) -> None:
        self.out = bytearray()
        self.writes = 0
        self.eof = False

    async def write(self, b: bytes) -> None:
        self.out += b
        self.writes += 1

    async def write_eof(self) -> None:
        self.eof = True


class Req:
    transport = None


def tree() -> tuple[Driver, int, Blocks]:
    d = Driver()
    ns = d.setup()
    blocks = Blocks()
    for path, data in {
        "/P/a.txt": b"alpha",
        "/P/sub/b.bin": bytes(range(256)) * 10,
        "/P/sub/deeper/c": b"",
        "/Other/x": b"not in the zip",
    }.items():
        blocks.put(data)
        d.put(ns, path, data)
    d.apply(CreateFolder(ns, "/P/empty"))
    return d, ns, blocks


def run(coro):
    return asyncio.run(coro)


def test_the_zip_holds_the_folder_as_listed():
    d, ns, blocks = tree()
    meta = Meta(d.store)
    plan = run(zipstream.plan_zip(meta, ns, "/P"))
    d.put(ns, "/P/a.txt", b"changed after the listing")  # the zip keeps the listed rev
    blocks.put(b"changed after the listing")
    resp = Resp()
    run(zipstream.stream_zip(Req(), resp, plan, blocks, meta))
    assert resp.eof and resp.writes > 3
    zf = zipfile.ZipFile(io.BytesIO(bytes(resp.out)))
    assert zf.testzip() is None
    files = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    assert files == {
        "P/a.txt": b"alpha",
        "P/sub/b.bin": bytes(range(256)) * 10,
        "P/sub/deeper/c": b"",
    }
    assert "P/empty/" in zf.namelist()
    assert plan.total_bytes == 5 + 2560


def test_bounds_refuse_before_anything_is_sent():
    d, ns, _ = tree()
    meta = Meta(d.store)
    with pytest.raises(zipstream.ZipRefused) as e:
        run(zipstream.plan_zip(meta, ns, "/P", max_entries=3))
    assert e.value.tag == "too_many_files"
    with pytest.raises(zipstream.ZipRefused) as e:
        run(zipstream.plan_zip(meta, ns, "/P", max_bytes=100))
    assert e.value.tag == "too_large"


def test_lookup_errors():
    d, ns, _ = tree()
    meta = Meta(d.store)
    r = run(zipstream.plan_zip(meta, ns, "/P/a.txt"))
    assert isinstance(r, MetaError) and r.tags == ["path", "not_folder"]
    r = run(zipstream.plan_zip(meta, ns, "/nope"))
    assert isinstance(r, MetaError) and r.tags == ["path", "not_found"]


def test_many_entries_page_through_the_listing():
    d = Driver()
    ns = d.setup()
    blocks = Blocks()
    blocks.put(b"x")
    for i in range(2100):  # more than one listing page
        d.put(ns, f"/Big/f{i:04d}", b"x")
    plan = run(zipstream.plan_zip(Meta(d.store), ns, "/Big"))
    assert len(plan.entries) == 2100
    resp = Resp()
    run(zipstream.stream_zip(Req(), resp, plan, blocks, Meta(d.store)))
    assert len(zipfile.ZipFile(io.BytesIO(bytes(resp.out))).namelist()) == 2100
