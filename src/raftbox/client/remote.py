"""The sync client's view of the server: one async HTTP session for every route it uses.

`Remote` is a `NativeClient` (blocks/has, put, get, list, commit_batch: the block-level routes
that make uploads send only missing blocks and downloads fetch only blocks not found locally)
plus the few Dropbox API v2 routes a sync pass needs (list_folder and continue, create_folder_v2,
delete_v2 with parent_rev, move_v2, get_metadata, the account) and the push stream. Errors:

- `RemoteError(route, status, summary, body)` for an answer that is not 200 — `summary` is the
  Dropbox `error_summary` (`path/not_found/..`, `path/conflict/file/..`), so callers branch on
  it with `is_tag`;
- `ServerUnavailable` for what a retry may cure (no connection, 5xx, 429). A pass that meets it
  stops; the next pass re-plans from fresh trees, so nothing needs undoing.

`remote_node(metadata)` turns a Dropbox metadata object into a `trees.Node` (symlinks from
`symlink_info`, the executable bit from raftbox's `executable` field, client_modified as mtime,
clamped to what this client can hold: `limits.clamp_mtime_ns`). It checks the types of what it
reads and raises `ValueError`/`TypeError`/`MalformedPath` for what this client cannot represent;
no value a server sends can stop a pass (issue 11).

`refresh_remote(index, remote)` brings the remote tree kept in the index up to date: a full
recursive listing the first time (or after the server resets the cursor), then only the deltas
of `list_folder/continue` from the stored cursor. Returns the tree and the cursor, which is also
what the push stream watches. Entries this client cannot represent (a name the server's own rules
refuse, metadata of the wrong type) are not in the tree: they are recorded in the index's `held`
table with the reason (`Held`), and the engine keeps them (and whatever this side has at their
path) out of the plan, and reports them. An entry that turns good again leaves the table.
"""

from __future__ import annotations

import calendar
import datetime
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from raftbox.blocks.native import NativeClient, NativeError
from raftbox.meta.paths import MalformedPath, component_key

from .index import Index, rooted
from .limits import INT64_MAX, clamp_mtime_ns, clamp_sent_s
from .trees import Kind, Node, Tree, ancestor_keys, path_key

STREAM_PATH = "/2/raftbox/notify/stream"
CURSOR_STATE = "remote_cursor"


class RemoteError(Exception):
    def __init__(self, route: str, status: int, summary: str, body: Any = None) -> None:
        super().__init__(f"{route}: {summary}")
        self.route, self.status, self.summary, self.body = route, status, summary, body

    def is_tag(self, prefix: str) -> bool:
        return self.summary.startswith(prefix)


class ServerUnavailable(Exception):
    """The server could not be reached or answered 5xx/429: try again later."""


def parse_ts_ns(s: object) -> int | None:
    """A Dropbox timestamp ("2024-05-01T12:00:00Z") as nanoseconds since the epoch, clamped to
    what this client holds (`limits.clamp_mtime_ns`: year 9999 becomes 2262-04-11); None if it
    is not a timestamp."""
    if not s or not isinstance(s, str):
        return None
    m = _TS.fullmatch(s)
    if m is not None:  # the form servers send: 6x faster than strptime (a listing of 100,000)
        try:
            t = datetime.datetime(*map(int, m.groups()), tzinfo=datetime.UTC)
            return clamp_mtime_ns(int(t.timestamp()) * 1_000_000_000)
        except (ValueError, OverflowError):
            pass  # e.g. a leap second, which strptime takes: let it decide
    try:
        return clamp_mtime_ns(
            calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000_000
        )
    except (ValueError, OverflowError):
        return None


_TS = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def format_ts(mtime_ns: int | None) -> str:
    """`client_modified` for an upload, within what every server accepts (`limits.clamp_sent_s`)."""
    t = (mtime_ns if mtime_ns is not None else time.time_ns()) // 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clamp_sent_s(t)))


def _opt_str(m: dict[str, Any], field: str) -> str | None:
    v = m.get(field)
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{field} is not a string")
    return v


def _size(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= INT64_MAX:
        raise ValueError(f"size {str(v)[:40]} is not a size this client can hold")
    return v


def remote_node(m: dict[str, Any]) -> Node | None:
    """The node of a file or folder metadata object (None for `deleted` entries). Raises
    `MalformedPath`, `TypeError`, `ValueError` or `KeyError` for what it cannot represent."""
    tag = m.get(".tag")
    path = m["path_display"]
    if not isinstance(path, str):
        raise TypeError("path_display is not a string")
    name = m.get("name")
    if isinstance(name, str) and "/" in name:
        raise MalformedPath("a name cannot contain '/'")
    rid = _opt_str(m, "id")
    if tag == "folder":
        return Node(path, Kind.FOLDER, remote_id=rid)
    if tag != "file":
        return None
    rev = _opt_str(m, "rev")
    link = m.get("symlink_info")
    if link is not None:
        target = link["target"]
        if not isinstance(target, str):
            raise TypeError("symlink target is not a string")
        return Node(path, Kind.SYMLINK, link_target=target, size=_size(m.get("size", 0)),
                    mtime_ns=parse_ts_ns(m.get("client_modified")), remote_id=rid,
                    rev=rev)  # fmt: skip
    content_hash = m["content_hash"]
    if not isinstance(content_hash, str):
        raise TypeError("content_hash is not a string")
    return Node(path, Kind.FILE, content_hash=content_hash, size=_size(m["size"]),
                mtime_ns=parse_ts_ns(m.get("client_modified")),
                executable=bool(m.get("executable", False)), remote_id=rid,
                rev=rev)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Held:
    """A server entry this client cannot represent: its key (`held_key`), path, and why."""

    key: str
    path: str
    why: str
    valid: bool  # the path is a valid one: held on every side, not only reported


def held_key(path: str) -> str:
    """The key of a display path, also for paths `path_key` refuses (each component keyed as
    a valid one would be, so a held entry lies in its folder's key range)."""
    try:
        return path_key(path)
    except MalformedPath:
        return "/".join(component_key(c) for c in path.split("/"))


def printable(path: str) -> str:
    """`path` fit for a terminal: control characters and lone surrogates escaped."""
    if path.isprintable():
        return path
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in path
    )


def _reason(e: Exception) -> str:
    if isinstance(e, MalformedPath):
        if "surrogate" in str(e):
            return "name from the server is not valid UTF-8"
        return f"name from the server not valid here: {e}"
    if isinstance(e, KeyError):
        return f"entry from the server lacks {e}"
    return f"entry from the server not readable here: {e}"


_decode = msgspec.json.Decoder().decode


class Remote(NativeClient):
    """`NativeClient` plus the Dropbox routes of a sync pass (see the module doc)."""

    def __init__(self, base_url: str, token: str, **kw: Any) -> None:
        super().__init__(base_url, token, **kw)
        self.token = token

    async def api(self, route: str, arg: Any = None) -> dict[str, Any]:
        """One Dropbox RPC route (JSON in, JSON out)."""
        try:
            status, _ctype, raw = await self.post_json(f"/2/{route}", arg)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise ServerUnavailable(f"{route}: cannot reach {self.base}: {type(e).__name__}") from e
        if status == 200:
            if not raw:
                return {}
            try:  # msgspec: 2x faster than json for a listing page; what it refuses, json takes
                return _decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                pass  # bytes that are not UTF-8 become lone surrogates: names to hold
            return json.loads(raw.decode("utf-8", "surrogateescape"))
        if status >= 500 or status == 429:
            raise ServerUnavailable(f"{route}: HTTP {status}")
        summary, parsed = f"HTTP {status}", None
        try:
            parsed = json.loads(raw)
            summary = parsed.get("error_summary") or summary
        except ValueError:
            if raw.strip():
                summary += ": " + raw.decode(errors="replace").strip().splitlines()[0][:200]
        if status == 401:
            summary = f"unauthorized ({summary}): check the token (raftbox login)"
        raise RemoteError(route, status, summary, parsed)

    async def native(self, coro_fn: Any, *args: Any) -> Any:
        """Call a NativeClient method, mapping its failures onto this module's errors."""
        try:
            return await coro_fn(*args)
        except NativeError as e:
            if e.status >= 500 or e.status == 429:
                raise ServerUnavailable(f"native: HTTP {e.status}") from e
            raise RemoteError("native", e.status, str(e.body)[:300], e.body) from e
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise ServerUnavailable(f"cannot reach {self.base}: {type(e).__name__}") from e

    async def blocklists(self, paths: list[str]) -> list[tuple[dict, list] | None]:
        """`(metadata, blocks)` of each path (None: not found), batched when the server can."""
        many = getattr(self, "blocks_of_many", None)
        if many is not None:
            return await many(paths)
        out: list[tuple[dict, list] | None] = []
        for p in paths:
            try:
                out.append(await self.blocks_of(p))
            except NativeError as e:
                if e.status != 409:
                    raise
                out.append(None)
        return out

    async def account(self) -> dict[str, Any]:
        return await self.api("users/get_current_account")

    async def stream(self, cursor: str) -> AsyncIterator[dict[str, Any]]:
        """The push stream's messages for one cursor (see `raftbox.notify.service`).

        The cursor is the credential; the stream is opened without the account's token (the
        route reads an Authorization header as a cluster peer's admin token). Frames are the
        typed `raftbox.notify.frames`, yielded as plain dicts (`{"op": ..., ...}`); one that does
        not decode raises `BadFrame` (the caller reconnects, as after any failure)."""
        from raftbox.notify import frames as F  # here: a one-shot `raftbox sync` never streams

        async with (
            aiohttp.ClientSession() as plain,
            plain.ws_connect(f"{self.base}{STREAM_PATH}", ssl=self.ssl, heartbeat=30.0) as ws,
        ):
            await ws.send_str(F.encode(F.Watch([F.WatchCursor(cursor)])))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    yield msgspec.to_builtins(F.decode_stream_down(msg.data))
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return


async def refresh_remote(index: Index, remote: Remote) -> tuple[Tree, str]:
    """Update the index's remote tree from the server (see the module doc)."""
    tree, cursor = await follow_remote(index, remote)
    return (index.load_remote() if tree is None else tree), cursor


async def follow_remote(index: Index, remote: Remote) -> tuple[Tree | None, str]:
    """`refresh_remote` without loading the tree from the index at the end: (the tree if a
    full listing made it anyway, else None; the cursor)."""
    cursor = index.get_state(CURSOR_STATE)
    if cursor is not None:
        try:
            return None, await _follow(index, remote, cursor)
        except RemoteError as e:
            if not e.is_tag("reset") and e.status != 409:
                raise
    res = await remote.api("files/list_folder", {"path": "", "recursive": True, "limit": 2000})
    nodes: dict[str, Node] = {}
    held: dict[str, Held] = {}
    while True:
        for op in _ops(res["entries"]):
            if isinstance(op, Node):
                nodes[op.key] = op
                held.pop(op.key, None)
            elif isinstance(op, Held):
                held[op.key] = op
            elif op in nodes:  # rare in a full listing: drop the subtree
                for k in [k for k in nodes if k == op or k.startswith(op + "/")]:
                    del nodes[k]
        if not res.get("has_more"):
            break
        res = await remote.api("files/list_folder/continue", {"cursor": res["cursor"]})
    tree = Tree(rooted(nodes))
    with index.batch():
        index.apply_remote(tree.values(), reset=True)
        index.held_reset((h.key, h.path, h.why, h.valid) for h in held.values())
        index.set_state(CURSOR_STATE, res["cursor"])
    return tree, res["cursor"]


async def _follow(index: Index, remote: Remote, cursor: str) -> str:
    while True:
        res = await remote.api("files/list_folder/continue", {"cursor": cursor})
        with index.batch():
            _apply_page(index, res["entries"])
            index.set_state(CURSOR_STATE, res["cursor"])
        cursor = res["cursor"]
        if not res.get("has_more"):
            return cursor


def _apply_page(index: Index, entries: list[dict[str, Any]]) -> None:
    """Apply one page of changes to the index's remote tree, in listing order, batched.

    Changes are gathered into one `apply_remote` (deletes first, then puts) for as long as that
    order gives the same result as the listing's: a delete that would remove a gathered put
    (its key or an ancestor's) flushes the batch first."""
    puts: list[Node] = []
    put_keys: set[str] = set()  # the gathered puts' keys and all their ancestors' keys
    gone: list[str] = []
    any_held = index.held_any()  # held entries are rare: no work per entry without them

    def flush() -> None:
        index.apply_remote(put=puts, delete=gone)
        puts.clear()
        put_keys.clear()
        gone.clear()

    for op in _ops(entries):
        if isinstance(op, Held):
            index.held_put(op.key, op.path, op.why, op.valid)
            any_held = True
            continue
        if any_held:  # the server's entry there now is readable, or gone
            index.held_forget(op.key if isinstance(op, Node) else op, subtree=isinstance(op, str))
        if isinstance(op, Node):
            if op.is_folder:
                # A page names each changed path once, in its current state: a folder deleted
                # (or moved away) and created again in one page arrives as a plain folder
                # entry. Its new id says the old children are gone (the ones it holds now are
                # in the page too: they were created).
                flush()
                was = index.remote_node(op.key)
                if was is not None and (not was.is_folder or was.remote_id != op.remote_id):
                    gone.append(op.key)
            puts.append(op)
            put_keys.add(op.key)
            put_keys.update(ancestor_keys(op.key))
        else:
            if op in put_keys:
                flush()
            gone.append(op)
    flush()


def _ops(entries: list[dict[str, Any]]) -> list[Node | str | Held]:
    """A listing's entries as tree operations, in order: a key to forget (with its subtree:
    a deleted entry, or a file replacing whatever was there), a node to record, or an entry to
    hold (`Held`: after forgetting what was at its key, if the key is a valid one)."""
    out: list[Node | str | Held] = []
    for m in entries:
        path = m.get("path_display") if isinstance(m, dict) else None
        if not isinstance(path, str):
            continue  # nothing to name, nothing it could stand for here
        try:
            n = remote_node(m)
            key = path_key(path) if n is None else n.key
        except (MalformedPath, KeyError, TypeError, ValueError) as e:
            # Not representable here: hold it (and what this side has there), never a crash.
            key = held_key(path)
            if m.get(".tag") == "deleted":
                out.append(key)  # a deleted entry with a name no client could hold
                continue
            try:
                out.append(path_key(path))
                valid = True
            except MalformedPath:
                valid = False
            out.append(Held(key, path, _reason(e), valid))
            continue
        if n is None or not n.is_folder:
            out.append(key)
        if n is not None:
            out.append(n)
    return out
