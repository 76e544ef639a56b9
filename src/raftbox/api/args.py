"""A route's arguments: reading them from the request and checking the paths among them.

Shared by every route module (`http`, `content`, `native`, `accounts`); holds no state.

- `rpc_args(request, route)`: an rpc route's JSON body (at most `RPC_BODY_MAX_BYTES`; empty is
  Void; Content-Type `application/json`, `text/plain` or none);
- `header_args(request, route)`: a content route's `Dropbox-API-Arg` header (or `arg` URL
  parameter), ASCII, at most `ARG_HEADER_MAX_BYTES`;
- `path_arg(a, name, pattern)`: a path argument matching the route's stone pattern
  (`WRITE_PATH`, `READ_PATH`, `LIST_PATH`);
- `ns_path(who, path, prefix)`: the path checked (`raftbox.meta.paths`) and `ns:N/...` mapped onto
  the caller's own namespace; `resolve_write_path` also turns `id:...` into the item's path.

Each raises `BadInput` (400: the request cannot be parsed) or `ApiError` with `prefix` +
`malformed_path` / `not_found` (409), before anything is read or written.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta import paths as P

from . import wire
from .wire import ApiError, Args, BadInput

WRITE_PATH = re.compile(r"^((/(.|[\r\n])*)|(ns:[0-9]+(/(.|[\r\n])*)?)|(id:.*))$", re.S)
READ_PATH = re.compile(
    r"^((/(.|[\r\n])*|id:.*)|(rev:[0-9a-f]{9,})|(ns:[0-9]+(/(.|[\r\n])*)?))$", re.S
)
LIST_PATH = re.compile(r"^((/(.|[\r\n])*)?|id:.*|(ns:[0-9]+(/(.|[\r\n])*)?))$", re.S)
ARG_HEADER_MAX_BYTES = 64 * 1024
RPC_BODY_MAX_BYTES = 4 * 1024 * 1024


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
    return Args(route, wire.load_json(route, raw, "request body"))


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
    return Args(route, wire.load_json(route, raw, 'HTTP header "Dropbox-API-Arg"'))


def path_arg(a: Args, name: str, pattern: re.Pattern, required: bool = True, default=None) -> str:
    p = a.str(name, default=default, required=required, path=True)
    if p is None:
        return p
    if not pattern.match(p):
        raise BadInput(a.route, f"{name}: {p[:200]!r} did not match pattern")
    return p


def ns_path(who: Any, path: str, tags_prefix: list[str], write: bool = False) -> str:
    """Map 'ns:N/...' onto the account's own namespace; anything else passes through.
    The path is checked first (`raftbox.meta.paths`; a new path's depth too if `write`):
    `tags_prefix + ["malformed_path"]` if it is not one, before any lookup."""
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


async def resolve_write_path(mc: Any, who: Any, path: str, tags_prefix: list[str]) -> str:
    """id:… on a write route → the item's current path (`mc`: a `MetaClient`)."""
    path = ns_path(who, path, tags_prefix, write=True)
    if path.startswith("id:"):
        m = await mc.query("resolve", who.namespace_id, path)
        if isinstance(m, C.MetaError):
            raise ApiError(tags_prefix + ["not_found"])
        return m.path_display
    return path
