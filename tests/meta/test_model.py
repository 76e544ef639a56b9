"""MetaStore against a naive dict model, on random sequences of writes (hypothesis).

After every step: the same success or error tags, the same live tree (kind, display, content),
ids kept across overwrites and moves, and a client that only follows `list_folder/continue`
holds exactly the live tree. At the end, a second store fed the same log is identical.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftbox.meta.commands import (
    Copy,
    CreateFolder,
    Delete,
    DeletedMeta,
    FileMeta,
    FolderMeta,
    MetaError,
    Move,
)
from raftbox.meta.fsm import MetaStore
from raftbox.meta.paths import is_in_subtree, make_key, parse_path

from .helpers import Driver, content_hash

NAMES = ["a", "A", "b", "\u00e9", "e\u0301", "c.txt"]  # case and NFC/NFD twins


@dataclass(frozen=True)
class Item:
    kind: str  # "file" | "folder"
    display: str
    data: bytes = b""
    id: str | None = None  # learned from the store on creation


class Model:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def _ancestor_file(self, path) -> bool:
        return any(
            self.items.get(a.key, Item("folder", "")).kind == "file" for a in path.ancestors()
        )

    def _make_parents(self, path) -> str:
        display = ""
        for a in path.ancestors():
            it = self.items.get(a.key)
            if it is None:
                display = f"{display}/{a.name}"
                self.items[a.key] = Item("folder", display)
            else:
                display = it.display
        return display

    def _subtree(self, key: str) -> list[str]:
        return sorted(k for k in self.items if is_in_subtree(k, key))

    def put(self, path_s: str, data: bytes, mode: str):
        p = parse_path(path_s)
        if self._ancestor_file(p):
            return ["path", "conflict", "file_ancestor"]
        cur = self.items.get(p.key)
        if cur is not None and cur.kind == "folder":
            return ["path", "conflict", "folder"]
        if cur is not None:
            if cur.data == data:
                return None
            if mode == "add":
                return ["path", "conflict", "file"]
            self.items[p.key] = replace(cur, data=data)
            return None
        parent = self._make_parents(p)
        self.items[p.key] = Item("file", f"{parent}/{p.name}", data)
        return None

    def mkdir(self, path_s: str):
        p = parse_path(path_s)
        if self._ancestor_file(p):
            return ["path", "conflict", "file_ancestor"]
        cur = self.items.get(p.key)
        if cur is not None:
            return ["path", "conflict", cur.kind]
        parent = self._make_parents(p)
        self.items[p.key] = Item("folder", f"{parent}/{p.name}")
        return None

    def delete(self, path_s: str):
        p = parse_path(path_s)
        if p.key not in self.items:
            return ["path_lookup", "not_found"]
        for k in self._subtree(p.key):
            del self.items[k]
        return None

    def relocate(self, a_s: str, b_s: str, copy: bool):
        a, b = parse_path(a_s), parse_path(b_s)
        src = self.items.get(a.key)
        if src is None:
            return ["from_lookup", "not_found"]
        if a.key == b.key:
            if copy or b.name == src.display.rsplit("/", 1)[1] or b.display == src.display:
                return ["duplicated_or_nested_paths"]
            new_display = src.display.rsplit("/", 1)[0] + "/" + b.name
            for k in self._subtree(a.key):
                it = self.items[k]
                self.items[k] = replace(it, display=new_display + it.display[len(src.display) :])
            return None
        if src.kind == "folder" and is_in_subtree(b.key, a.key):
            return ["cant_move_folder_into_itself"]
        if self._ancestor_file(b):
            return ["to", "conflict", "file_ancestor"]
        if b.key in self.items:
            return ["to", "conflict", self.items[b.key].kind]
        to_display = self._make_parents(b) + "/" + b.name
        moved = {}
        for k in self._subtree(a.key):
            it = self.items[k]
            nk = b.key + k[len(a.key) :]
            nd = to_display + it.display[len(src.display) :]
            moved[nk] = replace(it, display=nd, id=None if copy else it.id)
            if not copy:
                del self.items[k]
        self.items.update(moved)
        return None


paths_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(lambda c: "/" + "/".join(c))
TWINS = {"a": "A", "A": "a", "\u00e9": "e\u0301", "e\u0301": "\u00e9"}

# A path argument is either literal, or ("existing", i, flips): the i-th live item of the model
# (when there is one), respelled by `flips` into a case or NFC/NFD twin — so that moves of
# existing items and case-only renames are common, not lucky.
existing_st = st.tuples(
    st.just("existing"), st.integers(0, 50), st.lists(st.booleans(), max_size=3)
)
arg_st = st.one_of(paths_st, existing_st)
ops_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            arg_st,
            st.sampled_from([b"", b"1", b"2"]),
            st.sampled_from(["add", "overwrite"]),
        ),
        st.tuples(st.just("mkdir"), arg_st),
        st.tuples(st.just("delete"), arg_st),
        st.tuples(st.sampled_from(["move", "copy"]), arg_st, arg_st),
        st.tuples(st.sampled_from(["move", "copy"]), existing_st, st.just("twin")),
    ),
    max_size=30,
)


def resolve_arg(m: Model, arg, twin_of: str | None = None) -> str:
    if isinstance(arg, str) and arg != "twin":
        return arg
    if arg == "twin":
        comps = twin_of[1:].split("/")
        return "/" + "/".join(TWINS.get(c, c) if i % 2 == 0 else c for i, c in enumerate(comps))
    _, i, flips = arg
    if not m.items:
        return "/a"
    display = m.items[sorted(m.items)[i % len(m.items)]].display
    comps = display[1:].split("/")
    flips = flips + [False] * len(comps)
    return "/" + "/".join(TWINS.get(c, c) if f else c for c, f in zip(comps, flips, strict=False))


def store_tree(store: MetaStore, ns: int) -> dict:
    page = store.list_folder(ns, "", recursive=True)
    out = {}
    for e in page.entries:
        if isinstance(e, FileMeta):
            out[make_key(e.path_display)] = ("file", e.path_display, e.content_hash)
        else:
            out[make_key(e.path_display)] = ("folder", e.path_display, None)
    return out


def model_tree(m: Model) -> dict:
    return {
        k: (it.kind, it.display, content_hash(it.data) if it.kind == "file" else None)
        for k, it in m.items.items()
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_st)
def test_store_matches_model(ops):
    d = Driver()
    ns = d.setup()
    m = Model()
    client: dict[str, object] = {}
    cursor = d.store.get_latest_cursor(ns, "", recursive=True).position
    for op in ops:
        kind = op[0]
        first = resolve_arg(m, op[1])
        op = (kind, first, *op[2:])
        if kind in ("move", "copy"):
            op = (kind, first, resolve_arg(m, op[2], twin_of=first))
        if kind == "put":
            _, path, data, mode = op
            want = m.put(path, data, mode)
            got = d.put(ns, path, data, mode=mode)
        elif kind == "mkdir":
            want = m.mkdir(op[1])
            got = d.apply(CreateFolder(ns, op[1]))
        elif kind == "delete":
            want = m.delete(op[1])
            got = d.apply(Delete(ns, op[1]))
        else:
            src_id = m.items.get(parse_path(op[1]).key)
            src_id = src_id.id if src_id else None
            want = m.relocate(op[1], op[2], copy=kind == "copy")
            got = d.apply((Copy if kind == "copy" else Move)(ns, op[1], op[2]))
            if want is None and kind == "move":
                assert got.id == src_id, "ids survive moves"
        if want is None:
            assert isinstance(got, FileMeta | FolderMeta), (op, got)
        else:
            assert isinstance(got, MetaError) and got.tags == want, (op, got, want)
        # learn ids of new items; check ids of known ones
        for e in d.store.list_folder(ns, "", recursive=True).entries:
            k = make_key(e.path_display)
            it = m.items[k]
            if it.id is None:
                m.items[k] = replace(it, id=e.id)
            else:
                assert it.id == e.id, (op, k)
        assert store_tree(d.store, ns) == model_tree(m), op
        # a client following the journal sees the same tree
        page = d.store.list_folder_continue(ns, "", True, False, cursor, 7)
        while True:
            for e in page.entries:
                k = make_key(e.path_display)
                if isinstance(e, DeletedMeta):
                    for x in [x for x in client if is_in_subtree(x, k)]:
                        del client[x]
                else:
                    client[k] = e
            if not page.has_more:
                break
            page = d.store.list_folder_continue(ns, "", True, False, page.state, 7)
        cursor = page.state
        assert client == {e_k: e for e_k, e in _live_meta(d.store, ns).items()}, op
    replica = MetaStore()
    for index, c in d.log:
        replica.apply(index, c)
    assert replica.dump() == d.store.dump()


def _live_meta(store: MetaStore, ns: int) -> dict:
    return {make_key(e.path_display): e for e in store.list_folder(ns, "", recursive=True).entries}
