"""`S3Store`: blocks as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW).

Layout: one object per block at `PREFIX/ab/<id>` (the id's first two hex digits fan keys out
across S3's partitions and keep listings of one fan-out folder short). The object body is the
stored form from `codec` — the raw block, or one zstd frame of it.

- `put`: HEAD first, so a block the store already has costs neither a write nor its upload
  bandwidth; then PUT with `If-None-Match: *` (conditional write: AWS since 2024, MinIO, recent
  Ceph RGW), so of two racing writers of one id exactly one writes. A backend that answers 501
  to the condition is remembered and written to unconditionally: content-addressed objects make
  a racing overwrite harmless. The body carries Content-MD5 so the server rejects bytes damaged
  in transit.
- `get` reads the object and re-verifies it against its id (after decompressing); a mismatch
  raises `CorruptBlock` and the bytes are never returned.
- boto3 is blocking: every call runs in this store's own bounded thread pool (`workers`), and
  the HTTP connection pool is sized to match. botocore's own retries are off: retries belong to
  `RetryingStore`, which retries exactly the errors mapped here to `TransientStoreError`
  (connection failures, timeouts, 5xx, throttling, 409 conditional-write conflicts).

URL (for `open_store`): `s3://BUCKET[/PREFIX]?endpoint=URL&region=NAME&addressing=path|virtual|auto
&profile=NAME&workers=N&conditional=1|0`. Credentials are never put in the URL: pass them to the
constructor or let boto3 find them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or
`profile=`, ~/.aws/credentials, instance or task roles).

- AWS S3: `s3://my-bucket/raftbox?region=eu-west-1`
- MinIO: `s3://raftbox/blocks?endpoint=http://minio.local:9000&region=us-east-1&addressing=path`
- Ceph RGW: `s3://raftbox?endpoint=https://rgw.local&addressing=path` (add `conditional=0` on
  RGW releases that reject If-None-Match with something other than 501)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.config
import botocore.exceptions

from . import codec
from .errors import (
    MAX_BLOCK_BYTES,
    BlockNotFound,
    BlockStoreError,
    CorruptBlock,
    TransientStoreError,
    check_id,
    is_block_id,
)

log = logging.getLogger("raftbox.blocks")
T = TypeVar("T")

_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


def _status(e: botocore.exceptions.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def classify(e: Exception, what: str) -> Exception:
    """Map a boto error to the store's error hierarchy (who is at fault, does retry help)."""
    if isinstance(e, botocore.exceptions.ClientError):
        code, status = _code(e), _status(e)
        if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            return BlockNotFound(what)
        if code in _TRANSIENT_CODES or status >= 500 or status in (409, 429):
            return TransientStoreError(f"{what}: S3 {status} {code}")
        return BlockStoreError(f"{what}: S3 {status} {code}: {e}")
    if isinstance(
        e,
        botocore.exceptions.ConnectionError  # includes EndpointConnectionError, timeouts
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError
        | ConnectionError
        | TimeoutError,
    ):
        return TransientStoreError(f"{what}: {type(e).__name__}: {e}")
    if isinstance(e, botocore.exceptions.BotoCoreError):
        return BlockStoreError(f"{what}: {type(e).__name__}: {e}")
    return e


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
        workers: int = 8,
        conditional_put: bool = True,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
    ) -> None:
        if not bucket:
            raise ValueError("S3Store needs a bucket")
        if addressing_style not in ("auto", "path", "virtual"):
            raise ValueError(f"addressing must be auto, path or virtual, not {addressing_style!r}")
        if not 1 <= workers <= 256:
            raise ValueError(f"workers must be in 1..256, got {workers}")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.conditional_put = conditional_put
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            profile_name=profile,
            region_name=region,
        )
        config = botocore.config.Config(
            s3={"addressing_style": addressing_style},
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=workers,
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # Checksums that every S3-compatible server understands (Content-MD5 below);
            # the newer default trailing CRC32 trips some MinIO/RGW releases.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3store")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> S3Store:
        u = urlsplit(url)
        if u.scheme != "s3" or not u.netloc:
            raise ValueError(f"not an s3://BUCKET[/PREFIX] URL: {url!r}")
        q = {k: v[-1] for k, v in parse_qs(u.query, strict_parsing=False).items()}
        known = {"endpoint", "region", "addressing", "profile", "workers", "conditional"}
        unknown = set(q) - known
        if unknown:
            raise ValueError(f"unknown s3 URL parameters {sorted(unknown)} (know {sorted(known)})")
        kw: dict[str, Any] = {
            "endpoint_url": q.get("endpoint"),
            "region": q.get("region"),
            "profile": q.get("profile"),
            "addressing_style": q.get("addressing", "auto"),
            "workers": int(q.get("workers", "8")),
            "conditional_put": q.get("conditional", "1") not in ("0", "false", "no"),
        }
        kw.update(overrides)
        return cls(u.netloc, u.path, **kw)

    def key_of(self, block_id: str) -> str:
        check_id(block_id)
        return f"{self.prefix}{block_id[:2]}/{block_id}"

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except Exception as e:
            mapped = classify(e, what)
            if mapped is e:
                raise
            raise mapped from e

    # -- put -----------------------------------------------------------------------------

    async def put(self, block_id: str, data: bytes) -> bool:
        key = self.key_of(block_id)
        return await self._run(f"put {block_id}", self._put, block_id, key, data)

    def _put(self, block_id: str, key: str, data: bytes) -> bool:
        codec.check_put(block_id, data)
        if self._exists(key):
            return False
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data, "ContentMD5": md5}
        if self.conditional_put:
            kw["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**kw)
        except botocore.exceptions.ClientError as e:
            if _status(e) == 412 or _code(e) == "PreconditionFailed":
                return False  # someone else wrote this id between our HEAD and PUT
            if self.conditional_put and _status(e) == 501:
                log.warning("S3 endpoint does not support If-None-Match; writing unconditionally")
                self.conditional_put = False
                return self._put(block_id, key, data)
            raise
        return True

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except botocore.exceptions.ClientError as e:
            if isinstance(classify(e, key), BlockNotFound):
                return False
            raise

    # -- get -----------------------------------------------------------------------------

    async def get(self, block_id: str) -> bytes:
        key = self.key_of(block_id)
        return await self._run(f"get {block_id}", self._get, block_id, key)

    def _get(self, block_id: str, key: str) -> bytes:
        r = self.client.get_object(Bucket=self.bucket, Key=key)
        body = r["Body"]
        try:
            if int(r.get("ContentLength", 0)) > MAX_BLOCK_BYTES:
                raise CorruptBlock(f"block {block_id} is corrupt (object larger than any block)")
            data = body.read()
        finally:
            body.close()
        try:
            return codec.decode(block_id, data)
        except CorruptBlock:
            log.error("corrupt block %s in s3://%s/%s: not served", block_id, self.bucket, key)
            raise

    # -- has / delete / stored_size / list ------------------------------------------------

    async def has(self, block_id: str) -> bool:
        key = self.key_of(block_id)
        return await self._run(f"has {block_id}", self._exists, key)

    async def delete(self, block_id: str) -> None:
        key = self.key_of(block_id)
        await self._run(
            f"delete {block_id}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key)
        )

    async def stored_size(self, block_id: str) -> int:
        key = self.key_of(block_id)
        r = await self._run(
            f"stored_size {block_id}",
            lambda: self.client.head_object(Bucket=self.bucket, Key=key),
        )
        return int(r["ContentLength"])

    async def list(self) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            page = await self._run("list", self._list_page, token)
            for obj in page.get("Contents", ()):
                key: str = obj["Key"]
                name = key[len(self.prefix) :]
                if len(name) == 67 and name[2] == "/" and is_block_id(name[3:]):
                    if name[:2] == name[3:5]:
                        yield name[3:]
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def _list_page(self, token: str | None) -> dict:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": 1000}
        if token:
            kw["ContinuationToken"] = token
        return self.client.list_objects_v2(**kw)

    async def sync(self) -> None:
        """Nothing to do: a PUT S3 answered is durable (`BlockStore.sync`)."""

    async def aclose(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
