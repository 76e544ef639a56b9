"""A route's arguments: reading them from the request and checking the paths among them.

Shared by every route module (`http`, `content`, `native`, `accounts`); holds no state.

- `load_json` and `Args`: an argument's JSON, strictly parsed, and typed access to its fields;
- `rpc_args(request, route)`: an rpc route's JSON body (at most `RPC_BODY_MAX_BYTES`; empty is
  Void; Content-Type `application/json`, `text/plain` or none);
- `header_args(request, route)`: a content route's `Dropbox-API-Arg` header (or `arg` URL
  parameter), ASCII, at most `ARG_HEADER_MAX_BYTES`;
- `path_arg(a, name, pattern)`: a path argument matching the route's stone pattern
  (`WRITE_PATH`, `READ_PATH`, `LIST_PATH`), its empty components dropped as Dropbox drops them
  (`raftbox.meta.paths.as_dropbox_parses`: rclone sends `"//dir"` on a root remote);
- `ns_path(who, path, prefix)`: the path checked (`raftbox.meta.paths`) and `ns:N/...` mapped onto
  the caller's own namespace (`raftbox.api.spaces` resolves across mount points).

Arguments (`load_json`): strict JSON — a JSON body or `Dropbox-API-Arg` that is not UTF-8, uses
NaN/Infinity (not JSON), nests deeper than `ARG_DEPTH_MAX`, or holds an integer of more digits
than Python parses is a 400. `Dropbox-API-Arg` must be ASCII (non-ASCII characters are sent as
`\\uXXXX` escapes, as every SDK does; HTTP gives raw header bytes no charset). Strings read with
`Args.str` must be valid Unicode (no lone surrogate); path strings are checked by the path rules
instead (`raftbox.meta.paths`: `malformed_path`). Integers are at most `values.INT_ARG_MAX`
unless a route says less; timestamps must lie in the range of `raftbox.meta.values`.

Each raises `BadInput` (400: the request cannot be parsed) or `ApiError` with `prefix` +
`malformed_path` / `not_found` (409), before anything is read or written.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from raftbox.meta import paths as P
from raftbox.meta import values

from .errors import ApiError, BadInput

WRITE_PATH = re.compile(r"^((/(.|[\r\n])*)|(ns:[0-9]+(/(.|[\r\n])*)?)|(id:.*))$", re.S)
READ_PATH = re.compile(
    r"^((/(.|[\r\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/(.|[\r\n])*)?))$", re.S
)
LIST_PATH = re.compile(r"^((/(.|[\r\n])*)?|id:.*|(ns:[0-9]+(/(.|[\r\n])*)?))$", re.S)
ARG_HEADER_MAX_BYTES = 64 * 1024
RPC_BODY_MAX_BYTES = 4 * 1024 * 1024
REV_RE = re.compile(r"^[0-9a-f]{9,}$")
ARG_DEPTH_MAX = 32  # the deepest argument of the subset nests 4 levels


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


def parse_ts(route: str, field: str, value: Any) -> str:
    """A storable timestamp (`raftbox.meta.values.timestamp_problem`), else `BadInput`."""
    why = values.timestamp_problem(value)
    if why is not None:
        raise BadInput(route, f"{field}: {why}")
    return value


async def rpc_args(request: web.Request, route: str) -> Args:
    if (request.content_length or 0) > RPC_BODY_MAX_BYTES:  # refused before reading
        raise BadInput(route, f"request body: over {RPC_BODY_MAX_BYTES} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # the caller's fault: 400, not a 500 to retry
        raise BadInput(route, f"request body: over {RPC_BODY_MAX_BYTES} bytes") from None
    if not raw.strip():
        return Args(route, None)
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
    if ctype and ctype not in ("application/json", "text/plain"):
        raise BadInput(route, f'Bad HTTP "Content-Type" header: "{ctype}".')
    return Args(route, load_json(route, raw, "request body"))


def header_args(request: web.Request, route: str) -> Args:
    raw = request.headers.get("Dropbox-API-Arg")
    if raw is None:
        raw = request.query.get("arg")
    if raw is None:
        raise BadInput(route, 'Must provide HTTP header "Dropbox-API-Arg" or URL parameter "arg".')
    if len(raw) > ARG_HEADER_MAX_BYTES:
        raise BadInput(route, "Dropbox-API-Arg is too large")
    if "Dropbox-API-Arg" in request.headers and not raw.isascii():
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: any byte >= 0x80
        raise BadInput(
            route,
            'HTTP header "Dropbox-API-Arg": could not decode input as JSON (non-ASCII '
            "characters must be sent as \\uXXXX escapes)",
        )
    return Args(route, load_json(route, raw, 'HTTP header "Dropbox-API-Arg"'))


def path_arg(a: Args, name: str, pattern: re.Pattern, required: bool = True, default=None) -> str:
    p = a.str(name, default=default, required=required, path=True)
    if p is None:
        return p
    if not pattern.match(p):
        raise BadInput(a.route, f"{name}: {p[:200]!r} did not match pattern")
    return P.as_dropbox_parses(p)


def ns_path(who: Any, path: str, tags_prefix: list[str], write: bool = False) -> str:
    """Map 'ns:N/...' onto the account's own namespace; anything else passes through.
    The path is checked first (`raftbox.meta.paths`; a new path's depth too if `write`):
    `tags_prefix + ["malformed_path"]` if it is not one, before any lookup."""
    path = P.as_dropbox_parses(path)
    try:
        ref = P.parse_ref(path, allow_root=True, allow_rev=True)
        why = P.depth_problem(ref.path) if write and ref.path is not None else None
    except P.MalformedPath as e:
        why = str(e)
    if why is not None:
        raise ApiError(tags_prefix + ["malformed_path"])
    if path.startswith("ns:"):
        head, _, rest = path[3:].partition("/")
        if not head.isdigit() or int(head) != who.namespace_id:
            raise ApiError(tags_prefix + ["not_found"])
        return "/" + rest if rest else ""
    return path
