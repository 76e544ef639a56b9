"""The content routes of the Dropbox API: `files/upload`, `files/download` and the upload
sessions (`start`, `append_v2`, `finish`, `finish_batch_v2`, and `finish_batch` v1 with its
`finish_batch/check`: the same batch as an async job, `raftbox.api.batch`) — the routes a
blockserver serves.

`ContentRoutes(mc, blocks)` streams bodies into and out of content-addressed blocks
(`BlockService`) and reaches meta only through a `MetaClient` (`metaclient.py`): the
`MetaService` of this process, or, in a blockserver, the meta members over HTTP. Blocks stored
for a write carry the GC generation read before storing them (`raftbox.gc`); a `gc_retry`
answer becomes a 503 the SDKs retry (`mwrite`). `routes()` is the route table `ApiServer`
registers (auth "user"). The helpers below (`commit_info`, `mwrite`) are shared with the native
block protocol's routes (`native.py`). The commits of concurrent `files/upload` requests are
proposed together, one Raft entry for those that arrive while the previous one is in flight
(`commitgroup.CommitGroup`; each request still gets its own result).

Files written through these routes cannot say whether they are symlinks or executable: their
commits ask to keep the executable bit of the file they replace (`CommitFile.keep_executable`)
and never make a symlink (the native `commit_batch` states both).

`files/upload_session/finish_batch_v2` checks every entry's arguments before anything is read
(a malformed one is a 400 for the whole request: nothing changed), reads all the sessions in one
query, and then proposes ONE `FinishBatch`: each entry succeeds or fails on its own in the same
raft entry, as Dropbox's finish_batch does, so no request ends half-applied. Each entry's path
resolves through `raftbox.api.spaces` (a viewer's entry fails with `no_write_permission`); v1's
job keeps each result under its mount point (`RunJob.shown`), so `finish_batch/check` shows
the paths in the caller's tree, as v2 does.

Downloads (`files/download`) read the file's first block before the status line is sent: a
block this member cannot read (missing from its store — a cluster whose members do not share
one — or corrupt) is a 503, which the SDKs retry (another member may serve it), not a 409: the
file exists, and a client must not take it for gone. A block that fails later, once `200` and
the length are sent, is logged once at ERROR (the file's path and id, the rev, the block id; no
traceback) and the connection is aborted (`abort_connection`), so the client sees a truncated
transfer; a client that hung up (`client_gone`) is one INFO line.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any

from aiohttp import web

from raftbox.blocks.errors import BlockStoreError
from raftbox.blocks.service import BlockService, Ingested, PayloadTooLarge
from raftbox.meta import commands as C

from . import spaces, wire
from .args import (
    READ_PATH,
    WRITE_PATH,
    Args,
    header_args,
    parse_ts,
    path_arg,
    rpc_args,
    write_mode,
)
from .batch import async_job_id, job_result, launch_job, shown_json, whole_batch
from .commitgroup import CommitGroup
from .errors import ApiError, BadInput, Unavailable, raise_meta
from .metaclient import MetaClient
from .wire import json_response

log = logging.getLogger(__name__)

UPLOAD_MAX_BYTES = 150 * 1024 * 1024
WINDOW = 4 * 1024 * 1024
MAX_FINISH_BATCH_ENTRIES = 1000


class ContentRoutes:
    def __init__(self, mc: MetaClient, blocks: BlockService) -> None:
        self.mc = mc
        self.blocks = blocks
        self.uploads = CommitGroup(mc)  # files/upload commits that arrive together: one entry

    def routes(self) -> list[tuple[str, str, Any]]:
        """(route, auth, handler) of every content route."""
        return [
            ("files/upload", "user", self.upload),
            ("files/download", "user", self.download),
            ("files/upload_session/start", "user", self.session_start),
            ("files/upload_session/append_v2", "user", self.session_append),
            ("files/upload_session/finish", "user", self.session_finish),
            ("files/upload_session/finish_batch_v2", "user", self.session_finish_batch),
            ("files/upload_session/finish_batch", "user", self.session_finish_batch_v1),
            ("files/upload_session/finish_batch/check", "user", self.finish_batch_check),
        ]

    # -- content -------------------------------------------------------------------------------
    async def _ingest(
        self, request: web.Request, a: Args, limit: int = UPLOAD_MAX_BYTES
    ) -> tuple[Ingested, int]:
        """Store the body as blocks: (what was stored, the GC generation read before)."""
        want = a.str("content_hash")
        if want is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", want):
            raise BadInput(a.route, "content_hash: expected 64 hex characters")
        if (request.content_length or 0) > limit:  # refused before reading (and while reading)
            raise ApiError(["payload_too_large"])
        gen = await self.mc.gc_generation()
        try:
            ing = await self.blocks.ingest(request.content, limit)
        except PayloadTooLarge:
            raise ApiError(["payload_too_large"]) from None
        if want is not None and want.lower() != ing.content_hash:
            raise ApiError(["content_hash_mismatch"])
        return ing, gen

    async def upload(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload")
        path = path_arg(a, "path", WRITE_PATH)
        write_mode(a)  # validate before reading the body
        try:
            t = await spaces.resolve_write(self.mc, who, path, ["path"])
            if t.at_mount_point:  # a file where the mount point is: a conflict at home
                t = spaces.Target(who.namespace_id, t.mount.display)
        except ApiError as e:  # UploadError.path is the struct UploadWriteFailed: flatten it
            raise_meta(C.MetaError(e.tags, e.extra), upload=True)
        ing, gen = await self._ingest(request, a)
        m = await mwrite(self.mc, commit_info(who, a, ing, t.path, gen, ns=t.ns), self.uploads)
        return json_response(t.json(who, raise_meta(m, upload=True), tagged=False))

    async def download(self, request: web.Request, who: Any) -> web.StreamResponse:
        a = header_args(request, "files/download")
        path = path_arg(a, "path", READ_PATH)
        rev = a.rev("rev")
        t = await spaces.resolve(self.mc, who, "rev:" + rev if rev is not None else path, ["path"])
        ns, path = t.ns, t.path
        r = await self.mc.query("file_blocks", ns, path)
        meta, blocks = raise_meta(r)
        return await self.send_file(
            request, meta, blocks, "files/download", result=t.json(who, meta, tagged=False)
        )

    async def send_file(
        self,
        request: web.Request,
        meta: C.FileMeta,
        blocks: list[C.BlockRef],
        route: str,
        headers: dict[str, str] | None = None,
        result: dict | None = None,
    ) -> web.StreamResponse:
        """Stream a file's blocks as the answer, with Range support (the module docstring
        says how a block that fails is answered). `result` is the `Dropbox-API-Result` (default:
        the file's metadata as in its own namespace); `headers` replace the defaults
        (Content-Type, `Dropbox-API-Result`); a header set to "" is left out. A HEAD request
        gets the headers only."""
        size = meta.size
        start, end = 0, size - 1
        status = 200
        rng = request.headers.get("Range")
        # An empty file has no byte to range over: ignore Range (RFC 9110 allows it) and send
        # 200 with the empty body; the SDK's parallel Downloader asks for bytes=0-0 of every file.
        if rng and size:
            parsed = parse_range(rng, size)
            if parsed is None:
                raise ApiError(["range", "not_satisfiable"], status=416)
            start, end = parsed
            status = 206
        resp = web.StreamResponse(status=status)
        resp.content_type = "application/octet-stream"
        if result is None:
            result = wire.metadata_json(meta, tagged=False)
        resp.headers["Dropbox-API-Result"] = wire.dumps(result).decode()
        for k, v in (headers or {}).items():
            if v:
                resp.headers[k] = v
            else:
                resp.headers.pop(k, None)
        resp.headers["Accept-Ranges"] = "bytes"
        length = max(0, end - start + 1)
        resp.content_length = length
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            length = 0
        chunks = self.blocks.read_range(blocks, start, end + 1) if length else _no_chunks()
        what = f"{meta.path_display} ({meta.id}) rev {meta.rev}"
        try:
            first = await anext(chunks, b"")  # before the status line: a 503 still possible
        except BlockStoreError as e:
            await chunks.aclose()
            log.error("%s: %s: cannot read block %s: %r", route, what, _block_of(e), e)
            return Unavailable("a block of this file cannot be read on this server").response()
        sent = 0
        try:
            await resp.prepare(request)
            if first:
                await resp.write(first)
                sent += len(first)
            async for chunk in chunks:
                await resp.write(chunk)
                sent += len(chunk)
        except ConnectionError as e:
            if not client_gone(request):
                log.exception("%s: %s: failed after the headers were sent", route, what)
                abort_connection(request)
                return resp
            log.info("%s: %s: the client went away after %d of %d bytes: %s",
                     route, what, sent, length, e)  # fmt: skip
            return resp  # aiohttp finds the connection gone and says nothing more
        except BlockStoreError as e:
            # Too late for an error answer: the status and length are sent. Abort the
            # connection so the client sees a truncated transfer, never a short file.
            log.error("%s: %s: block %s failed after %d of %d bytes were sent "
                      "(connection aborted): %r", route, what, _block_of(e), sent, length, e)  # fmt: skip
            abort_connection(request)
            return resp
        except Exception:
            log.exception("%s: %s: failed after the headers were sent", route, what)
            abort_connection(request)
            return resp
        finally:
            await chunks.aclose()
        await resp.write_eof()
        return resp

    # -- upload sessions -----------------------------------------------------------------------
    async def session_start(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload_session/start")
        close = a.bool("close")
        stype, _ = a.tag("session_type", "sequential")
        if stype not in ("sequential", "concurrent"):
            raise BadInput(a.route, f"session_type: unknown tag '{stype}'")
        concurrent = stype == "concurrent"
        ing, gen = await self._ingest(request, a)
        if concurrent and ing.size:
            raise ApiError(["concurrent_session_data_not_allowed"])
        if concurrent and close:
            raise ApiError(["concurrent_session_close_not_allowed"])
        session_id = "pid_upload_session:" + secrets.token_urlsafe(24)
        ns = who.namespace_id
        raise_meta(await mwrite(self.mc, C.SessionStart(session_id, ns, concurrent)))
        if ing.size or close:
            r = await mwrite(
                self.mc,
                C.SessionAppend(
                    session_id, ns, 0, refs_of(ing), ing.size, close, ing.window_digests, gen
                ),
            )
            raise_meta(r)
        return json_response({"session_id": session_id})

    def _session_cursor(self, a: Args, prefix: list[str]) -> tuple[str, int]:
        c = a.obj_("cursor", required=True)
        assert c is not None
        return c.str("session_id", required=True), c.int(
            "offset", required=True, hi=C.MAX_FILE_BYTES
        )

    async def session_append(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload_session/append_v2")
        session_id, offset = self._session_cursor(a, [])
        close = a.bool("close")
        ns = who.namespace_id
        head = await self.mc.query("session_head", session_id)
        if head is None or head[0] != ns:
            raise ApiError(["not_found"])
        concurrent = head[1]
        if concurrent and offset % WINDOW:
            raise ApiError(["concurrent_session_invalid_offset"])
        ing, gen = await self._ingest(request, a)
        if concurrent and not close and ing.size % WINDOW:
            raise ApiError(["concurrent_session_invalid_data_size"])
        r = await mwrite(
            self.mc,
            C.SessionAppend(
                session_id, ns, offset, refs_of(ing), ing.size, close, ing.window_digests, gen
            ),
        )
        raise_meta(r)
        return json_response(None)

    def _finish_args(self, a: Args) -> tuple[str, int, Args, str]:
        """(session id, offset, commit arguments, commit path) of an UploadSessionFinishArg,
        every argument checked (`BadInput`) before anything is read or written."""
        session_id, offset = self._session_cursor(a, ["lookup_failed"])
        commit = a.obj_("commit", required=True)
        assert commit is not None
        path = path_arg(commit, "path", WRITE_PATH)
        write_mode(commit)
        if commit.obj.get("client_modified") is not None:
            parse_ts(a.route, "client_modified", commit.obj["client_modified"])
        commit.bool("autorename")
        commit.bool("strict_conflict")
        return session_id, offset, commit, path

    async def _finish_cmd(
        self, who: Any, session_id: str, offset: int, commit: Args, path: str, st: Any
    ) -> C.SessionFinish | C.MetaError:
        """The `SessionFinish` of one entry, given its session's state `st` (None: gone), or
        the entry's own failure."""
        ns = who.namespace_id
        try:
            t = await spaces.resolve_write(self.mc, who, path, ["path"])
            if t.at_mount_point:
                t = spaces.Target(who.namespace_id, t.mount.display)
            path = t.path
        except ApiError as e:
            return C.MetaError(e.tags, e.extra)
        if st is None or st.ns != ns:
            return C.MetaError(["lookup_failed", "not_found"])
        blocks = [(b.id, b.size) for b in st.blocks]
        digests = st.window_digests()
        if digests is not None and sum(p.length for p in st.pieces) == st.length:
            content_hash = hashlib.sha256(b"".join(digests)).hexdigest()
        else:  # a piece without window digests, or one that ends off a 4 MiB boundary
            content_hash = await self.blocks.content_hash_of(blocks)
        size = sum(s for _, s in blocks)
        try:
            info = commit_info(who, commit, Ingested(blocks, size, content_hash), path, ns=t.ns)
        except ApiError as e:  # property_groups
            return C.MetaError(e.tags, e.extra)
        return C.SessionFinish(session_id, ns, offset, info)

    async def session_finish(self, request: web.Request, who: Any) -> web.Response:
        a = header_args(request, "files/upload_session/finish")
        session_id, offset, commit, path = self._finish_args(a)
        ns = who.namespace_id
        spaces.target(who, path, ["path"], write=True)  # a malformed path changes nothing
        # Check the session before storing any of the body (up to 150 MiB) for it.
        head = await self.mc.query("session_head", session_id)
        if head is None or head[0] != ns:
            raise ApiError(["lookup_failed", "not_found"])
        ing, gen = await self._ingest(request, a)
        if ing.size:
            if head[1]:
                raise ApiError(["concurrent_session_data_not_allowed"])
            r = await mwrite(
                self.mc,
                C.SessionAppend(
                    session_id, ns, offset, refs_of(ing), ing.size, False, ing.window_digests, gen
                ),
            )
            if isinstance(r, C.MetaError):
                raise ApiError(
                    ["lookup_failed"] + r.tags if r.tags[0] != "lookup_failed" else r.tags,
                    r.extra,
                )
            offset += ing.size
        st = await self.mc.query("session", session_id)
        cmd = raise_meta(await self._finish_cmd(who, session_id, offset, commit, path, st))
        m = await mwrite(self.mc, cmd)
        return json_response(spaces_json(who, cmd, raise_meta(m)))

    async def session_finish_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/upload_session/finish_batch_v2")
        results, cmds, ns_of = await self._finish_batch_parts(a, who)
        if cmds:
            done = iter(raise_meta(await mwrite(self.mc, C.FinishBatch(cmds))))
            results = [next(done) if r is None else r for r in results]
        return json_response({"entries": _finish_entries(who, results, ns_of)})

    async def session_finish_batch_v1(self, request: web.Request, who: Any) -> web.Response:
        """`finish_batch` (v1): the same batch as `finish_batch_v2`, run as an async job
        (`raftbox.api.batch`, `raftbox.meta.jobs`): answers `async_job_id` at once, as Dropbox
        does; `finish_batch/check` answers the entries."""
        a = await rpc_args(request, "files/upload_session/finish_batch")
        refused, cmds, ns_of = await self._finish_batch_parts(a, who)
        shown = [_mount_display(who, cmd) for cmd in ns_of]
        jid = await launch_job(self.mc, who, "finish_batch", C.FinishBatch(cmds), refused, shown)
        return json_response({".tag": "async_job_id", "async_job_id": jid})

    async def finish_batch_check(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/upload_session/finish_batch/check")
        results = await job_result(self.mc, who, "finish_batch", async_job_id(a))
        out = []
        for r in whole_batch(results):  # kept in `who`'s tree (`RunJob.shown`)
            if isinstance(r, C.MetaError):
                out.append({".tag": "failure", "failure": wire.union(r.tags, r.extra)})
            else:
                out.append({".tag": "success", **shown_json(who, r, tagged=False)})
        return json_response({".tag": "complete", "entries": out})

    async def _finish_batch_parts(
        self, a: Args, who: Any
    ) -> tuple[list[C.MetaError | None], list[C.SessionFinish], list[C.SessionFinish | None]]:
        """A finish batch's entries: (one slot per entry — its error, or None for the next
        command —, the `SessionFinish` commands, each entry's command or None), every argument
        checked first (`BadInput`)."""
        entries = a.obj.get("entries")
        if not isinstance(entries, list):
            raise BadInput(a.route, "entries: expected a list")
        if len(entries) > MAX_FINISH_BATCH_ENTRIES:
            raise BadInput(a.route, f"entries: at most {MAX_FINISH_BATCH_ENTRIES}")
        parsed = [self._finish_args(Args(a.route, e)) for e in entries]  # 400 before any work
        states = await self.mc.query("sessions", [sid for sid, _, _, _ in parsed]) if parsed else []
        results: list[Any] = []
        cmds: list[C.SessionFinish] = []
        ns_of: list[C.SessionFinish | None] = []
        for (sid, offset, commit, path), st in zip(parsed, states, strict=True):
            r = await self._finish_cmd(who, sid, offset, commit, path, st)
            ns_of.append(r if isinstance(r, C.SessionFinish) else None)
            if isinstance(r, C.SessionFinish):
                cmds.append(r)
                r = None  # filled in from the batch's answer below
            results.append(r)
        return results, cmds, ns_of


def _finish_entries(who: Any, results: list[Any], ns_of: list[Any]) -> list[dict]:
    """`UploadSessionFinishBatchResultEntry` of each result, in `who`'s tree (`ns_of`: each
    entry's `SessionFinish`, or None: its path is in the home namespace)."""
    out = []
    for r, cmd in zip(results, ns_of, strict=True):
        if isinstance(r, C.MetaError):
            out.append({".tag": "failure", "failure": wire.union(r.tags, r.extra)})
        else:
            out.append({".tag": "success", **spaces_json(who, cmd, r)})
    return out


def _mount_display(who: Any, cmd: Any) -> str:
    """The mount point path a finish's result is shown under ("": the home namespace)."""
    if cmd is None or cmd.commit.ns == who.namespace_id:
        return ""
    mount = who.mount_of_ns(cmd.commit.ns)
    return mount.display if mount is not None else ""


def spaces_json(who: Any, cmd: Any, m: Any) -> dict:
    """The JSON of a file an upload session finished, in `who`'s tree (its commit's ns)."""
    ns = cmd.commit.ns if cmd is not None else who.namespace_id
    mount = who.mount_of_ns(ns) if ns != who.namespace_id else None
    return spaces.Target(ns, "", mount).json(who, m, tagged=False)


def commit_info(
    who: Any,
    a: Args,
    ing: Ingested,
    path: str,
    gc_gen: int | None = None,
    ns: int | None = None,
) -> C.CommitFile:
    """The `CommitFile` of a Dropbox commit argument (`CommitInfo`) for the blocks `ing`."""
    mode, rev = write_mode(a)
    cm = a.obj.get("client_modified")
    if cm is not None:
        cm = parse_ts(a.route, "client_modified", cm)
    if a.obj.get("property_groups"):
        raise ApiError(["properties_error", "does_not_fit_template"])
    return C.CommitFile(
        ns=who.namespace_id if ns is None else ns,
        path=path,
        blocks=[C.BlockRef(b, s) for b, s in ing.blocks],
        size=ing.size,
        content_hash=ing.content_hash,
        mode=mode,
        update_rev=rev,
        autorename=a.bool("autorename"),
        strict_conflict=a.bool("strict_conflict"),
        client_modified=cm,
        uploaded=True,
        gc_gen=gc_gen,
        keep_executable=True,  # the Dropbox routes cannot state the bit: keep it
    )


async def mwrite(mc: MetaClient, cmd: Any, group: CommitGroup | None = None) -> Any:
    """A write through the MetaClient (or proposed with others by `group`); `gc_retry` (a
    block this request stored was caught by garbage collection) refreshes the GC generation
    and answers 503: retry."""
    r = await (group.write(cmd) if group is not None else mc.write(cmd))
    if isinstance(r, C.MetaError) and r.tags[:1] == ["gc_retry"]:
        await mc.gc_generation(fresh=True)
        raise Unavailable(f"blocks being garbage-collected: {r.extra.get('ids', [])[:4]}")
    return r


async def _no_chunks() -> Any:
    return
    yield b""


def _block_of(e: BaseException) -> str:
    """The block id a block store error names (`BlockNotFound(id)`), else "?"."""
    arg = e.args[0] if e.args else ""
    return arg if isinstance(arg, str) and re.fullmatch(r"[0-9a-f]{64}", arg) else "?"


def abort_connection(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def client_gone(request: web.Request) -> bool:
    """True once the client's connection is closed or closing (it hung up)."""
    t = request.transport
    return t is None or t.is_closing()


def refs_of(ing: Ingested) -> list:
    return [C.BlockRef(b, s) for b, s in ing.blocks]


_RANGE = re.compile(r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")
_RANGE_BIG = 2**63  # stands for any number of 19 digits or more: past the end of any file


def _range_int(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else _RANGE_BIG


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive (start, end); None if unsatisfiable,
    malformed, or several ranges (ASCII digits only; any number of digits)."""
    m = _RANGE.fullmatch(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    a, b = m.group(1), m.group(2)
    if a == "":
        n = _range_int(b)
        if n == 0 or size == 0:
            return None
        return max(0, size - n), size - 1
    start = _range_int(a)
    end = _range_int(b) if b else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)
