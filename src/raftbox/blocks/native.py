"""The native block protocol: what raftbox's own client speaks instead of the Dropbox SDK's routes.

The Dropbox API sends whole files (or session pieces) and lets the server cut them; the native
protocol lets the client cut them itself, ask which blocks the server already holds for it,
send only the missing ones, and commit many files in one Raft entry — so an edit of a big file
costs the bytes of the blocks it changed, and a folder of small files costs one commit. Every
route is `POST https://HOST/2/raftbox/...` with `Authorization: Bearer TOKEN`, answered by any
blockserver (nginx routes `/2/raftbox/blocks/` and `/2/raftbox/commit_batch` there).

Routes
------
- `blocks/config` (JSON `null` → JSON): the cluster's chunking setting
  (`{"chunking": {"mode": "cdc", "min_bytes": .., "avg_bytes": .., "max_bytes": ..}, ...}`) and
  this protocol's limits. A client that chunks the same way as the server dedups best, but any
  block of at most `max_block_bytes` is accepted: a block is its bytes and its id, whatever cut it.
- `blocks/has` (JSON `{"ids": [hex, ...]}`, at most 10,000 → `{"have": [hex, ...]}`): which of
  these blocks THIS namespace may reference — blocks it uploaded itself or already references.
  A block another account stored is "not had": the answer never tells whether the store holds
  it (the 2011 "Dropship" lesson), so knowing a hash is never enough to read or link content.
- `blocks/put` (body: frames, see below, at most 10,000 blocks of at most 4 MiB each →
  `{"received": N}`): every block is hashed and stored (one copy in the store whoever uploads:
  a block the store already holds costs no second write, and the answer does not say which),
  then recorded as uploaded by this namespace with the time (`RecordUpload`, one Raft entry):
  from then on this namespace may commit files that use it, and garbage collection keeps it
  while such a commit may still come. A block whose bytes do not hash to its id fails the
  request with 400 and nothing is recorded.
- `blocks/get` (JSON `{"ids": [hex, ...]}`, at most 1,000 → body: frames, in the order asked):
  blocks this namespace may reference; any other id fails the whole request with 409
  `{"error": {".tag": "not_found", "ids": [...]}}` before a byte is sent. The body streams; a
  block the store cannot produce (damaged) breaks the connection mid-body, never sends wrong
  bytes. Clients re-hash every block they receive.
- `blocks/list` (JSON `{"path": "/a" | "id:..." | "rev:..."}` → `{"metadata": <file metadata>,
  "blocks": [[hex, size], ...]}`): a file's blocklist, for a download that fetches only the
  blocks it lacks. A missing path (or a folder) is a 409 `path/not_found` (`path/not_file`).
  Batch form: `{"paths": [path, ...]}`, at most 1,000 → `{"entries": [...]}` in the order
  asked, each `{"metadata": ..., "blocks": [...]}` or `{"error": {".tag": "not_found"}}`
  (`not_file` for a folder, `malformed_path`): one meta read for the whole batch, every answer
  from the same state. Only this namespace's files are listed: another account's file, by
  `ns:`, id or rev, is `not_found` like a missing one. A path that does not match the pattern
  of a read path fails the whole request with 400.
- `commit_batch` (JSON `{"entries": [...]}`, at most 1,000 → `{"entries": [...]}`): many files in
  one Raft entry. An entry is `{"path": "/a/b", "blocks": [[hex, size], ...], "size": N,
  "content_hash": hex (optional), "mode": "add" | "overwrite" | {".tag": "update", "update": rev},
  "autorename": bool, "strict_conflict": bool, "client_modified": "%Y-%m-%dT%H:%M:%SZ"}`. Every
  block must be one this namespace has (`blocks/has`), else the entry fails with
  `{".tag": "need_blocks", "missing": [...]}`. Each result is `{".tag": "success", <file
  metadata>}` or `{".tag": "failure", "failure": <Dropbox UploadWriteFailed-style union>}`; the
  entries succeed or fail on their own. `content_hash` is the client's (the Dropbox one: SHA-256
  over the SHA-256 of each 4 MiB window); when it is left out the server computes it by reading
  the blocks. With fixed 4 MiB blocks the server checks a given one against the blocklist.
  File attributes, stated in full by every entry (absent: a regular, non-executable file):
  `"executable": bool` (the owner-execute bit) and `"symlink_target": str` (the entry is a
  symbolic link; its content — the blocks, `size`, `content_hash` — is the UTF-8 bytes of the
  target, which must be non-empty, at most 4,096 bytes, without NUL; a symlink is never
  executable). A symlink's blocks are checked against its target and a bad entry (or a value of
  the wrong type) fails the whole request with 400 before anything is written. In metadata a
  symlink has Dropbox's `"symlink_info": {"target": ...}`, and an executable file raftbox's
  `"executable": true` (absent when false; SDKs ignore it). A file written through the Dropbox
  routes (upload, upload sessions), which cannot state the bit, keeps the executable bit of the
  file it replaces, and is never a symlink; downloading a symlink gives its target.

Frames
------
`blocks/put` bodies and `blocks/get` answers are a sequence of frames, nothing else:

    [u32 big-endian length][32 bytes: raw SHA-256 of the block][length bytes: the block]

A body ends after a whole frame; anything else (a short frame, a length over the limit) is a
400 for `put` and a broken stream for `get`. The framing is this module's `frame_header` and
`read_frames`, shared by the server (`raftbox.api.native`) and `NativeClient` below.

Upload of a file, the way `NativeClient.upload` does it: chunk it (`raftbox.blocks.Chunker`,
which also gives the content_hash), `blocks/has` for its ids, `blocks/put` the missing ones,
`commit_batch` with the blocklist (parent rev in `update` mode, as the sync client does).

Block deltas (`raftbox.blocks.delta`): a missing block that replaces a block of the file's
previous version can go as a delta against it.
- `blocks/signatures` (JSON `{"ids": [...]}`, at most `MAX_SIGNATURE_IDS` →
  `{"signatures": {id: base64}}`): the delta signature of each block this namespace can read;
  the others (unknown to the store, or another account's) are simply absent.
- `blocks/put_delta` (a body of `DELTA_FRAME`s: `[u32 delta length][32 bytes: new block id]
  [32 bytes: base block id][delta]`, at most `MAX_DELTA_BLOCKS` (8), each delta 1 byte to 4 MiB →
  `{"received": n, "base_unknown": [new ids]}`): the server rebuilds each block from its base,
  checks it hashes to the new id and stores it as `blocks/put` would. A base this namespace
  cannot read is `base_unknown`, as one the store lacks (send that block whole). A malformed
  delta or one that rebuilds anything else fails the whole request with 400 and stores nothing.
`NativeClient.put_with_bases` does this and falls back to whole blocks for the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
from collections.abc import AsyncIterator, Iterable
from typing import Any

from .chunker import CDC, Chunk, Chunker, Chunking
from .hashing import BLOCK_WINDOW_BYTES

FRAME = struct.Struct(">I32s")
MAX_FRAME_BLOCK_BYTES = BLOCK_WINDOW_BYTES  # chunkers cut at most 4 MiB
MAX_PUT_BLOCKS = 10_000
MAX_HAS_IDS = 10_000
MAX_GET_BLOCKS = 1_000
MAX_COMMIT_ENTRIES = 1_000
MAX_LIST_PATHS = 1_000
MAX_DELTA_BLOCKS = 8  # per put_delta request: what the server holds rebuilt at once
MAX_SIGNATURE_IDS = 64
DELTA_FRAME = struct.Struct(">I32s32s")  # delta length, new block id, base block id


class FrameError(ValueError):
    """The frame stream is malformed (the sender's fault)."""


def frame_header(block_id: str, size: int) -> bytes:
    return FRAME.pack(size, bytes.fromhex(block_id))


def encode_frames(blocks: Iterable[tuple[str, bytes]]) -> bytes:
    """All frames in one buffer (small bodies and tests; `NativeClient` streams)."""
    out = bytearray()
    for bid, data in blocks:
        out += frame_header(bid, len(data))
        out += data
    return bytes(out)


async def read_frames(
    stream, max_blocks: int = MAX_PUT_BLOCKS, max_block_bytes: int = MAX_FRAME_BLOCK_BYTES
) -> AsyncIterator[tuple[str, bytes]]:
    """(block id, bytes) for every frame of `stream` (anything with `readexactly` / `read`),
    unverified: the caller hashes. `FrameError` on a malformed stream."""
    n = 0
    while True:
        try:
            head = await stream.readexactly(FRAME.size)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return  # a clean end between frames
            raise FrameError("the body ends inside a frame header") from None
        size, digest = FRAME.unpack(head)
        if size > max_block_bytes:
            raise FrameError(f"a block of {size} bytes (at most {max_block_bytes})")
        n += 1
        if n > max_blocks:
            raise FrameError(f"more than {max_blocks} blocks in one request")
        try:
            data = await stream.readexactly(size) if size else b""
        except asyncio.IncompleteReadError:
            raise FrameError("the body ends inside a block") from None
        yield digest.hex(), data


async def read_delta_frames(
    stream, max_frames: int = MAX_DELTA_BLOCKS, max_delta_bytes: int = MAX_FRAME_BLOCK_BYTES
) -> AsyncIterator[tuple[str, str, bytes]]:
    """(new block id, base block id, delta) for every `DELTA_FRAME` of `stream`, unverified.
    `FrameError` on a malformed stream, more than `max_frames` frames, or a delta over
    `max_delta_bytes` (a delta is never bigger than the block it stands for)."""
    n = 0
    while True:
        try:
            head = await stream.readexactly(DELTA_FRAME.size)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return
            raise FrameError("the body ends inside a frame header") from None
        size, new, base = DELTA_FRAME.unpack(head)
        if size == 0 or size > max_delta_bytes:
            raise FrameError(f"a delta of {size} bytes (1 to {max_delta_bytes})")
        n += 1
        if n > max_frames:
            raise FrameError(f"more than {max_frames} deltas in one request")
        try:
            data = await stream.readexactly(size)
        except asyncio.IncompleteReadError:
            raise FrameError("the body ends inside a delta") from None
        yield new.hex(), base.hex(), data


class NativeError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class NativeClient:
    """A small async client of the native protocol (benchmarks, tests, and an example for the
    sync client). `bytes_sent` / `bytes_received` count request / response bodies (frames and
    JSON alike; HTTP headers are not counted)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        chunking: Chunking = CDC,
        put_batch_bytes: int = 16 * 1024 * 1024,
        sends_in_flight: int = 2,
        timeout_s: float = 300.0,
        download_ahead_blocks: int = 8,
    ) -> None:
        import aiohttp

        from .malloc import tune_for_blocks

        tune_for_blocks()  # this process moves blocks: see `raftbox.blocks.malloc`
        self.base = base_url.rstrip("/")
        self.ssl = ssl_context
        self.chunking = chunking
        self.put_batch_bytes = put_batch_bytes
        self.sends_in_flight = sends_in_flight
        self.download_ahead_blocks = download_ahead_blocks
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )
        self.bytes_sent = 0
        self.bytes_received = 0
        self.deltas = True  # send changed blocks as deltas where the server can take them
        self.delta_blocks = 0  # blocks sent as deltas
        self.delta_saved_bytes = 0  # bytes those deltas saved against whole blocks

    async def aclose(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> NativeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def post_json(self, path: str, arg: Any) -> tuple[int, str, bytes]:
        """POST `arg` as JSON to `base + path`: (status, content type, body), bytes counted."""
        import json

        return await self._post(path, json.dumps(arg).encode(), "application/json")

    async def _post(self, path: str, body: bytes, ctype: str) -> tuple[int, str, bytes]:
        """POST `body` to `base + path`: (status, content type, body), bytes counted."""
        self.bytes_sent += len(body)
        async with self._http.post(
            f"{self.base}{path}", data=body, headers={"Content-Type": ctype}, ssl=self.ssl
        ) as r:
            raw = await r.read()
        self.bytes_received += len(raw)
        return r.status, r.content_type, raw

    async def _rpc(self, route: str, arg: Any) -> Any:
        import json

        status, ctype, raw = await self.post_json(f"/2/raftbox/{route}", arg)
        out = json.loads(raw) if ctype == "application/json" else raw.decode()
        if status != 200:
            raise NativeError(status, out)
        return out

    async def config(self) -> dict:
        return await self._rpc("blocks/config", None)

    async def has(self, ids: list[str]) -> set[str]:
        have: set[str] = set()
        for i in range(0, len(ids), MAX_HAS_IDS):
            have.update((await self._rpc("blocks/has", {"ids": ids[i : i + MAX_HAS_IDS]}))["have"])
        return have

    async def put(self, blocks: list[tuple[str, bytes]]) -> int:
        """Upload blocks (one request per `put_batch_bytes`); returns how many were received."""
        received = 0
        batch: list[tuple[str, bytes]] = []
        size = 0
        for bid, data in blocks:
            batch.append((bid, data))
            size += len(data)
            if size >= self.put_batch_bytes or len(batch) >= MAX_PUT_BLOCKS:
                received += await self._put_one(batch)
                batch, size = [], 0
        if batch:
            received += await self._put_one(batch)
        return received

    async def _put_one(self, batch: list[tuple[str, bytes]]) -> int:
        async def body() -> AsyncIterator[bytes]:
            for bid, data in batch:
                yield frame_header(bid, len(data))
                yield data

        size = sum(FRAME.size + len(d) for _, d in batch)
        self.bytes_sent += size
        async with self._http.post(
            f"{self.base}/2/raftbox/blocks/put",
            data=body(),
            # a declared length, not chunked encoding: aiohttp writes each chunk with its size
            # line through `writelines`, which asyncio's TLS transport joins (a copy of every
            # byte), and the server parses chunk lines
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            ssl=self.ssl,
        ) as r:
            raw = await r.read()
            self.bytes_received += len(raw)
            if r.status != 200:
                raise NativeError(r.status, raw.decode(errors="replace"))
            import json

            return int(json.loads(raw)["received"])

    async def signatures(self, ids: list[str]) -> dict[str, bytes]:
        """The delta signature (`raftbox.blocks.delta`) of each block this namespace can read;
        {} from a server without block deltas (which this client then stops asking)."""
        import base64

        out: dict[str, bytes] = {}
        for i in range(0, len(ids), MAX_SIGNATURE_IDS):
            try:
                r = await self._rpc("blocks/signatures", {"ids": ids[i : i + MAX_SIGNATURE_IDS]})
            except NativeError as e:
                if e.status in (400, 404):  # an older server: no deltas
                    self.deltas = False
                    return {}
                raise
            out.update((b, base64.b64decode(s)) for b, s in r["signatures"].items())
        return out

    async def put_deltas(self, deltas: list[tuple[str, str, bytes]]) -> tuple[int, set[str]]:
        """Send (new id, base id, delta)s, `MAX_DELTA_BLOCKS` per request: (how many blocks
        the server rebuilt and stored, the new ids whose base it does not know)."""
        import json

        received, unknown = 0, set()
        for i in range(0, len(deltas), MAX_DELTA_BLOCKS):
            part = deltas[i : i + MAX_DELTA_BLOCKS]
            body = b"".join(
                DELTA_FRAME.pack(len(d), bytes.fromhex(n), bytes.fromhex(b)) + d for n, b, d in part
            )
            status, _, raw = await self._post(
                "/2/raftbox/blocks/put_delta", body, "application/octet-stream"
            )
            if status != 200:
                raise NativeError(status, raw.decode(errors="replace"))
            ans = json.loads(raw)
            received += int(ans["received"])
            unknown.update(ans["base_unknown"])
        return received, unknown

    async def put_with_bases(self, blocks: list[tuple[str, bytes]], bases: dict[str, str]) -> int:
        """`put` the blocks, sending each one that has a base (`bases`: new id → the id of the
        block it most likely replaces, see `delta.pick_bases`) as a delta against it when the
        delta is worth it (`delta.worth_it`). Whatever cannot go as a delta — no signature (a
        base this namespace cannot read, or an older server), a delta not worth it, a base the
        server no longer knows, a rebuild the server refused — goes as a whole block. Returns
        how many blocks were received either way."""
        from . import delta as D

        bases = {n: b for n, b in bases.items() if n != b}
        todo = dict(blocks)
        received = 0
        if bases and self.deltas:
            sigs = await self.signatures(sorted({bases[n] for n in todo if n in bases}))

            def build() -> list[tuple[str, str, bytes]]:
                out = []
                for n, data in todo.items():
                    sig = sigs.get(bases.get(n, ""))
                    if sig is None:
                        continue
                    d = D.make_delta(sig, data, MAX_FRAME_BLOCK_BYTES)
                    if D.worth_it(len(d), len(data)):
                        out.append((n, bases[n], d))
                return out

            deltas = await asyncio.to_thread(build) if sigs else []
            if deltas:
                try:
                    got, unknown = await self.put_deltas(deltas)
                except NativeError as e:
                    if e.status != 400:  # 400: refused (a signature collision): whole blocks
                        raise
                else:
                    received += got
                    for n, _b, d in deltas:
                        if n not in unknown:
                            size = len(todo.pop(n))
                            self.delta_blocks += 1
                            self.delta_saved_bytes += size - len(d)
        if todo:
            received += await self.put(list(todo.items()))
        return received

    async def _frames(self, ids: list[str]) -> AsyncIterator[tuple[str, bytes]]:
        """The frames of `blocks/get` for `ids`, `MAX_GET_BLOCKS` per request, each checked to
        be the block asked for at its place, NOT yet checked against its bytes."""
        import json

        for i in range(0, len(ids), MAX_GET_BLOCKS):
            part = ids[i : i + MAX_GET_BLOCKS]
            body = json.dumps({"ids": part}).encode()
            self.bytes_sent += len(body)
            async with self._http.post(
                f"{self.base}/2/raftbox/blocks/get",
                data=body,
                headers={"Content-Type": "application/json"},
                ssl=self.ssl,
            ) as r:
                if r.status != 200:
                    raw = await r.read()
                    raise NativeError(r.status, raw.decode(errors="replace"))
                k = 0
                async for bid, data in read_frames(r.content, MAX_GET_BLOCKS):
                    if bid != part[k]:
                        raise FrameError(f"block {k}: not the block asked for")
                    k += 1
                    self.bytes_received += FRAME.size + len(data)
                    yield bid, data
                if k != len(part):
                    raise FrameError(f"{len(part) - k} blocks missing from the answer")

    async def get(self, ids: list[str]) -> AsyncIterator[tuple[str, bytes]]:
        """The blocks, verified, in the order asked. A big block is hashed in a worker thread,
        so the event loop goes on receiving (and decrypting) the next one meanwhile."""
        async for bid, data in self._frames(ids):
            if len(data) >= _THREAD_MIN_BYTES:
                ok = await asyncio.to_thread(_is_block, bid, data)
            else:
                ok = _is_block(bid, data)
            if not ok:
                raise FrameError(f"block {bid}: damaged (its bytes do not hash to its id)")
            yield bid, data

    async def commit_batch(self, entries: list[dict]) -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(entries), MAX_COMMIT_ENTRIES):
            r = await self._rpc("commit_batch", {"entries": entries[i : i + MAX_COMMIT_ENTRIES]})
            out.extend(r["entries"])
        return out

    async def upload(self, path: str, dest: str, mode: Any = "overwrite") -> dict:
        """Chunk the local file `path` (read straight into the chunker's buffer: `feed_from`)
        and send the blocks the server lacks for this namespace, `put_batch_bytes` at a time (the next batch is cut while up to `sends_in_flight` are
        asked about and sent), then commit it at `dest`. Memory: a few batches, whatever the
        file size."""
        ch = Chunker(self.chunking)
        blocks: list[list] = []
        seen: set[str] = set()
        with open(path, "rb", buffering=0) as f:

            def next_batch() -> tuple[list[Chunk], bool]:
                out: list[Chunk] = []
                n = 0
                while n < self.put_batch_bytes:  # read straight into the chunker's buffer
                    got, k = ch.feed_from(f.readinto, 4 * 1024 * 1024)
                    out.extend(got)
                    if not k:
                        out.extend(ch.finish())
                        return out, True
                    n += k
                return out, False

            slots = asyncio.Semaphore(self.sends_in_flight)

            async def send(chunks: list[Chunk]) -> None:
                try:
                    await self._send_missing(chunks)
                finally:
                    slots.release()

            async with asyncio.TaskGroup() as tg:
                done = False
                while not done:
                    # the next batch is cut while up to `sends_in_flight` are sent: reading and
                    # hashing overlap the network (memory: sends_in_flight + 1 batches)
                    batch, done = await asyncio.to_thread(next_batch)
                    await slots.acquire()
                    blocks.extend([c.id, c.size] for c in batch)
                    new = []
                    for c in batch:
                        if c.id not in seen:
                            seen.add(c.id)
                            new.append(c)
                    tg.create_task(send(new))
        entry = {
            "path": dest,
            "blocks": blocks,
            "size": ch.size,
            "content_hash": ch.content_hash(),
            "mode": mode,
        }
        (result,) = await self.commit_batch([entry])
        if result.get(".tag") != "success":
            raise NativeError(409, result)
        return result

    async def _send_missing(self, chunks: list[Chunk]) -> None:
        if not chunks:
            return
        have = await self.has([c.id for c in chunks])
        await self.put([(c.id, c.data) for c in chunks if c.id not in have])

    async def blocks_of(self, path: str) -> tuple[dict, list[tuple[str, int]]]:
        """(file metadata, blocklist) of a file by path, "id:..." or "rev:..."."""
        r = await self._rpc("blocks/list", {"path": path})
        return r["metadata"], [(b, s) for b, s in r["blocks"]]

    async def blocks_of_many(
        self, paths: list[str]
    ) -> list[tuple[dict, list[tuple[str, int]]] | None]:
        """`blocks_of` for each path, in order, `MAX_LIST_PATHS` per request (one meta read
        each): None where there is no file (`not_found`, or a folder: `not_file`). Any other
        per-path error (a malformed path) raises `NativeError(409, that entry)`."""
        out: list[tuple[dict, list[tuple[str, int]]] | None] = []
        for i in range(0, len(paths), MAX_LIST_PATHS):
            r = await self._rpc("blocks/list", {"paths": paths[i : i + MAX_LIST_PATHS]})
            for e in r["entries"]:
                if "error" not in e:
                    out.append((e["metadata"], [(b, s) for b, s in e["blocks"]]))
                elif e["error"].get(".tag") in ("not_found", "not_file"):
                    out.append(None)
                else:
                    raise NativeError(409, e)
        return out

    async def download(self, path: str, out_path: str) -> dict:
        """Fetch the file at `path` into `out_path` (blocks verified); returns its metadata.

        A pipeline of two stages with a bounded queue between them: the event loop receives
        frames (TLS, HTTP, framing) while one worker thread at a time checks each block's hash
        and writes it, in file order; at most `download_ahead_blocks` blocks wait between the
        two (memory: that many blocks, at most 4 MiB each). A damaged block stops the download
        before its bytes are written."""
        meta, blocks = await self.blocks_of(path)
        ahead: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(self.download_ahead_blocks)
        with open(out_path, "wb", buffering=0) as f:

            def check_and_write(bid: str, data: bytes) -> None:
                if not _is_block(bid, data):
                    raise FrameError(f"block {bid}: damaged (its bytes do not hash to its id)")
                mv = memoryview(data)
                while mv:
                    mv = mv[f.write(mv) :]

            async def writer() -> None:
                while (item := await ahead.get()) is not None:
                    await asyncio.to_thread(check_and_write, *item)

            async def receiver() -> None:
                async for item in self._frames([b for b, _ in blocks]):
                    await ahead.put(item)
                await ahead.put(None)

            try:  # a failing stage stops the other (the TaskGroup cancels it)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(writer())
                    tg.create_task(receiver())
            except BaseExceptionGroup as eg:  # the first failure, as the caller knows it
                e: BaseException = eg
                while isinstance(e, BaseExceptionGroup):
                    e = e.exceptions[0]
                raise e from None
        return meta


_THREAD_MIN_BYTES = 64 * 1024  # below this, hashing in the loop costs less than a thread hop


def _is_block(block_id: str, data: bytes) -> bool:
    return hashlib.sha256(data).hexdigest() == block_id
