"""A folder as a streamed zip: Dropbox's `files/download_zip`, and the page's GET of it.

`ZipRoutes(api).routes()` gives the content route `files/download_zip` (bearer token or a page's
session, like every `/2/` route; `Dropbox-API-Arg: {"path": P}`, answer `application/zip` with
`Dropbox-API-Result: {"metadata": <the folder>}`), and `GET /web/download_zip?arg={"path": P}`
serves the same to a signed-in page as an attachment `NAME.zip` (`raftbox.web.pages`).

The zip holds the folder under its own name: its subfolders (as directory entries, empty ones
too) and files, each at the revision the listing saw (a file changed meanwhile is sent as it
was). It is written while it is sent (stdlib `zipfile` on a write-only sink: data descriptors,
zip64 where needed, entries stored uncompressed — most large files are compressed already, and
deflate would cost the member CPU), so memory stays at a few blocks whatever the size.

Limits (checked on the listing, before the first byte): at most `ZIP_FILES_MAX` files
(`too_many_files`) and `ZIP_BYTES_MAX` bytes (`too_large`), Dropbox's own. A path that is not a
folder is `path/not_folder`, a missing one `path/not_found`. Once the answer has started, a block
that cannot be read aborts the connection (the client sees a truncated transfer, never a short
zip that looks whole).
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from typing import Any

from aiohttp import web

from raftbox.api import wire
from raftbox.api.args import READ_PATH, header_args, ns_path, path_arg
from raftbox.api.errors import ApiError, raise_meta

log = logging.getLogger(__name__)

ZIP_FILES_MAX = 10_000
ZIP_BYTES_MAX = 20 * 1024**3
ROOT_ZIP_NAME = "raftbox"


class _Sink(io.RawIOBase):
    """Write-only, not seekable: zipfile then writes data descriptors; `take()` drains it."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._buf += b
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def _date_time(ts: str) -> tuple[int, int, int, int, int, int]:
    try:
        t = time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError):
        return (1980, 1, 1, 0, 0, 0)
    if t.tm_year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (min(t.tm_year, 2107), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


class ZipRoutes:
    def __init__(self, api: Any) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("files/download_zip", "user", self.download_zip)]

    async def _listing(self, ns: int, path: str) -> tuple[Any, list[Any]]:
        meta = self.api.meta
        folder = None
        if path not in ("", "/"):
            folder = raise_meta(await meta.read(lambda s: s.get_metadata(ns, path, False)))
            if folder.kind != "folder":
                raise ApiError(["path", "not_folder"])
            path = folder.path_lower
        else:
            path = ""
        page = raise_meta(await meta.read(lambda s: s.list_folder(ns, path, True, False, 2000)))
        items = list(page.entries)
        while page.has_more:
            state = page.cursor_state
            page = raise_meta(
                await meta.read(lambda s, st=state: s.list_folder_continue(ns, st, 2000))
            )
            items.extend(page.entries)
            if sum(1 for m in items if m.kind == "file") > ZIP_FILES_MAX:
                raise ApiError(["too_many_files"])
        items = [m for m in items if m.path_lower != path]
        return folder, items

    async def download_zip(self, request: web.Request, who: Any) -> web.StreamResponse:
        a = header_args(request, "files/download_zip")
        path = ns_path(who, path_arg(a, "path", READ_PATH), ["path"])
        if path.startswith("rev:"):
            raise ApiError(["path", "not_folder"])
        ns = who.namespace_id
        folder, items = await self._listing(ns, path)
        files = [m for m in items if m.kind == "file"]
        if len(files) > ZIP_FILES_MAX:
            raise ApiError(["too_many_files"])
        if sum(m.size for m in files) > ZIP_BYTES_MAX:
            raise ApiError(["too_large"])
        name = folder.name if folder is not None else ROOT_ZIP_NAME
        base = folder.path_display if folder is not None else ""
        resp = web.StreamResponse()
        resp.content_type = "application/zip"
        result: dict = {"metadata": {"name": name, "path_lower": "", "path_display": "", "id": ""}}
        if folder is not None:
            result = {"metadata": wire.metadata_json(folder, tagged=False)}
        resp.headers["Dropbox-API-Result"] = wire.dumps(result).decode()
        await resp.prepare(request)
        sink = _Sink()
        try:
            with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.writestr(zipfile.ZipInfo(name + "/"), b"")
                for m in items:
                    rel = name + m.path_display[len(base) :]
                    if m.kind == "folder":
                        zf.writestr(zipfile.ZipInfo(rel + "/"), b"")
                        continue
                    info = zipfile.ZipInfo(rel, _date_time(m.client_modified))
                    await self._write_file(zf, info, ns, m, resp, sink)
                    await resp.write(sink.take())
            await resp.write(sink.take())
        except ConnectionError as e:
            log.info("files/download_zip: the client went away: %s", e)
            return resp
        except Exception:
            # Too late for an error answer: cut the transfer so it cannot look complete.
            log.exception("files/download_zip of %s failed after the answer started", base)
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write_eof()
        return resp

    async def _write_file(
        self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, ns: int, m: Any, resp: Any, sink: _Sink
    ) -> None:
        r = await self.api.mc.query("file_blocks", ns, "rev:" + m.rev)
        _meta, blocks = raise_meta(r)
        with zf.open(info, "w", force_zip64=m.size >= 2**31) as w:
            if m.size:
                async for chunk in self.api.blocks.read_range(blocks, 0, m.size):
                    w.write(chunk)
                    await resp.write(sink.take())
