"""Dropbox API v2 wire rules: the JSON the API answers, exactly as the official SDKs expect.

Every rule here was verified against the real Python SDK (see DROPBOX_API.md §4); each one
breaks it if missed:

- JSON responses are bytes with Content-Type exactly `application/json` (no charset).
- A Void result is the body `null`.
- `Dropbox-API-Result` is ASCII JSON (`\\uXXXX` escapes).
- Unions: a Void member is `{".tag": "x"}` (clients may send the shorthand `"x"`); a member whose
  value is a union or primitive nests (`{".tag": "path", "path": {...}}`); a member whose value
  is a struct is flattened next to its tag.
- `.tag` is present where the declared type is the polymorphic `Metadata`, absent where it is a
  concrete `FileMetadata` (and must be absent inside a flattened union member).
- Timestamps `%Y-%m-%dT%H:%M:%SZ`; revs `[0-9a-f]{9,}`; account ids 40 characters.

File attributes (`raftbox.meta.commands.CommitFile`): a symlink's FileMetadata carries
Dropbox's own `"symlink_info": {"target": "..."}`; an executable file carries raftbox's extension
field `"executable": true`, present only when true (the SDKs ignore fields they do not know).

Error bodies: `union(tags, extra)` nests a route error's tags as stone unions; the errors
themselves and their statuses are `raftbox.api.errors`. Reading arguments (JSON in) is
`raftbox.api.args`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web

from raftbox.meta import values

TS_FORMAT = values.TS_FORMAT


def dumps(obj: Any) -> bytes:
    """JSON bytes, ASCII only (safe for headers too)."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def json_response(obj: Any, status: int = 200) -> web.Response:
    """`obj` as a JSON answer: `dumps`, Content-Type exactly `application/json`."""
    return web.Response(body=dumps(obj), status=status, content_type="application/json")


def union(tags: list[str], extra: dict | None = None) -> dict:
    """Nest tags as stone unions: ["path","conflict","file"] →
    {".tag":"path","path":{".tag":"conflict","conflict":{".tag":"file"}}}; `extra` fields are
    flattened into the innermost member (a struct-valued member)."""
    inner: dict = {".tag": tags[-1], **(extra or {})}
    for tag in reversed(tags[:-1]):
        inner = {".tag": tag, tag: inner}
    return inner


def upload_write_failed(reason_tags: list[str], extra: dict | None = None) -> dict:
    """UploadError.path is the struct UploadWriteFailed{reason: WriteError, session id}."""
    return {
        ".tag": "path",
        "reason": union(reason_tags, extra),
        "upload_session_id": "",
    }


# -- timestamps ------------------------------------------------------------------------------
def ts_from_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime(TS_FORMAT)


# -- metadata --------------------------------------------------------------------------------
def metadata_json(m: Any, tagged: bool) -> dict:
    """FileMeta / FolderMeta / DeletedMeta (from raftbox.meta.commands) → Dropbox JSON."""
    kind = m.kind
    if kind == "file":
        d = {
            "name": m.name,
            "id": m.id,
            "path_lower": m.path_lower,
            "path_display": m.path_display,
            "client_modified": m.client_modified,
            "server_modified": m.server_modified,
            "rev": m.rev,
            "size": m.size,
            "is_downloadable": True,
            "content_hash": m.content_hash,
        }
        if m.symlink_target is not None:
            d["symlink_info"] = {"target": m.symlink_target}
        if m.executable:
            d["executable"] = True
    elif kind == "folder":
        d = {
            "name": m.name,
            "id": m.id,
            "path_lower": m.path_lower,
            "path_display": m.path_display,
        }
    else:
        d = {"name": m.name, "path_lower": m.path_lower, "path_display": m.path_display}
    if tagged:
        return {".tag": kind, **d}
    return d
