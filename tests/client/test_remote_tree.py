"""The remote tree kept from listing pages (`remote._apply_page`) against applying every change
one by one to a dict, on random pages (hypothesis): batching must never change the result."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from raftbox.client.index import Index
from raftbox.client.limits import MTIME_MAX_NS
from raftbox.client.remote import Held, _apply_page, _ops
from raftbox.client.trees import Node

NAMES = ["a", "b", "c"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))


@st.composite
def entry(draw) -> dict:
    path = draw(paths)
    tag = draw(st.sampled_from(["file", "folder", "deleted"]))
    e = {".tag": tag, "path_display": path, "name": path.rsplit("/", 1)[1]}
    if tag == "file":
        e.update(
            id=f"id:{draw(st.integers(0, 3))}", rev="0123456789", size=1, content_hash="0" * 64
        )
    elif tag == "folder":
        e["id"] = f"id:{draw(st.integers(0, 3))}"
    return e


def model(tree: dict[str, Node], entries: list[dict]) -> dict[str, Node]:
    t = dict(tree)
    for op in _ops(entries):
        if isinstance(op, Node):
            was = t.get(op.key)
            if (
                op.is_folder
                and was is not None
                and (not was.is_folder or was.remote_id != op.remote_id)
            ):
                t = {k: n for k, n in t.items() if k != op.key and not k.startswith(op.key + "/")}
            t[op.key] = op
        else:
            t = {k: n for k, n in t.items() if k != op and not k.startswith(op + "/")}
    return t


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(entry(), max_size=8), min_size=1, max_size=4))
def test_batched_pages_equal_one_by_one(pages: list[list[dict]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        ix = Index(d)
        expect: dict[str, Node] = {}
        for page in pages:
            expect = model(expect, page)
            with ix.batch():
                _apply_page(ix, page)
            rows = ix.db.execute("SELECT key FROM remote").fetchall()
            assert sorted(k for (k,) in rows) == sorted(expect)
            for k, n in expect.items():
                assert ix.remote_node(k) == n
        ix.close()


def _file(path: str, **kw) -> dict:
    return {".tag": "file", "path_display": path, "name": path.rsplit("/", 1)[1], "id": "id:x",
            "rev": "0123456789", "size": 1, "content_hash": "0" * 64, **kw}  # fmt: skip


HOSTILE = [
    (_file("/nul\x00name"), "control character"),
    (_file("/half\ud800"), "not valid UTF-8"),
    (_file("/bytes\udcff"), "not valid UTF-8"),  # a raw 0xff, decoded with surrogateescape
    (_file("/" + "n" * 300), "longer than 255"),
    ({**_file("/a/b"), "name": "a/b"}, "cannot contain '/'"),
    (_file("/huge", size=10**30), "size"),
    (_file("/negative", size=-1), "size"),
    (_file("/rev", rev=12345), "rev is not a string"),
    (_file("/hash", content_hash=None), "content_hash"),
    ({".tag": "file", "path_display": "/nohash", "size": 1}, "lacks 'content_hash'"),
]


def test_entries_this_client_cannot_represent_are_held_with_a_reason() -> None:
    """No value in a listing stops a pass (issue 11): each is held, named and explained, and
    what stood at a valid key is forgotten, never kept stale."""
    for m, why in HOSTILE:
        ops = _ops([m, {"not": "an entry"}, {".tag": "file", "path_display": 7}])
        held = [op for op in ops if isinstance(op, Held)]
        assert len(held) == 1 and why in held[0].why, (m, ops)
        assert held[0].path == m["path_display"]
    far = _ops([_file("/future", client_modified="9999-12-31T23:59:59Z")])
    assert isinstance(far[-1], Node) and far[-1].mtime_ns == MTIME_MAX_NS  # clamped, synced


def test_held_entries_leave_the_table_when_the_server_fixes_or_deletes_them() -> None:
    with tempfile.TemporaryDirectory() as d:
        ix = Index(d)
        with ix.batch():
            _apply_page(ix, [{".tag": "folder", "path_display": "/d", "id": "id:d"},
                             _file("/d/ok"), _file("/d/bad\x00"), _file("/d/ok2")])  # fmt: skip
        assert ix.remote_node("/d/ok") is not None
        with ix.batch():  # a good file turns unreadable: forgotten, and held
            _apply_page(ix, [_file("/d/ok", size=10**30)])
        assert ix.remote_node("/d/ok") is None
        assert [p for p, _, _ in ix.held_all()] == ["/d/bad\x00", "/d/ok"]
        with ix.batch():
            _apply_page(ix, [_file("/d/ok")])  # readable again
        assert [p for p, _, _ in ix.held_all()] == ["/d/bad\x00"]
        with ix.batch():
            _apply_page(ix, [{".tag": "deleted", "path_display": "/d", "name": "d"}])
        assert not ix.held_any() and ix.remote_node("/d/ok2") is None
        ix.close()
