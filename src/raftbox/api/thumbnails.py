"""The thumbnail routes: `files/get_thumbnail` (v1), `files/get_thumbnail_v2` and
`files/get_thumbnail_batch` — content-host routes, served by blockservers too (through a
`MetaClient`, like `content.py`).

Contract (the SDK's types, `dropbox.files`):

- Arguments: `ThumbnailArg` (v1 and each batch entry: `path`, `format` jpeg|png|webp, default
  jpeg, `size` default `w64h64`, `mode` strict|bestfit|fitone_bestfit|original, default strict)
  and `ThumbnailV2Arg` (`resource` instead of `path`, and `preserve_transparency`). A value
  outside those is a 400 before anything is read.
- v1 and v2 are download-style: the thumbnail is the body, the metadata in `Dropbox-API-Result`
  (v1: `FileMetadata`; v2: `PreviewResult` with `file_metadata`). The batch is rpc-style, each
  entry's thumbnail base64 in `GetThumbnailBatchResultData`, each entry failing on its own; at
  most `BATCH_MAX_ENTRIES` (25, as Dropbox) entries, else `too_many_files`.
- Errors: `path` (a `LookupError`: not_found, not_file, malformed_path), then the image's
  (`raftbox.api.imaging`): `unsupported_extension`, `unsupported_image` (including a source over
  20 MB or a picture over the pixel cap), `conversion_error` (also a decode that missed its
  deadline). v2: `preserve_transparency` with JPEG output is `unsupported_output_format`; a
  `link` resource is `not_found` (raftbox has no shared links: a link cannot exist).
- Paths resolve through `raftbox.api.spaces`: a file in a mounted shared folder (a viewer's
  too: a read) has its thumbnail, its metadata in the caller's tree with `sharing_info`; an
  `id:`/`ns:`/`rev:` of a folder the caller is not a member of is `not_found`, as one that
  does not exist.

Work and bounds (`Renderer`):

- the source's size is checked in the metadata before a byte of it is read;
- decoding runs off the event loop in a thread pool of `workers_max` threads; a request waits
  at most `deadline_s` for a worker and its decode, then answers `conversion_error`. Pillow
  cannot be interrupted, so a decode past its deadline keeps its worker until it ends (bounded
  by the byte and pixel caps): runaway decodes never pile up beyond `workers_max`;
- finished thumbnails are cached in memory by (content_hash, size, format, mode, transparency),
  least recently used first out, at most `cache_max_bytes` in all: the same photo in a gallery
  grid costs one decode, whatever its path or revision.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from raftbox.blocks.errors import BlockStoreError
from raftbox.blocks.service import BlockService

from . import imaging, spaces, wire
from .args import READ_PATH, Args, header_args, path_arg, rpc_args
from .errors import ApiError, BadInput, Unavailable, raise_meta
from .metaclient import MetaClient
from .wire import json_response

log = logging.getLogger(__name__)

BATCH_MAX_ENTRIES = 25


class ThumbnailCache:
    """Thumbnails by key, least recently used out first, at most `max_bytes` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, key: tuple) -> bytes | None:
        v = self._items.get(key)
        if v is not None:
            self._items.move_to_end(key)
        return v

    def put(self, key: tuple, value: bytes) -> None:
        if len(value) > self.max_bytes or key in self._items:
            return
        self._items[key] = value
        self.bytes += len(value)
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old)

    def __len__(self) -> int:
        return len(self._items)


class Renderer:
    """Runs `render` (default `imaging.render`) off the event loop: bounded workers, a
    deadline per request, a cache (module docstring)."""

    def __init__(
        self,
        workers_max: int = 2,
        deadline_s: float = 10.0,
        cache_max_bytes: int = 32 * 1024 * 1024,
        pixels_max: int = imaging.PIXELS_MAX,
        render: Callable[..., bytes] = imaging.render,
    ) -> None:
        self.deadline_s = deadline_s
        self.pixels_max = pixels_max
        self.cache = ThumbnailCache(cache_max_bytes)
        self.renders = 0  # decodes started (a metric; tests read it)
        self._render = render
        self._pool = concurrent.futures.ThreadPoolExecutor(workers_max, "thumbnail")
        self._slots = asyncio.Semaphore(workers_max)

    async def thumbnail(
        self, key: tuple, name: str, read: Callable[[], Any], spec: imaging.Spec
    ) -> bytes:
        """The thumbnail of the file `name`; `read()` is awaited for its bytes only on a cache
        miss. `key` names its content (its content_hash)."""
        full = (*key, spec.size, spec.format, spec.mode, spec.keep_alpha)
        hit = self.cache.get(full)
        if hit is not None:
            return hit
        imaging.check_extension(name)  # before reading anything
        data = await read()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.deadline_s):
                await self._slots.acquire()
        except TimeoutError:
            raise imaging.ThumbnailFailure("conversion_error", "no worker in time") from None
        self.renders += 1
        try:
            job = self._pool.submit(self._render, data, name, spec, self.pixels_max)
        except BaseException:
            self._slots.release()
            raise
        job.add_done_callback(lambda _: _release_from_thread(loop, self._slots))
        try:
            async with asyncio.timeout(self.deadline_s):
                out = await asyncio.shield(asyncio.wrap_future(job))
        except TimeoutError:
            log.warning("thumbnail of %s: the decode missed its %.1f s deadline", name,
                        self.deadline_s)  # fmt: skip
            raise imaging.ThumbnailFailure("conversion_error", "decode deadline") from None
        self.cache.put(full, out)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _release_from_thread(loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
    try:
        loop.call_soon_threadsafe(slots.release)
    except RuntimeError:  # the loop is closed: nobody waits for a slot any more
        pass


def thumbnail_spec(a: Args, v2: bool = False) -> imaging.Spec:
    """The format, size and mode of a `ThumbnailArg` / `ThumbnailV2Arg` (400 if unknown)."""
    fmt, _ = a.tag("format", "jpeg")
    size, _ = a.tag("size", "w64h64")
    mode, _ = a.tag("mode", "strict")
    for name, value, allowed in (
        ("format", fmt, imaging.FORMATS),
        ("size", size, imaging.SIZES),
        ("mode", mode, imaging.MODES),
    ):
        if value not in allowed:
            raise BadInput(a.route, f"{name}: unknown tag '{str(value)[:100]}'")
    if a.obj.get("exclude_media_info") is not None:
        a.bool("exclude_media_info")
    keep_alpha = a.bool("preserve_transparency") if v2 else False
    return imaging.Spec(size, fmt, mode, keep_alpha)


class ThumbnailRoutes:
    def __init__(self, mc: MetaClient, blocks: BlockService, renderer: Renderer | None = None):
        self.mc = mc
        self.blocks = blocks
        self.renderer = renderer or Renderer()

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("files/get_thumbnail", "user", self.get_thumbnail),
            ("files/get_thumbnail_v2", "user", self.get_thumbnail_v2),
            ("files/get_thumbnail_batch", "user", self.get_thumbnail_batch),
        ]

    async def _thumbnail(self, who: Any, path: str, spec: imaging.Spec) -> tuple[dict, bytes]:
        """(the file's metadata JSON in `who`'s tree, thumbnail) of `path` (in a mounted
        shared folder too: `spaces`), or `ThumbnailFailure` / `ApiError(path/...)`."""
        t = await spaces.resolve(self.mc, who, path, ["path"])
        meta, blocks = raise_meta(await self.mc.query("file_blocks", t.ns, t.path))
        if meta.size > imaging.SOURCE_MAX_BYTES:
            imaging.check_extension(meta.name)
            raise imaging.ThumbnailFailure("unsupported_image", "over 20 MB")

        async def read() -> bytes:
            try:
                return b"".join([c async for c in self.blocks.read_range(blocks, 0, meta.size)])
            except BlockStoreError as e:
                log.error("thumbnail of %s (%s): cannot read a block: %r", meta.path_display,
                          meta.id, e)  # fmt: skip
                raise Unavailable("a block of this file cannot be read on this server") from None

        out = await self.renderer.thumbnail((meta.content_hash,), meta.name, read, spec)
        return t.json(who, meta, tagged=False), out

    @staticmethod
    def _answer(result: dict, body: bytes) -> web.Response:
        resp = web.Response(body=body, content_type="application/octet-stream")
        resp.headers["Dropbox-API-Result"] = wire.dumps(result).decode()
        return resp

    async def get_thumbnail(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/get_thumbnail")
        path = path_arg(a, "path", READ_PATH)
        spec = thumbnail_spec(a)
        try:
            meta, out = await self._thumbnail(who, path, spec)
        except imaging.ThumbnailFailure as e:
            raise ApiError([e.tag]) from None
        return self._answer(meta, out)

    async def get_thumbnail_v2(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/get_thumbnail_v2")
        tag, value = a.tag("resource", "")
        if tag == "link":
            raise ApiError(["not_found"])  # no shared links here: none can exist
        if tag != "path":
            raise BadInput(a.route, f"resource: unknown tag '{str(tag)[:100]}'")
        path = value if isinstance(value, str) else None
        if path is None or not READ_PATH.match(path):
            raise BadInput(a.route, "resource.path: expected a path")
        spec = thumbnail_spec(a, v2=True)
        if spec.keep_alpha and spec.format == "jpeg":
            raise ApiError(["unsupported_output_format"])
        try:
            meta, out = await self._thumbnail(who, path, spec)
        except imaging.ThumbnailFailure as e:
            raise ApiError([e.tag]) from None
        return self._answer({"file_metadata": meta}, out)

    async def get_thumbnail_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/get_thumbnail_batch")
        entries = a.obj.get("entries")
        if not isinstance(entries, list):
            raise BadInput(a.route, "entries: expected a list")
        if len(entries) > BATCH_MAX_ENTRIES:
            raise ApiError(["too_many_files"])
        parsed = []
        for e in entries:
            ea = Args(a.route, e)
            parsed.append((path_arg(ea, "path", READ_PATH), thumbnail_spec(ea)))
        out = []
        for path, spec in parsed:
            try:
                meta, thumb = await self._thumbnail(who, path, spec)
            except imaging.ThumbnailFailure as e:
                out.append({".tag": "failure", "failure": {".tag": e.tag}})
                continue
            except ApiError as e:
                if e.tags[:1] != ["path"]:
                    raise
                out.append({".tag": "failure", "failure": e.error()})
                continue
            out.append(
                {
                    ".tag": "success",
                    "metadata": meta,
                    "thumbnail": base64.b64encode(thumb).decode("ascii"),
                }
            )
        return json_response({"entries": out})


__all__ = ["BATCH_MAX_ENTRIES", "Renderer", "ThumbnailCache", "ThumbnailRoutes"]
