"""The remote tree kept from listing pages (`remote._apply_page`) against applying every change
one by one to a dict, on random pages (hypothesis): batching must never change the result."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from raftbox.client.index import Index
from raftbox.client.remote import _apply_page, _ops
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
