"""Hostile-input fuzz (issue 11): hypothesis-generated route arguments and headers, sent
through raw HTTP to a real `raftbox up`.

Every example starts from a valid argument of one route of the subset (the Dropbox routes and
the native ones) and mutates it: a field replaced by a value of the wrong type, a huge or odd
number (NaN, 1e400, 2**64), a string with lone surrogates, control characters or path tricks
("..", NUL, 300-byte names), deep nesting; a field dropped or added; or the whole argument
replaced. It is then encoded as JSON (escaped, as raw UTF-8, or as broken bytes) and sent in
the body, the `Dropbox-API-Arg` header or `?arg=`, with a generated `Authorization`,
`Content-Type` and `Range`. After each request:

- the answer is not a 5xx;
- the server's log has no traceback and no ERROR line;
- a refused request (4xx) changed nothing: the account's journal has no entry after the cursor
  taken before it.

Header values are one line each (no CR or LF) of under 8 KiB: longer lines are the protocol
layer's limits; control bytes in a header are sent (aiohttp's parser refuses them: a 400, logged
at INFO by `raftbox.api.http.ProtocolLog`).

Duration: `RAFTBOX_FUZZ_S` seconds (default 25; `make fuzz` runs minutes, FUZZ_S=...). The run
is made of hypothesis batches, each from a seed printed if it fails — replay one with
RAFTBOX_FUZZ_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from .badinput import BAD_LOG, Answer, Server

FUZZ_S = float(os.environ.get("RAFTBOX_FUZZ_S", "25"))
FUZZ_SEED = os.environ.get("RAFTBOX_FUZZ_SEED")
BATCH_EXAMPLES = 40
HEADER_MAX_BYTES = 6000  # under aiohttp's 8190-byte line limit, with room for the name


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("fuzz"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _valid_args(srv: Server) -> dict[str, tuple[str, Any]]:
    """route → ("rpc" | "content", a valid argument) for every route of the subset."""
    one = srv.upload("/keep/one.txt", b"one")
    srv.upload("/keep/two.txt", b"two")
    blocks = srv.ok("raftbox/blocks/list", {"path": "/keep/one.txt"})["blocks"]
    sid = srv.content("files/upload_session/start", {}, b"abc").json()["session_id"]
    cursor = srv.ok("files/list_folder", {"path": "", "recursive": True})["cursor"]
    cur = {"session_id": sid, "offset": 3}
    found = srv.ok("files/search_v2", {"query": "txt", "options": {"max_results": 1}})
    return {
        "users/get_current_account": ("rpc", None),
        "files/get_metadata": ("rpc", {"path": "/keep/one.txt", "include_deleted": False}),
        "files/list_folder": ("rpc", {"path": "", "recursive": True, "limit": 10}),
        "files/list_folder/continue": ("rpc", {"cursor": cursor}),
        "files/list_folder/get_latest_cursor": ("rpc", {"path": "/keep", "recursive": False}),
        "files/delete_v2": ("rpc", {"path": "/keep/two.txt", "parent_rev": one["rev"]}),
        "files/move_v2": (
            "rpc",
            {"from_path": "/keep/two.txt", "to_path": "/fz/m", "autorename": True},
        ),
        "files/copy_v2": ("rpc", {"from_path": one["id"], "to_path": "/fz/c"}),
        "files/create_folder_v2": ("rpc", {"path": "/fz/dir", "autorename": False}),
        "files/list_revisions": ("rpc", {"path": "/keep/one.txt", "mode": "path", "limit": 5}),
        # issue 15: space usage, quotas (admin), search, temporary links
        "users/get_space_usage": ("rpc", None),
        "raftbox/admin/set_quota": ("rpc", {"email": "fz@example.test", "quota_bytes": 5}),
        "files/search_v2": (
            "rpc",
            {
                "query": "one",
                "options": {
                    "path": "/keep",
                    "max_results": 2,
                    "file_status": "active",
                    "file_extensions": ["txt"],
                    "file_categories": [{".tag": "document"}],
                },
            },
        ),  # fmt: skip
        "files/search/continue_v2": ("rpc", {"cursor": found["cursor"]}),
        "files/get_temporary_link": ("rpc", {"path": "/keep/one.txt"}),
        "files/restore": ("rpc", {"path": "/keep/one.txt", "rev": one["rev"]}),
        "files/upload_session/finish_batch_v2": (
            "rpc",
            {"entries": [{"cursor": cur, "commit": {"path": "/fz/b", "mode": "add"}}]},
        ),
        "raftbox/blocks/config": ("rpc", None),
        "raftbox/blocks/has": ("rpc", {"ids": [blocks[0][0]]}),
        "raftbox/blocks/get": ("rpc", {"ids": [blocks[0][0]]}),
        "raftbox/blocks/list": ("rpc", {"paths": ["/keep/one.txt", "/nope"]}),
        "raftbox/commit_batch": (
            "rpc",
            {"entries": [{"path": "/fz/n", "blocks": blocks, "size": 3, "executable": True}]},
        ),
        "raftbox/blocks/put": ("rpc", None),  # a body of frames: JSON is garbage to it
        "raftbox/blocks/signatures": ("rpc", {"ids": [blocks[0][0]]}),
        "raftbox/blocks/put_delta": ("rpc", None),  # delta frames, as blocks/put
        "raftbox/admin/status": ("rpc", None),  # admin routes: a user token is a 401
        "raftbox/admin/create_account": ("rpc", {"email": "fz@example.test"}),
        "raftbox/internal/query": ("rpc", ["file_blocks", [1, "/keep/one.txt"]]),
        "raftbox/internal/write": ("rpc", None),
        "files/no_such_route": ("rpc", None),
        "files/upload": (
            "content",
            {
                "path": "/fz/u",
                "mode": {".tag": "update", "update": one["rev"]},
                "client_modified": "2024-01-01T00:00:00Z",
                "content_hash": None,
            },
        ),  # fmt: skip
        "files/download": ("content", {"path": "/keep/one.txt", "rev": one["rev"]}),
        "files/upload_session/start": ("content", {"close": False, "session_type": "sequential"}),
        "files/upload_session/append_v2": ("content", {"cursor": cur, "close": False}),
        "files/upload_session/finish": (
            "content",
            {"cursor": cur, "commit": {"path": "/fz/f", "client_modified": "2024-01-01T00:00:00Z"}},
        ),
    }


# -- strategies ---------------------------------------------------------------------------------

ODD_STRINGS = [
    "", "/", "//", "/a/../b", "/..", "/.", "/a/./b", "/trailing/", "/nul\x00", "/\ud800",
    "/\udfff/x", "\ud800", "id:", "id:\ud800", "id:x/y", "rev:", "rev:xyz", "rev:" + "f" * 500,
    "ns:", "ns:99999999999999999999999", "ns:1/\x01", "/" + "n" * 300, "/" + "é" * 200,
    "/" + "/d" * 400, "/\u202e", "/\ufeff", "/\U0001f600", "pid_upload_session:", "0" * 64,
    "A" * 64, "1970-01-01T00:00:00Z", "2263-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "0000-00-00T00:00:00Z", "2024-02-30T00:00:00Z", "NaN", "null", "{}", "[]", "\\", '"',
]  # fmt: skip
ODD_NUMBERS = [
    -1, 0, 1, 2**31, 2**53, 2**63, 2**64, -(2**63) - 1, 10**30, 10**400,
    float("nan"), float("inf"), float("-inf"), 1e400, 0.5, -0.0, 1e-320,
]  # fmt: skip

hostile_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40),
    st.text(st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=10),
    st.builds(lambda s: "/" + s, st.text(max_size=30)),
    st.builds(lambda n: "x" * n, st.integers(0, 5000)),
)
hostile_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(ODD_NUMBERS),
    st.integers(),
    st.floats(),
    hostile_text,
)


def _nest(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


hostile_value = st.one_of(
    hostile_scalar,
    st.lists(hostile_scalar, max_size=5),
    st.dictionaries(hostile_text, hostile_scalar, max_size=4),
    st.dictionaries(st.just(".tag"), hostile_text, min_size=1),
    st.builds(_nest, st.integers(10, 60), hostile_scalar, st.booleans()),
)


def _paths(obj: Any, at: tuple = ()) -> list[tuple]:
    """Every place in a JSON value (the value itself included)."""
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*at, i))
    return out


def _replace(obj: Any, at: tuple, value: Any, drop: bool) -> Any:
    if not at:
        return value
    head, rest = at[0], at[1:]
    if isinstance(obj, dict):
        obj = dict(obj)
        if drop and not rest:
            obj.pop(head, None)
        else:
            obj[head] = _replace(obj[head], rest, value, drop)
    else:
        obj = list(obj)
        if drop and not rest:
            obj.pop(head)
        else:
            obj[head] = _replace(obj[head], rest, value, drop)
    return obj


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    obj = base
    for _ in range(draw(st.integers(0, 3))):
        places = _paths(obj)
        at = draw(st.sampled_from(places))
        kind = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if kind == "add" and isinstance(obj, dict):
            obj = {**obj, draw(hostile_text): draw(hostile_value)}
        else:
            obj = _replace(obj, at, draw(hostile_value), drop=kind == "drop" and bool(at))
    return obj


def _encode(obj: Any, how: str) -> bytes:
    if how == "escaped":
        return json.dumps(obj).encode()  # NaN/Infinity as JSON's non-standard tokens
    raw = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how == "latin1":
        return raw.decode("utf-8", "surrogatepass").encode("latin-1", "replace")
    return raw


def _header_safe(b: bytes) -> bytes:
    """A header value that stays one header: no CR or LF (other control bytes are sent, and
    the HTTP parser refuses them with a 400)."""
    return b.replace(b"\r", b"?").replace(b"\n", b"?").strip()


def _mostly(common: Any, odd: st.SearchStrategy, percent: int = 75) -> st.SearchStrategy:
    """`common` `percent`% of the time, else a draw from `odd` (so that most requests carry
    a good token and a usual Content-Type, and reach the route's arguments)."""
    return st.integers(0, 99).flatmap(lambda n: st.just(common) if n < percent else odd)


AUTHS = _mostly(
    "good",
    st.one_of(
        st.sampled_from(["none", "garbage", "basic", "long", "bytes"]),
        st.builds(lambda b: b"Bearer " + b, st.binary(max_size=60)),  # generated bytes
    ),
)
CTYPES = _mostly(
    "application/json",
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [None, "text/plain", "application/octet-stream", "text/html",
             "application/json; charset=utf-8", "multipart/form-data; boundary=x", "\xe9"]
        ),
    ),
)  # fmt: skip
RANGES = st.one_of(
    st.none(),
    st.builds(lambda b: b"bytes=" + b, st.binary(max_size=40)),
    st.sampled_from(["bytes=0-0", "bytes=1-", "bytes=-2", "bytes=0-1,2-3", "bytes=x-y",
                     "bytes=" + "9" * 300 + "-", "bytes=-" + "9" * 300, "bytes=2-1", "bits=0-1"]),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-5, 2**70), st.integers(-5, 2**70)),
)  # fmt: skip


@st.composite
def requests_(draw: st.DrawFn, routes: dict[str, tuple[str, Any]]) -> dict:
    route = draw(st.sampled_from(sorted(routes)))
    kind, base = routes[route]
    arg = draw(st.one_of(st.just(base), mutated(base))) if base is not None else None
    if base is None and draw(st.booleans()):
        arg = draw(hostile_value)
    how = draw(st.sampled_from(["escaped", "escaped", "raw", "latin1"]))
    data = _encode(arg, how)
    if draw(st.integers(0, 9)) == 0:  # break the bytes: cut them, or slip a byte in
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"", b"\xff", b"\xc3", b"\x00", b"}"]))
    return {
        "route": route,
        "kind": kind,
        "data": data,
        "via_query": kind == "content" and draw(st.integers(0, 4)) == 0,
        "auth": draw(AUTHS),
        "ctype": draw(CTYPES),
        "range": draw(RANGES) if route == "files/download" else None,
        "body": draw(st.sampled_from([b"", b"abc", b"\x00" * 10, os.urandom(64)])),
    }


# -- the check ------------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.mark = srv.log_mark()
        self.cursor = srv.snapshot()[1]
        self.sent = 0
        self.statuses: dict[int, int] = {}

    def send(self, req: dict) -> Answer:
        srv = self.srv
        h: list[tuple[str, bytes | str]] = []
        token: str | None = None
        auth = req["auth"]
        if auth == "good":
            token = ""
        elif auth == "garbage":
            h.append(("Authorization", "Bearer not-a-token"))
        elif auth == "basic":
            h.append(("Authorization", "Basic dXNlcjpwYXNz"))
        elif auth == "long":
            h.append(("Authorization", "Bearer " + "t" * 4000))
        elif isinstance(auth, bytes):
            h.append(("Authorization", _header_safe(auth)))
        elif auth == "bytes":
            h.append(("Authorization", b"Bearer \xe9\xff"))
        ctype = req["ctype"]
        if ctype is not None:
            ctype = ctype if isinstance(ctype, bytes) else ctype.encode("utf-8")
            h.append(("Content-Type", _header_safe(ctype)))
        path = None
        body = req["data"]
        if req["kind"] == "content":
            arg = req["data"][:HEADER_MAX_BYTES]
            if req["via_query"]:
                path = f"/2/{req['route']}?arg=" + urllib.parse.quote_from_bytes(arg[:2000])
            else:
                h.append(("Dropbox-API-Arg", _header_safe(arg)))
            body = req["body"]
        rng = req["range"]
        if rng is not None:
            rng = rng if isinstance(rng, bytes) else rng.encode()
            h.append(("Range", _header_safe(rng)[:200]))
        r = srv.raw(req["route"], h, body, token=token, path=path)
        self.sent += 1
        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
        return r

    def check(self, req: dict) -> None:
        r = self.send(req)
        shown = {k: (v[:300] if isinstance(v, bytes | str) else v) for k, v in req.items()}
        assert r.status < 500, (r.status, r.text[:500], shown)
        log = self.srv.log_since(self.mark)
        bad = [ln for ln in log.splitlines() if BAD_LOG.search(ln)]
        assert not bad, ("server log:", bad[:10], shown, log[-3000:])
        if r.status >= 400:
            changes = self.srv.changes_since(self.cursor)
            assert changes == [], ("a refused request changed state", r.status, r.text, shown)
        else:
            self.cursor = self.srv.latest_cursor()


def test_hostile_input_fuzz(srv: Server) -> None:
    routes = _valid_args(srv)
    fz = Fuzzer(srv)
    strategy = requests_(routes)

    @settings(
        max_examples=BATCH_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(req=strategy)
    def one(req: dict) -> None:
        fz.check(req)

    deadline = time.monotonic() + FUZZ_S
    seeds = [int(FUZZ_SEED)] if FUZZ_SEED else None
    rng = random.Random()
    while seeds or (seeds is None and time.monotonic() < deadline):
        s = seeds.pop() if seeds else rng.randrange(2**32)
        try:
            seed(s)(one)()
        except BaseException:
            print(f"\nfuzz failed: replay with RAFTBOX_FUZZ_SEED={s}")
            raise
        if seeds == []:
            break
    print(f"\nfuzz: {fz.sent} requests, statuses {dict(sorted(fz.statuses.items()))}")
    assert fz.sent > 0
