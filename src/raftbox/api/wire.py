"""Dropbox API v2 wire rules: JSON in, JSON out, exactly as the official SDKs expect.

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

Errors: `ApiError(status, tags, extra)` renders `{"error_summary": "a/b/..", "error": <nested
union>}`; the first tag is the route error's member. `BadInput` is a 400 with a plain-text body,
as Dropbox answers a request it cannot parse; its message may quote what the client sent, so it
is cut to `BAD_INPUT_QUOTE_CHARS` and rendered with `body_bytes()` (a lone surrogate the client
sent as `\\ud800` comes back escaped, never as an encoding error).

Arguments (`load_json`): strict JSON — a JSON body or `Dropbox-API-Arg` that is not UTF-8, uses
NaN/Infinity (not JSON), nests deeper than `ARG_DEPTH_MAX`, or holds an integer of more digits
than Python parses is a 400. `Dropbox-API-Arg` must be ASCII (non-ASCII characters are sent as
`\\uXXXX` escapes, as every SDK does; HTTP gives raw header bytes no charset). Strings read with
`Args.str` must be valid Unicode (no lone surrogate); path strings are checked by the path rules
instead (`raftbox.meta.paths`: `malformed_path`). Integers are at most `values.INT_ARG_MAX`
unless a route says less; timestamps must lie in the range of `raftbox.meta.values`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from aiohttp import web

from raftbox.meta import values

REV_RE = re.compile(r"^[0-9a-f]{9,}$")
TS_FORMAT = values.TS_FORMAT
ARG_DEPTH_MAX = 32  # the deepest argument of the subset nests 4 levels
BAD_INPUT_QUOTE_CHARS = 2000


def dumps(obj: Any) -> bytes:
    """JSON bytes, ASCII only (safe for headers too)."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def json_response(obj: Any, status: int = 200) -> web.Response:
    """`obj` as a JSON answer: `dumps`, Content-Type exactly `application/json`."""
    return web.Response(body=dumps(obj), status=status, content_type="application/json")


class BadInput(Exception):
    """HTTP 400: the request could not be understood (the caller's fault; don't retry)."""

    def __init__(self, route: str, message: str) -> None:
        if len(message) > BAD_INPUT_QUOTE_CHARS:
            message = message[:BAD_INPUT_QUOTE_CHARS] + "..."
        super().__init__(f'Error in call to API function "{route}": {message}')

    def body_bytes(self) -> bytes:
        """The text as UTF-8, whatever the client's text held (lone surrogates escaped)."""
        return str(self).encode("utf-8", "backslashreplace")


class AuthFailed(Exception):
    """HTTP 401 with a JSON body naming the AuthError tag."""

    def __init__(self, tag: str = "invalid_access_token") -> None:
        super().__init__(tag)
        self.tag = tag


class ApiError(Exception):
    """A route error (409 by default): `tags` walk down the nested error union."""

    def __init__(
        self, tags: list[str], extra: dict | None = None, status: int = 409, flat: bool = False
    ) -> None:
        super().__init__("/".join(tags))
        self.tags = list(tags)
        self.extra = extra or {}
        self.status = status
        self.flat = flat  # upload's UploadWriteFailed: `reason` struct instead of nesting

    def body(self) -> dict:
        return {"error_summary": "/".join(self.tags) + "/..", "error": union(self.tags, self.extra)}


class RateLimited(Exception):
    def __init__(self, retry_after_s: int, reason: str = "too_many_requests") -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.reason = reason


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


def parse_ts(route: str, field: str, value: Any) -> str:
    """A storable timestamp (`raftbox.meta.values.timestamp_problem`), else `BadInput`."""
    why = values.timestamp_problem(value)
    if why is not None:
        raise BadInput(route, f"{field}: {why}")
    return value


# -- JSON in ---------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(obj: Any) -> int:
    """How deep `obj` nests (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        if isinstance(o, list):
            deepest = max(deepest, d)
            if d <= ARG_DEPTH_MAX:
                stack.extend((v, d + 1) for v in o if isinstance(v, dict | list))
    return deepest


def load_json(route: str, raw: bytes | str, where: str) -> Any:
    """Strict JSON of a request argument (see the module docstring), or `BadInput`."""
    try:
        # Strict UTF-8: json.loads(bytes) would also take UTF-16/32, and surrogates encoded
        # as UTF-8 bytes ("surrogatepass").
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        obj = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        # RecursionError: nested past the interpreter's limit; ValueError includes integers
        # over sys.get_int_max_str_digits() and invalid UTF-8 (UnicodeDecodeError).
        raise BadInput(route, f"{where}: could not decode input as JSON") from None
    if _depth(obj) > ARG_DEPTH_MAX:
        raise BadInput(route, f"{where}: nested deeper than {ARG_DEPTH_MAX} levels")
    return obj


# -- argument helpers ------------------------------------------------------------------------
class Args:
    """Typed access to a JSON argument object, with stone defaults and clear 400s."""

    def __init__(self, route: str, obj: Any) -> None:
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise BadInput(route, "request body: expected an object")
        self.route = route
        self.obj = obj

    def _get(self, name: str, default: Any, required: bool) -> Any:
        if name not in self.obj or self.obj[name] is None:
            if required:
                raise BadInput(self.route, f"request body: missing required field '{name}'")
            return default
        return self.obj[name]

    def str(
        self, name: str, default: str | None = None, required: bool = False, path: bool = False
    ) -> Any:
        """A string; valid Unicode unless `path` (the path rules then answer malformed_path)."""
        v = self._get(name, default, required)
        if v is not None and not isinstance(v, str):
            raise BadInput(self.route, f"{name}: expected a string")
        if v is not None and not path and values.has_surrogate(v):
            raise BadInput(self.route, f"{name}: not valid Unicode (a lone surrogate)")
        return v

    def bool(self, name: str, default: bool = False) -> bool:
        v = self._get(name, default, False)
        if not isinstance(v, bool):
            raise BadInput(self.route, f"{name}: expected a boolean")
        return v

    def int(
        self,
        name: str,
        default: int | None = None,
        required: bool = False,
        lo: int = 0,
        hi: int = values.INT_ARG_MAX,
    ) -> Any:
        v = self._get(name, default, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadInput(self.route, f"{name}: expected an integer")
        if v < lo or v > hi:
            shown = v if abs(v) < 10**30 else "a number"  # not thousands of digits
            raise BadInput(self.route, f"{name}: {shown} is out of range [{lo}, {hi}]")
        return v

    def obj_(self, name: str, required: bool = False) -> Args | None:
        v = self._get(name, None, required)
        if v is None:
            return None
        return Args(self.route, v)

    def rev(self, name: str, required: bool = False) -> str | None:
        v = self.str(name, required=required)
        if v is not None and not REV_RE.match(v):
            raise BadInput(self.route, f"{name}: '{v}' did not match pattern '[0-9a-f]+' (min 9)")
        return v

    def tag(self, name: str, default: str) -> tuple[str, Any]:
        """A union member: "x" or {".tag": "x", "x": value}."""
        v = self._get(name, default, False)
        if isinstance(v, str):
            return v, None
        if isinstance(v, dict) and isinstance(v.get(".tag"), str):
            t = v[".tag"]
            return t, v.get(t)
        raise BadInput(self.route, f"{name}: expected a union value")


def write_mode(a: Args) -> tuple[str, str | None]:
    tag, value = a.tag("mode", "add")
    if tag in ("add", "overwrite"):
        return tag, None
    if tag == "update":
        if not isinstance(value, str) or not REV_RE.match(value):
            raise BadInput(a.route, "mode.update: expected a rev")
        return tag, value
    raise BadInput(a.route, f"mode: unknown tag '{tag}'")


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
