"""The native block protocol's routes on a blockserver (the protocol: `raftbox.blocks.native`,
and docs/native-protocol.md).

Every answer is about the caller's namespace only: `blocks/has` and `blocks/get` consult the
namespace's own block rights (`MetaStore.ns_has_blocks`), never the store, and `blocks/put`
answers with a count, not with which blocks were new to the store. So no answer tells an
account whether another account stored a block (timing aside). `blocks/list`, single or batch,
looks paths up in the caller's namespace only: another namespace's file (by `ns:`, id or rev)
is `not_found`, exactly like a missing one; the batch form reads every path in one meta query.

`commit_batch` entries state the file's attributes in full (`symlink_target`, `executable`;
absent means a regular, non-executable file). A symlink entry is checked here before anything
is proposed — its blocks must be exactly its target's UTF-8 bytes — and again by the state
machine (`raftbox.meta.commands.CommitFile`).

Block deltas (`raftbox.blocks.delta`): `blocks/signatures` gives the signature of each base
block the caller's namespaces can read, and `blocks/put_delta` rebuilds blocks from such a base
and a delta, checks each against its id and stores it like `blocks/put`. A base the caller
cannot read (another account's block) is treated exactly as one the store lacks: absent from
the signatures, `base_unknown` in `put_delta`'s answer (the client then sends the whole block).
A request is all or nothing: every delta is rebuilt and verified before any block is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Any

import msgspec
from aiohttp import web

from raftbox.blocks import delta as D
from raftbox.blocks.errors import BlockMismatch, BlockStoreError
from raftbox.blocks.hashing import BLOCK_WINDOW_BYTES, content_hash_from_digests
from raftbox.blocks.native import (
    MAX_COMMIT_ENTRIES,
    MAX_DELTA_BLOCKS,
    MAX_FRAME_BLOCK_BYTES,
    MAX_GET_BLOCKS,
    MAX_HAS_IDS,
    MAX_LIST_PATHS,
    MAX_PUT_BLOCKS,
    MAX_SIGNATURE_IDS,
    FrameError,
    frame_header,
    read_delta_frames,
    read_frames,
)
from raftbox.blocks.service import BlockService
from raftbox.meta import commands as C

from . import spaces, wire
from .args import READ_PATH, WRITE_PATH, Args, path_arg, rpc_args, write_mode
from .content import abort_connection, client_gone, commit_info, mwrite
from .errors import ApiError, BadInput, Unavailable, raise_meta
from .metaclient import MetaClient
from .wire import json_response

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{64}")


def _first_error(eg: BaseExceptionGroup) -> BaseException:
    e: BaseException = eg
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e


class NativeRoutes:
    """The native block protocol's route table: `server.py` registers `routes()` on the
    `ApiServer` of a meta member and of a blockserver (`ApiServer.add_routes`)."""

    def __init__(self, mc: MetaClient, blocks: BlockService, puts_in_flight: int = 4) -> None:
        self.mc = mc
        self.blocks = blocks
        self.puts_in_flight = puts_in_flight

    def routes(self) -> list[tuple[str, str, Any]]:
        """(route, auth, handler) of every native route; all authenticate the user."""
        return [
            ("raftbox/blocks/config", "user", self.config),
            ("raftbox/blocks/has", "user", self.has),
            ("raftbox/blocks/put", "user", self.put),
            ("raftbox/blocks/signatures", "user", self.signatures),
            ("raftbox/blocks/put_delta", "user", self.put_delta),
            ("raftbox/blocks/get", "user", self.get),
            ("raftbox/blocks/list", "user", self.list_blocks),
            ("raftbox/commit_batch", "user", self.commit_batch),
        ]

    @staticmethod
    def _ids(a: Args, limit: int) -> list[str]:
        ids = a.obj.get("ids") if isinstance(a.obj, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadInput(a.route, "ids: expected a list of block ids")
        if len(ids) > limit:
            raise BadInput(a.route, f"ids: at most {limit}")
        for i in ids:
            if _ID.fullmatch(i) is None:
                raise BadInput(a.route, f"ids: {i[:80]!r} is not a block id (64 lowercase hex)")
        return ids

    async def config(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "raftbox/blocks/config")
        ch = self.blocks.chunking
        return json_response(
            {
                "chunking": {
                    "mode": ch.mode,
                    "min_bytes": ch.min_bytes,
                    "avg_bytes": ch.avg_bytes,
                    "max_bytes": ch.max_bytes,
                },
                "max_block_bytes": MAX_FRAME_BLOCK_BYTES,
                "max_put_blocks": MAX_PUT_BLOCKS,
                "max_has_ids": MAX_HAS_IDS,
                "max_get_blocks": MAX_GET_BLOCKS,
                "max_commit_entries": MAX_COMMIT_ENTRIES,
                "max_list_paths": MAX_LIST_PATHS,
                "max_delta_blocks": MAX_DELTA_BLOCKS,
                "max_signature_ids": MAX_SIGNATURE_IDS,
            }
        )

    async def has(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "raftbox/blocks/has")
        ids = self._ids(a, MAX_HAS_IDS)
        # Blocks any of the caller's namespaces references: its own and its shared folders'.
        have = await self.mc.query("has_blocks", who.readable(), ids) if ids else []
        return json_response({"have": sorted(have)})

    async def put(self, request: web.Request, who: Any) -> web.Response:
        route = "raftbox/blocks/put"
        gen = await self.mc.gc_generation()
        store = self.blocks
        refs: list[C.BlockRef] = []
        slots = asyncio.Semaphore(self.puts_in_flight)

        async def put_one(bid: str, data: bytes) -> None:
            try:
                await store.put_verified(bid, data)
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as tg:
                async for bid, data in read_frames(request.content, MAX_PUT_BLOCKS):
                    refs.append(C.BlockRef(bid, len(data)))
                    await slots.acquire()
                    tg.create_task(put_one(bid, data))
        except BaseExceptionGroup as eg:  # the first failure, unwrapped
            e = _first_error(eg)
            if isinstance(e, BlockMismatch):
                raise BadInput(route, f"a block does not hash to its id: {e}") from None
            if isinstance(e, FrameError):
                raise BadInput(route, f"body: {e}") from None
            raise e from None
        if refs:
            uniq = list({r.id: r for r in refs}.values())
            await store.sync()  # durable before the RecordUpload that names them
            r = await mwrite(self.mc, C.RecordUpload(who.namespace_id, uniq, gen))
            raise_meta(r)
        return json_response({"received": len(refs)})

    async def signatures(self, request: web.Request, who: Any) -> web.Response:
        """`{"ids": [...]}` → `{"signatures": {id: base64 signature}}` of the readable ones."""
        import base64

        a = await rpc_args(request, "raftbox/blocks/signatures")
        ids = self._ids(a, MAX_SIGNATURE_IDS)
        have = sorted(set(await self.mc.query("has_blocks", who.readable(), ids))) if ids else []
        out: dict[str, str] = {}
        for bid in have:
            try:
                base = await self.blocks.store.get(bid)
            except BlockStoreError as e:  # unreadable here: the client sends whole blocks
                log.error("raftbox/blocks/signatures: cannot read block %s: %r", bid, e)
                continue
            sig = await asyncio.to_thread(D.signature, base)
            out[bid] = base64.b64encode(sig).decode()
        return json_response({"signatures": out})

    async def put_delta(self, request: web.Request, who: Any) -> web.Response:
        """Frames of (new id, base id, delta) → `{"received": n, "base_unknown": [new ids]}`.
        Each frame is rebuilt and verified as it arrives (memory: the blocks rebuilt so far,
        at most `MAX_DELTA_BLOCKS`, plus one delta and one base); all are stored only once
        every one is verified."""
        route = "raftbox/blocks/put_delta"
        gen = await self.mc.gc_generation()
        readable = who.readable()
        may_read: dict[str, bool] = {}  # base id -> may this namespace reference it
        unknown: set[str] = set()
        built: dict[str, bytes] = {}
        base_id_now, base = "", b""
        try:
            async for new_id, base_id, delta in read_delta_frames(request.content):
                if base_id not in may_read:
                    have = await self.mc.query("has_blocks", readable, [base_id])
                    may_read[base_id] = base_id in have
                if not may_read[base_id]:  # another account's, or unknown: the same answer
                    unknown.add(new_id)
                    continue
                if new_id in built:
                    continue
                if base_id != base_id_now:
                    try:
                        base, base_id_now = await self.blocks.store.get(base_id), base_id
                    except BlockStoreError as e:  # unreadable here: as unknown, sent whole
                        log.error("raftbox/blocks/put_delta: cannot read base %s: %r", base_id, e)
                        may_read[base_id] = False
                        unknown.add(new_id)
                        continue
                try:
                    data = await asyncio.to_thread(
                        D.apply_delta, base, delta, MAX_FRAME_BLOCK_BYTES
                    )
                except D.DeltaError as e:
                    raise BadInput(route, f"block {new_id}: {e}") from None
                got = await asyncio.to_thread(lambda d=data: hashlib.sha256(d).hexdigest())
                if got != new_id:
                    raise BadInput(route, f"block {new_id}: the delta rebuilds block {got}")
                built[new_id] = data
        except FrameError as e:
            raise BadInput(route, f"body: {e}") from None
        base = b""
        if built:
            for bid, data in built.items():
                await self.blocks.put_verified(bid, data)
            await self.blocks.sync()  # durable before the RecordUpload that names them
            refs = [C.BlockRef(bid, len(data)) for bid, data in built.items()]
            raise_meta(await mwrite(self.mc, C.RecordUpload(who.namespace_id, refs, gen)))
        return json_response({"received": len(built), "base_unknown": sorted(unknown - set(built))})

    async def get(self, request: web.Request, who: Any) -> web.StreamResponse:
        a = await rpc_args(request, "raftbox/blocks/get")
        ids = self._ids(a, MAX_GET_BLOCKS)
        have = set(await self.mc.query("has_blocks", who.readable(), ids)) if ids else set()
        missing = sorted(set(ids) - have)
        if missing:
            raise ApiError(["not_found"], {"ids": missing})
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/octet-stream"
        blocks = [(bid, 0) for bid in ids]  # read_blocks needs the ids only
        chunks = self.blocks.read_blocks(blocks)
        k = 0
        try:  # the first block before the status line (as files/download: see api.content)
            first = await anext(chunks, None)
        except BlockStoreError as e:
            await chunks.aclose()
            log.error("raftbox/blocks/get: cannot read block %s: %r", ids[0], e)
            return Unavailable("a block cannot be read on this server").response()
        try:
            await resp.prepare(request)
            if first is not None:
                await resp.write(frame_header(ids[0], len(first)))
                await resp.write(first)
                k = 1
            async for data in chunks:
                await resp.write(frame_header(ids[k], len(data)))
                await resp.write(data)
                k += 1
        except ConnectionError as e:
            if client_gone(request):
                log.info("raftbox/blocks/get: the client went away after %d blocks: %s", k, e)
            else:
                log.exception("raftbox/blocks/get: failed after the headers were sent")
                abort_connection(request)
            return resp
        except BlockStoreError as e:
            log.error("raftbox/blocks/get: block %s failed after %d blocks were sent "
                      "(connection aborted): %r", ids[k], k, e)  # fmt: skip
            abort_connection(request)
            return resp
        except Exception:
            log.exception("raftbox/blocks/get: failed after the headers were sent")
            abort_connection(request)
            return resp
        finally:
            await chunks.aclose()
        await resp.write_eof()
        return resp

    async def list_blocks(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "raftbox/blocks/list")
        if "paths" in a.obj:
            return await self._list_many(a, who)
        t = await spaces.resolve(self.mc, who, path_arg(a, "path", READ_PATH), ["path"])
        r = await self.mc.query("file_blocks", t.ns, t.path)
        return json_response(_listed(raise_meta(r), who, t))

    async def _list_many(self, a: Args, who: Any) -> web.Response:
        """`{"paths": [...]}` → `{"entries": [...]}` in order, one meta query for them all."""
        paths = a.obj["paths"]
        if "path" in a.obj:
            raise BadInput(a.route, "path and paths: give one or the other")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BadInput(a.route, "paths: expected a list of paths")
        if len(paths) > MAX_LIST_PATHS:
            raise BadInput(a.route, f"paths: at most {MAX_LIST_PATHS}")
        # another namespace's ("ns:N/..." not mounted, an id of no readable one): not_found
        mine: list[spaces.Target | C.MetaError] = []
        for p in paths:
            if not READ_PATH.match(p):
                raise BadInput(a.route, f"paths: {p[:200]!r} did not match pattern")
            try:
                mine.append(await spaces.resolve(self.mc, who, p, ["path"]))
            except ApiError as e:
                mine.append(C.MetaError(e.tags, e.extra))
        by_ns: dict[int, list[spaces.Target]] = {}
        for t in mine:
            if isinstance(t, spaces.Target):
                by_ns.setdefault(t.ns, []).append(t)
        answers: dict[int, Any] = {}
        for ns, ts in by_ns.items():  # one query per namespace (usually one in all)
            rs = await self.mc.query("file_blocks_many", ns, [t.path for t in ts])
            answers.update((id(t), r) for t, r in zip(ts, rs, strict=True))
        entries = []
        for t in mine:
            r = t if isinstance(t, C.MetaError) else answers[id(t)]
            if isinstance(r, C.MetaError):
                tags = r.tags[1:] if r.tags[:1] == ["path"] and len(r.tags) > 1 else r.tags
                entries.append({"error": wire.union(tags, r.extra)})
            else:
                entries.append(_listed(r, who, t))
        return json_response({"entries": entries})

    async def commit_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "raftbox/commit_batch")
        entries = a.obj.get("entries") if isinstance(a.obj, dict) else None
        if not isinstance(entries, list):
            raise BadInput(a.route, "entries: expected a list")
        if len(entries) > MAX_COMMIT_ENTRIES:
            raise BadInput(a.route, f"entries: at most {MAX_COMMIT_ENTRIES}")
        parsed: list[tuple[Args, Any, list[C.BlockRef], int, str | None, str | None, bool]] = []
        for e in entries:
            ea = Args(a.route, e)
            if not isinstance(e, dict):
                raise BadInput(a.route, "entries: each entry is an object")
            path: Any = path_arg(ea, "path", WRITE_PATH)
            try:  # a viewer's entry, or one in a namespace the caller cannot see, fails alone
                path = await spaces.resolve(self.mc, who, path, ["path"], write=True)
                if path.at_mount_point:  # a file where the mount point is: a conflict at home
                    path = spaces.Target(who.namespace_id, path.mount.display)
            except ApiError as err:
                if "malformed_path" in err.tags:
                    raise
                path = C.MetaError(err.tags, err.extra)
            write_mode(ea)
            raw = e.get("blocks")
            if not isinstance(raw, list):
                raise BadInput(a.route, "blocks: expected [[id, size], ...]")
            refs = []
            for b in raw:
                if (
                    not isinstance(b, list | tuple)
                    or len(b) != 2
                    or not isinstance(b[0], str)
                    or _ID.fullmatch(b[0]) is None
                    or not isinstance(b[1], int)
                    or not 0 < b[1] <= MAX_FRAME_BLOCK_BYTES
                ):
                    raise BadInput(a.route, "blocks: each is [64 lowercase hex, size > 0]")
                refs.append(C.BlockRef(b[0], b[1]))
            size = sum(r.size for r in refs)
            if ea.int("size", default=size) != size:
                raise BadInput(a.route, "size: not the sum of the block sizes")
            ch = ea.str("content_hash")
            if ch is not None:
                if re.fullmatch(r"[0-9a-fA-F]{64}", ch) is None:
                    raise BadInput(a.route, "content_hash: expected 64 hex characters")
                ch = ch.lower()
            link = ea.str("symlink_target")
            exe = ea.bool("executable")
            if link is not None:
                why = C.symlink_target_problem(link) or C.symlink_blocks_problem(link, refs, size)
                if why is not None:
                    raise BadInput(a.route, f"symlink_target: {why}")
                if exe:
                    raise BadInput(a.route, "executable: a symlink is never executable")
            parsed.append((ea, path, refs, size, ch, link, exe))
        # Which entries use only blocks the caller's namespaces have (its own, its shared
        # folders'): the others fail with need_blocks here, so nothing is read for them
        # (reading would tell what the store holds).
        readable = who.readable()
        all_ids = list({r.id for _, _, refs, *_ in parsed for r in refs})
        have: set[str] = set()
        for i in range(0, len(all_ids), MAX_HAS_IDS):
            have.update(await self.mc.query("has_blocks", readable, all_ids[i : i + MAX_HAS_IDS]))
        results: list[Any] = [None] * len(parsed)
        cmds: list[C.CommitFile] = []
        where: list[int] = []
        for k, (ea, path, refs, size, ch, link, exe) in enumerate(parsed):
            if isinstance(path, C.MetaError):
                results[k] = path
                continue
            missing = sorted({r.id for r in refs} - have)
            if missing:
                results[k] = C.MetaError(["need_blocks"], {"missing": missing})
                continue
            aligned = all(r.size == BLOCK_WINDOW_BYTES for r in refs[:-1])
            derived = None
            if link is not None:  # the bytes are the target's (checked above)
                derived = C.dropbox_content_hash(link.encode())
            elif aligned:  # the blocks are the content_hash windows: check or derive for free
                derived = content_hash_from_digests([bytes.fromhex(r.id) for r in refs])
            if derived is not None:
                if ch is not None and ch != derived:
                    results[k] = C.MetaError(["content_hash_mismatch"])
                    continue
                ch = derived
            elif ch is None:
                ch = await self.blocks.content_hash_of([(r.id, r.size) for r in refs])
            info = commit_info(who, ea, _Ing(refs, size, ch), path.path, ns=path.ns)
            cmds.append(
                msgspec.structs.replace(
                    info,
                    uploaded=False,
                    symlink_target=link,
                    executable=exe,
                    keep_executable=False,
                    readable_ns=readable,
                )
            )
            where.append(k)
        if cmds:
            out = raise_meta(await mwrite(self.mc, C.CommitBatch(cmds)))
            for k, r in zip(where, out, strict=True):
                results[k] = r
        body = []
        for r, (_, t, *_) in zip(results, parsed, strict=True):
            if isinstance(r, C.MetaError):
                if r.tags[:1] == ["need_blocks"]:
                    body.append({".tag": "need_blocks", "missing": r.extra.get("missing", [])})
                else:
                    body.append({".tag": "failure", "failure": wire.union(r.tags, r.extra)})
            else:
                body.append({".tag": "success", **t.json(who, r, tagged=False)})
        return json_response({"entries": body})


class _Ing:
    """What `content.commit_info` reads of an `Ingested`."""

    def __init__(self, refs: list[C.BlockRef], size: int, content_hash: str) -> None:
        self.blocks = [(r.id, r.size) for r in refs]
        self.size = size
        self.content_hash = content_hash


def _listed(found: tuple[C.FileMeta, list[C.BlockRef]], who: Any, t: spaces.Target) -> dict:
    meta, blocks = found
    return {
        "metadata": t.json(who, meta, tagged=False),
        "blocks": [[b.id, b.size] for b in blocks],
    }
