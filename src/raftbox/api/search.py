"""Search by name on the API: `files/search_v2` and `files/search/continue_v2`.

Routes (`SearchRoutes(meta, mc).routes()`, registered on a meta member's `ApiServer`, auth user):
`files/search_v2` takes Dropbox's `SearchV2Arg` — `query` (≤ 1000 characters, at least one
word), `options` (`SearchOptions`: `path`, `max_results` 1..1000 (100), `file_status`
active|deleted, `filename_only`, `file_extensions`, `file_categories`; `order_by` and
`account_id` are accepted and ignored), `match_field_options`/`include_highlights` (accepted; no
highlight spans are returned) — and answers `SearchV2Result`: `matches` (each a `SearchMatchV2`:
`{"metadata": {".tag": "metadata", "metadata": <Metadata>}, "match_type": {".tag": "filename"}}`),
`has_more`, and `cursor` when `has_more`. `files/search/continue_v2` takes that cursor.

Shared folders: `options.path` resolves through `raftbox.api.spaces` (a path inside a mounted
shared folder searches that folder's namespace; another account's `ns:` is `path/not_found`).
A search of a home folder goes on, after the home namespace, in each shared folder mounted
below it (`search_legs`; the cursor carries the namespaces left), and every match's metadata
is in the caller's tree (`Target.json`: rebased under its mount point, with `sharing_info`).
A folder unmounted between two pages is not searched further.

What matches, in what order, and the bound on the work of one call: `raftbox.meta.search` (a
bounded scan in key order; a page may hold fewer than `max_results` matches while `has_more`).
Errors are `SearchError`'s: `path` (a LookupError: `not_found`, `not_folder`, `malformed_path`)
for `options.path`, `invalid_argument` (a string) for an empty query or a cursor that is not
this account's (forged, or another account's: cursors are signed with the cluster secret);
malformed JSON or a value of the wrong type is a 400.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta import paths
from raftbox.meta.search import FILE_CATEGORIES, SearchState, query_words
from raftbox.meta.service import CursorInvalid, MetaService
from raftbox.meta.sharing import mounts_below

from . import spaces
from .args import LIST_PATH, Args, path_arg, rpc_args
from .errors import ApiError, BadInput, raise_meta
from .wire import json_response

QUERY_MAX_CHARS = 1000
MAX_RESULTS_MAX = 1000
EXTENSIONS_MAX = 100
EXTENSION_MAX_CHARS = 64
CURSOR_MAX_CHARS = 64 * 1024  # the largest search (query, 100 extensions) signs to ~20 KiB
_CURSOR_KIND = "search"
LEGS_PER_CALL = 8  # namespaces (home, then mounted shared folders) one call may scan


def _invalid(why: str) -> ApiError:
    return ApiError(["invalid_argument"], {"invalid_argument": why})


class SearchRoutes:
    def __init__(self, meta: MetaService, mc: Any) -> None:
        self.meta = meta
        self.mc = mc  # a `MetaClient`: where an `id:` path lives (`spaces.resolve`)

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("files/search_v2", "user", self.search_v2),
            ("files/search/continue_v2", "user", self.search_continue_v2),
        ]

    async def search_v2(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/search_v2")
        query = a.str("query", required=True)
        if len(query) > QUERY_MAX_CHARS:
            raise BadInput(a.route, f"query: longer than {QUERY_MAX_CHARS} characters")
        a.obj_("match_field_options")  # accepted (no highlights)
        a.bool("include_highlights")
        opts = a.obj_("options") or Args(a.route, {})
        path = path_arg(opts, "path", LIST_PATH, required=False, default="")
        t = await spaces.resolve(self.mc, who, path, ["path"])  # in a mounted folder too
        max_results = opts.int("max_results", default=100, lo=1, hi=MAX_RESULTS_MAX)
        status, _ = opts.tag("file_status", "active")
        if status not in ("active", "deleted"):
            raise BadInput(a.route, f"file_status: unknown tag '{status}'")
        opts.bool("filename_only")
        order, _ = opts.tag("order_by", "relevance")
        if order not in ("relevance", "last_modified_time"):
            raise BadInput(a.route, f"order_by: unknown tag '{order}'")
        opts.str("account_id")
        extensions = _extensions(opts)
        categories = _categories(opts)
        words = query_words(query)
        if not words:
            raise _invalid("the query has no words")

        def run(s: Any) -> Any:
            key = s.folder_key(t.ns, t.path)
            if isinstance(key, C.MetaError):
                return key
            st = SearchState(words, key, status == "deleted", max_results, extensions, categories)
            rest = []  # a search of the home tree goes on in the shared folders mounted below
            if t.ns == who.namespace_id:
                rest = [[m.ns, ""] for m in mounts_below(who.mounts, key)]
            return search_legs(s, who, t.ns, st, rest)

        matches, nxt = raise_meta(await self.meta.read(run))
        return self._answer(who, matches, nxt)

    async def search_continue_v2(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/search/continue_v2")
        cursor = a.str("cursor", required=True)
        if not cursor or len(cursor) > CURSOR_MAX_CHARS:
            raise BadInput(a.route, "cursor: not a search cursor")
        left = self._open(who, cursor)
        if left is None:  # what was left to search is no longer the caller's
            return self._answer(who, [], None)
        cur, st, rest = left
        matches, nxt = await self.meta.read(lambda s: search_legs(s, who, cur, st, rest))
        return self._answer(who, matches, nxt)

    def _open(self, who: Any, cursor: str) -> tuple[int, SearchState, list] | None:
        """(the namespace being searched, the search, the namespaces left) of a cursor; None
        if none of them is readable by `who` any more."""
        try:
            kind, account_id, ns, raw, *legs = self.meta.open_cursor(cursor)
            st = msgspec.convert(raw, SearchState)
            cur, rest = ns, []  # a cursor made before shared folders: the home namespace
            if legs:
                cur, rest = msgspec.convert(legs, tuple[int, list[tuple[int, str]]])
        except (CursorInvalid, ValueError, TypeError, msgspec.ValidationError):
            raise _invalid("not a search cursor of this account") from None
        if kind != _CURSOR_KIND or account_id != who.account_id or ns != who.namespace_id:
            raise _invalid("not a search cursor of this account")
        readable = who.readable()  # a folder unmounted since is searched no more
        rest = [[n, k] for n, k in rest if n in readable]
        if cur not in readable:
            if not rest:
                return None
            (cur, key), rest = rest[0], rest[1:]
            st = msgspec.structs.replace(st, prefix_key=key, after_key=None)
        return cur, st, rest

    def _answer(self, who: Any, matches: list, nxt: Any) -> web.Response:
        body: dict[str, Any] = {
            "matches": [
                {
                    "metadata": {".tag": "metadata", "metadata": _shown(who, ns, m)},
                    "match_type": {".tag": "filename"},
                }
                for ns, m in matches
            ],
            "has_more": nxt is not None,
        }
        if nxt is not None:
            cur, st, rest = nxt
            body["cursor"] = self.meta.sign_cursor(
                [_CURSOR_KIND, who.account_id, who.namespace_id, st, cur, rest]
            )
        return json_response(body)


def search_legs(s: Any, who: Any, cur: int, st: SearchState, rest: list) -> Any:
    """One call's matches `[(ns, meta)]` and what is left (`(ns, state, rest)`, or None: done):
    the search of namespace `cur` from `st`, then of each `[ns, prefix_key]` of `rest` in
    order (the shared folders mounted in the searched folder), at most `st.max_results`
    matches and `LEGS_PER_CALL` namespaces in one call (each a bounded scan)."""
    out: list = []
    for _ in range(LEGS_PER_CALL):
        budget = st.max_results - len(out)
        if budget <= 0:
            return out, (cur, st, rest)
        page = s.search(cur, msgspec.structs.replace(st, max_results=budget))
        out += [(cur, m) for m in page.matches]
        if page.after_key is not None:
            return out, (cur, msgspec.structs.replace(st, after_key=page.after_key), rest)
        if not rest:
            return out, None
        (cur, key), rest = rest[0], rest[1:]
        st = msgspec.structs.replace(st, prefix_key=key, after_key=None)
    return out, (cur, st, rest)


def _shown(who: Any, ns: int, m: Any) -> dict:
    """A match's metadata in `who`'s tree (rebased under its mount point, with sharing_info)."""
    mount = who.mount_of_ns(ns) if ns != who.namespace_id else None
    if mount is None:
        return spaces.meta_json(who, m, True, None)
    return spaces.meta_json(who, spaces.rebase(m, mount), True, mount)


def _extensions(opts: Args) -> list[str] | None:
    v = opts.obj.get("file_extensions")
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise BadInput(opts.route, "file_extensions: expected a list of strings")
    if len(v) > EXTENSIONS_MAX:
        raise BadInput(opts.route, f"file_extensions: at most {EXTENSIONS_MAX}")
    out = []
    for x in v:
        e = Args(opts.route, {"e": x}).str("e").strip().lstrip(".")
        if len(e) > EXTENSION_MAX_CHARS:
            raise BadInput(opts.route, f"file_extensions: over {EXTENSION_MAX_CHARS} characters")
        out.append(paths.component_key(e))
    return out


def _categories(opts: Args) -> list[str] | None:
    v = opts.obj.get("file_categories")
    if v is None:
        return None
    if not isinstance(v, list):
        raise BadInput(opts.route, "file_categories: expected a list")
    out = []
    for x in v:
        tag, _ = Args(opts.route, {"c": x}).tag("c", "")
        if tag not in FILE_CATEGORIES:
            raise BadInput(opts.route, f"file_categories: unknown tag {tag[:50]!r}")
        out.append(tag)
    return out
