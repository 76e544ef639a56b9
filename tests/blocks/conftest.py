"""Fixtures for the block tests.

`harness` runs the one conformance suite against every store: the memory, local-directory and
S3 backends (S3 is moto's standalone server, started once per session on a free port) and the
full wrapped stack `build_store` assembles over a local directory. A `Harness` reaches under
its store to count real writes and to damage stored bytes, independently of the store's code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest
from prometheus_client import CollectorRegistry

from raftbox.blocks import LocalStore, LRUCache, MemoryStore, build_store
from raftbox.blocks.s3 import S3Store

from .helpers import run
from .procs import Memcached, MotoServer

CREDS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memcached() -> Iterator[Memcached]:
    mc = Memcached().start()
    try:
        yield mc
    finally:
        mc.kill()


def new_bucket(moto: MotoServer) -> str:
    name = "rb-" + uuid.uuid4().hex[:16]
    s3_client(moto).create_bucket(Bucket=name)
    return name


def s3_client(moto: MotoServer):
    return boto3.client(
        "s3",
        endpoint_url=moto.endpoint,
        aws_access_key_id=CREDS["access_key_id"],
        aws_secret_access_key=CREDS["secret_access_key"],
        region_name=CREDS["region"],
    )


@dataclass
class Harness:
    name: str
    store: object
    writes: Callable[[], int]  # blocks actually written to the bottom backend so far
    stored: Callable[[str], bytes]  # the stored bytes of a block, read around the store
    replace: Callable[[str, bytes], None]  # overwrite the stored bytes, around the store
    exclusive_create: bool = True  # concurrent puts of one id: exactly one reports True

    def corrupt(self, block_id: str) -> None:
        b = bytearray(self.stored(block_id))
        b[len(b) // 2] ^= 0x01
        self.replace(block_id, bytes(b))


def memory_harness() -> Harness:
    m = MemoryStore()

    def replace(i: str, b: bytes) -> None:
        m.blocks[i] = b

    return Harness("memory", m, lambda: m.writes, lambda i: m.blocks[i], replace)


def local_files(root: str, monkeypatch: pytest.MonkeyPatch, name: str, store) -> Harness:
    """Counts the hard links / renames that publish a block file under `root`."""
    import raftbox.blocks.store as store_mod

    count = [0]
    real_link, real_replace = os.link, os.replace

    def link(src, dst, *a, **kw):
        real_link(src, dst, *a, **kw)
        if str(dst).startswith(root):
            count[0] += 1

    def replace(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        if str(dst).startswith(root):
            count[0] += 1

    monkeypatch.setattr(store_mod.os, "link", link)
    monkeypatch.setattr(store_mod.os, "replace", replace)
    probe = LocalStore(root)

    def read(i: str) -> bytes:
        with open(probe.path_of(i), "rb") as f:
            return f.read()

    def write(i: str, b: bytes) -> None:
        with open(probe.path_of(i), "wb") as f:
            f.write(b)

    return Harness(name, store, lambda: count[0], read, write)


def s3_harness(moto: MotoServer) -> Harness:
    bucket = new_bucket(moto)
    store = S3Store(bucket, "blocks", endpoint_url=moto.endpoint, addressing_style="path", **CREDS)
    writes = [0]

    def after_put(http_response=None, **_kw):
        if http_response is not None and http_response.status_code == 200:
            writes[0] += 1

    store.client.meta.events.register("after-call.s3.PutObject", after_put)
    raw = s3_client(moto)

    def read(i: str) -> bytes:
        return raw.get_object(Bucket=bucket, Key=store.key_of(i))["Body"].read()

    def write(i: str, b: bytes) -> None:
        raw.put_object(Bucket=bucket, Key=store.key_of(i), Body=b)

    # moto checks If-None-Match without a lock, so two racing PUTs can both succeed there
    # (AWS, MinIO and RGW serialise them); the suite then only asks for one stored copy.
    return Harness("s3", store, lambda: writes[0], read, write, exclusive_create=False)


STORES = ["memory", "local", "s3", "stack"]


@pytest.fixture(params=STORES)
def harness(request, tmp_path, monkeypatch) -> Iterator[Harness]:
    kind = request.param
    if kind == "memory":
        h = memory_harness()
    elif kind == "local":
        root = str(tmp_path / "blocks")
        h = local_files(root, monkeypatch, "local", LocalStore(root))
    elif kind == "s3":
        h = s3_harness(request.getfixturevalue("moto"))
    else:
        root = str(tmp_path / "blocks")
        stack = build_store(
            "file://" + root,
            compress_level=3,
            retries=2,
            max_concurrency=4,
            cache=LRUCache(1000),
            metrics_registry=CollectorRegistry(),
        )
        h = local_files(root, monkeypatch, "stack", stack)
    yield h
    run(h.store.aclose)
