"""A folder of a namespace as a zip, streamed: `files/download_zip`, a shared folder link's
`?dl=1`, and the web interface use it.

Contract
--------
`plan_zip(meta, ns, folder)` lists the folder (recursively, in pages, on linearizable reads)
and checks the bounds before a byte is sent: at most `ZIP_MAX_ENTRIES` files and folders and
`ZIP_MAX_BYTES` of file content, else `ZipRefused("too_many_files" | "too_large")` (Dropbox's
`DownloadZipError` members) — so a refusal is a clean 409, never a truncated zip. Only the
listing's metadata is held (bounded by the entry count), never file content.

`stream_zip(request, resp, plan, blocks, meta)` writes the zip to a prepared-or-not aiohttp
`StreamResponse`: every file of the listing as it was listed (read by its rev, so a file
changed while the zip streams does not tear it; a rev gone since is skipped and logged), each
empty folder as a directory entry, everything under one top folder named after the folder, as
Dropbox's zips are. Entries are stored (no compression: most of what people share is already
compressed, and the CPU is the cluster's) with data descriptors, in zip64 where a size needs it;
at most one block (a few MiB) is in memory at a time.

How: `zipfile.ZipFile` writes to `_Sink`, a file object that cannot seek (so zipfile emits data
descriptors instead of seeking back) and keeps what is written until `drain()` hands it to the
response. A failure after the status line (a block unreadable, the client gone) aborts the
connection, so the client sees a broken transfer, never a short zip that looks whole.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from raftbox.meta import commands as C

log = logging.getLogger(__name__)

ZIP_MAX_ENTRIES = 10_000  # Dropbox's download_zip limit
ZIP_MAX_BYTES = 20 * 1024**3  # Dropbox's: 20 GB
_PAGE_ENTRIES = 2000


class ZipRefused(Exception):
    """The folder cannot be zipped: `tag` is the `DownloadZipError` member."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


@dataclass(frozen=True)
class ZipPlan:
    ns: int
    folder: C.FolderMeta
    entries: list[C.FileMeta | C.FolderMeta]  # under the folder, in key order
    total_bytes: int


async def plan_zip(
    meta: Any,
    ns: int,
    folder: str,
    max_entries: int = ZIP_MAX_ENTRIES,
    max_bytes: int = ZIP_MAX_BYTES,
    root: C.FolderMeta | None = None,
    show: Callable[[Any], Any] | None = None,
) -> ZipPlan | C.MetaError:
    """List `folder` ("/…", "id:…") of `ns` for a zip (module docstring). Returns a lookup
    `MetaError` (path/not_found, path/not_folder) or raises `ZipRefused`. A namespace's whole
    tree (a shared folder's top, `folder` "") has no entry of its own: `root` is the folder it
    shows as (its mount point) and `show` puts each entry's paths below it."""
    if root is not None:
        m: Any = root
    else:
        m = await meta.read(lambda s: s.get_metadata(ns, folder))
        if isinstance(m, C.MetaError):
            return m
        if m.kind != "folder":
            return C.MetaError(["path", "not_folder"])
    listed = "" if root is not None else m.id
    entries: list[Any] = []
    total = 0
    page = await meta.read(lambda s: s.list_folder(ns, listed, True, False, _PAGE_ENTRIES))
    while True:
        if isinstance(page, C.MetaError):
            return page
        for e in page.entries:
            if show is not None:
                e = show(e)
            if e.path_lower == m.path_lower:
                continue  # the folder itself
            entries.append(e)
            if e.kind == "file":
                total += e.size
            if len(entries) > max_entries:
                raise ZipRefused("too_many_files")
            if total > max_bytes:
                raise ZipRefused("too_large")
        if page.resume is None:  # the listing is complete (what follows is the journal)
            break
        state = page.cursor_state
        page = await meta.read(lambda s, st=state: s.list_folder_continue(ns, st, _PAGE_ENTRIES))
    return ZipPlan(ns, m, entries, total)


class _Sink(io.RawIOBase):
    """A write-only, unseekable file that keeps what is written until `drain()`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._parts.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _zip_time(ts: str) -> tuple[int, int, int, int, int, int]:
    t = time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")
    return (max(1980, t.tm_year), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def _relative(plan: ZipPlan, e: Any) -> str:
    """The entry's name in the zip: the folder's own name, then the path below it."""
    below = e.path_display[len(plan.folder.path_display) :].lstrip("/")
    return f"{plan.folder.name}/{below}"


async def stream_zip(
    request: web.Request, resp: web.StreamResponse, plan: ZipPlan, blocks: Any, meta: Any
) -> web.StreamResponse:
    """Write `plan`'s zip as `resp` (prepared here if it is not yet); see the module
    docstring. `blocks`: a `BlockService`; `meta`: a `MetaService`."""
    if not resp.prepared:
        resp.content_type = "application/zip"
        await resp.prepare(request)
    sink = _Sink()
    try:
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            folders_with_children = {e.path_lower.rsplit("/", 1)[0] for e in plan.entries}
            for e in plan.entries:
                name = _relative(plan, e)
                if e.kind == "folder":
                    if e.path_lower not in folders_with_children:
                        zf.writestr(zipfile.ZipInfo(name + "/"), b"")
                        await resp.write(sink.drain())
                    continue
                await _write_file(zf, sink, resp, plan.ns, e, name, blocks, meta)
            if not plan.entries:
                zf.writestr(zipfile.ZipInfo(plan.folder.name + "/"), b"")
        await resp.write(sink.drain())
        await resp.write_eof()
    except ConnectionError as e:
        log.info("zip of %s: the client went away: %s", plan.folder.path_display, e)
        _abort(request)
    except Exception:
        log.exception("zip of %s failed after the headers were sent", plan.folder.path_display)
        _abort(request)
    return resp


async def _write_file(
    zf: zipfile.ZipFile,
    sink: _Sink,
    resp: web.StreamResponse,
    ns: int,
    f: C.FileMeta,
    name: str,
    blocks: Any,
    meta: Any,
) -> None:
    r = await meta.read(lambda s: s.file_blocks(ns, "rev:" + f.rev), stale=True)
    if isinstance(r, C.MetaError):
        log.warning("zip: %s rev %s is gone since it was listed: skipped", f.path_display, f.rev)
        return
    _, refs = r
    info = zipfile.ZipInfo(name, _zip_time(f.client_modified))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = f.size  # zipfile chooses zip64 from it
    if f.executable:
        info.external_attr = 0o100755 << 16
    else:
        info.external_attr = 0o100644 << 16
    with zf.open(info, "w") as w:
        if f.size:
            async for chunk in blocks.read_range(refs, 0, f.size):
                w.write(chunk)
                await resp.write(sink.drain())
    await resp.write(sink.drain())


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
