"""S3Store beyond the conformance suite: URL settings, the AWS credential chain, key layout,
HEAD-before-PUT, and which failures count as transient."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

from raftbox.blocks import (
    BlockNotFound,
    BlockStoreError,
    RetryingStore,
    TransientStoreError,
    open_store,
)
from raftbox.blocks.s3 import S3Store, classify

from .conftest import CREDS, new_bucket, s3_client
from .helpers import bid, rand_bytes, run
from .procs import free_port

DATA = rand_bytes(50_000, seed=1)


def test_url_settings(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    s = open_store(
        "s3://bkt/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1"
        "&addressing=path&workers=3&conditional=0"
    )
    assert isinstance(s, S3Store)
    assert (s.bucket, s.prefix, s.conditional_put) == ("bkt", "some/prefix/", False)
    assert s.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert s.client.meta.region_name == "eu-west-1"
    assert s.client.meta.config.s3["addressing_style"] == "path"
    assert s.key_of(bid(b"x")) == f"some/prefix/{bid(b'x')[:2]}/{bid(b'x')}"
    assert open_store("s3://bkt").prefix == ""
    for bad in ("s3://", "s3://b?secret=x", "s3://b?addressing=sideways", "s3://b?workers=0"):
        with pytest.raises(ValueError):
            open_store(bad)


def test_credentials_come_from_the_standard_aws_chain(moto, monkeypatch, tmp_path):
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDS["access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDS["secret_access_key"])
    bucket = new_bucket(moto)
    s = open_store(f"s3://{bucket}/p?endpoint={moto.endpoint}&region=us-east-1&addressing=path")

    async def go():
        assert await s.put(bid(DATA), DATA) is True
        assert await s.get(bid(DATA)) == DATA
        await s.aclose()

    run(go)
    keys = [o["Key"] for o in s3_client(moto).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"p/{bid(DATA)[:2]}/{bid(DATA)}"]  # fanned out by the id's first byte


def test_an_existing_block_costs_a_head_and_no_upload(moto):
    s = S3Store(new_bucket(moto), endpoint_url=moto.endpoint, **CREDS)
    calls: list[str] = []
    s.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))

    async def go():
        await s.put(bid(DATA), DATA)
        assert calls == ["HeadObject", "PutObject"]
        calls.clear()
        assert await s.put(bid(DATA), DATA) is False
        assert calls == ["HeadObject"]
        await s.aclose()

    run(go)


def test_a_foreign_object_in_the_prefix_is_not_listed(moto):
    bucket = new_bucket(moto)
    s = S3Store(bucket, "blocks", endpoint_url=moto.endpoint, **CREDS)
    raw = s3_client(moto)
    raw.put_object(Bucket=bucket, Key="blocks/README", Body=b"hi")
    raw.put_object(Bucket=bucket, Key=f"blocks/zz/{bid(b'x')}", Body=b"x")  # wrong fan-out

    async def go():
        await s.put(bid(DATA), DATA)
        assert [i async for i in s.list()] == [bid(DATA)]
        await s.aclose()

    run(go)


def test_a_missing_bucket_is_a_permanent_error(moto):
    s = S3Store("no-such-bucket-here", endpoint_url=moto.endpoint, **CREDS)

    async def go():
        with pytest.raises(BlockStoreError) as e:
            await s.put(bid(DATA), DATA)
        assert not isinstance(e.value, TransientStoreError | BlockNotFound)
        await s.aclose()

    run(go)


def test_an_unreachable_endpoint_is_transient_and_retried_a_bounded_number_of_times():
    dead = S3Store(
        "b", endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5, **CREDS
    )
    sleeps: list[float] = []

    async def no_sleep(s: float) -> None:
        sleeps.append(s)

    s = RetryingStore(dead, attempts=3, sleep=no_sleep)
    t0 = time.monotonic()
    with pytest.raises(TransientStoreError):
        run(lambda: s.has(bid(DATA)))
    assert len(sleeps) == 2 and time.monotonic() - t0 < 10
    run(dead.aclose)


def client_error(status: int, code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    "error, kind",
    [
        (client_error(404, "NoSuchKey"), BlockNotFound),
        (client_error(404, "404"), BlockNotFound),
        (client_error(503, "SlowDown"), TransientStoreError),
        (client_error(500, "InternalError"), TransientStoreError),
        (client_error(400, "RequestTimeout"), TransientStoreError),
        (client_error(409, "ConditionalRequestConflict"), TransientStoreError),
        (client_error(403, "AccessDenied"), BlockStoreError),
        (client_error(404, "NoSuchBucket"), BlockStoreError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), TransientStoreError),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), TransientStoreError),
        (botocore.exceptions.NoCredentialsError(), BlockStoreError),
    ],
)
def test_boto_errors_map_to_the_store_hierarchy(error, kind):
    mapped = classify(error, "op")
    assert type(mapped) is kind
