"""The sync client's three trees: local (on disk), remote (the server), synced (last agreement). Pure.

A `Tree` maps path keys (`meta.paths`: every component NFC, casefolded, NFC again) to `Node`s,
each of which keeps its display path (the case and Unicode form it has on its side). Trees are
values: the scanner, the server listing and the SQLite index build them, the planner reads them,
and the executor derives the next synced tree with `with_node`, `without` and `moved`.

Invariants, checked when a tree is built (a broken one is a bug upstream, so it raises):

- every node's parent is in the tree as a folder (the root, key "", is implicit);
- one node per key. A local disk can hold two names with one key (`a.txt` and `A.txt` on a
  case-sensitive disk, or `Café` in NFC and NFD); `Tree.from_nodes` keeps one and puts the other,
  with everything below it, in `Tree.twins`, for the planner to rename (never to merge).

Content identity (`same_content`) is kind + content hash for files (+ the executable bit when
both sides know it), kind + target for symlinks, and kind alone for folders: identical content
is never a conflict, whatever the mtime, inode or rev.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from raftbox.meta.paths import is_in_subtree, parse_path


class Kind(enum.Enum):
    FILE = "file"
    FOLDER = "folder"
    SYMLINK = "symlink"  # stored as a link, never followed; content is `link_target`


def path_key(path: str) -> str:
    """The key of a display path `"/a/B.txt"` (validated; raises `MalformedPath`)."""
    return parse_path(path).key


def parent_key(key: str) -> str:
    """The parent's key ("" for a top-level entry)."""
    return key.rsplit("/", 1)[0]


def ancestor_keys(key: str) -> list[str]:
    """Every proper ancestor's key except the root, outermost first."""
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(2, len(parts))]


@dataclass(frozen=True, slots=True)
class Node:
    """One entry of one tree.

    `path` is the display path on its side. `content_hash` (the Dropbox content hash, or the
    blocklist id) is required for files; `link_target` for symlinks; folders have neither.
    Local nodes carry `mtime_ns` and `inode` (what the executor re-checks before touching the
    file); remote nodes carry `remote_id` and `rev`; synced nodes carry both (see `agreed`).
    `executable` is None where a side does not know the bit; it is then not compared.
    """

    path: str
    kind: Kind
    content_hash: str | None = None
    size: int = 0
    mtime_ns: int | None = None
    inode: int | None = None
    executable: bool | None = None
    link_target: str | None = None
    remote_id: str | None = None
    rev: str | None = None
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", path_key(self.path))
        if self.kind is Kind.FILE and not self.content_hash:
            raise ValueError(f"file node {self.path!r} needs a content_hash")
        if self.kind is Kind.SYMLINK and self.link_target is None:
            raise ValueError(f"symlink node {self.path!r} needs a link_target")
        if self.kind is Kind.FOLDER and (self.content_hash or self.link_target is not None):
            raise ValueError(f"folder node {self.path!r} has content")
        if self.size < 0:
            raise ValueError(f"node {self.path!r} has a negative size")

    @classmethod
    def trusted(cls, key: str, path: str, kind: Kind, content_hash: str | None = None,
                size: int = 0, mtime_ns: int | None = None, inode: int | None = None,
                executable: bool | None = None, link_target: str | None = None,
                remote_id: str | None = None, rev: str | None = None) -> Node:  # fmt: skip
        """A node whose path was validated and keyed when it was first made (a row the index
        wrote from a `Node`): no parsing again. Loading 100,000 rows is 5x faster this way."""
        # The slots' own setters: 4x faster than object.__setattr__ by name, which matters for
        # the two 100,000-row trees a pass loads.
        n = object.__new__(cls)
        _path(n, path)
        _kind(n, kind)
        _content_hash(n, content_hash)
        _size(n, size)
        _mtime_ns(n, mtime_ns)
        _inode(n, inode)
        _executable(n, executable)
        _link_target(n, link_target)
        _remote_id(n, remote_id)
        _rev(n, rev)
        _key(n, key)
        return n

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def is_folder(self) -> bool:
        return self.kind is Kind.FOLDER

    @property
    def depth(self) -> int:
        return self.path.count("/")


(_path, _kind, _content_hash, _size, _mtime_ns, _inode, _executable, _link_target, _remote_id,
 _rev, _key) = (getattr(Node, f).__set__ for f in ("path", "kind", "content_hash", "size",
                "mtime_ns", "inode", "executable", "link_target", "remote_id", "rev", "key"))  # fmt: skip


def same_content(a: Node | None, b: Node | None) -> bool:
    """Do `a` and `b` hold the same thing (ignoring name, mtime, inode, id, rev)?"""
    if a is None or b is None:
        return a is b
    if a.kind is not b.kind:
        return False
    if a.kind is Kind.FOLDER:
        return True
    if a.kind is Kind.SYMLINK:
        return a.link_target == b.link_target
    if a.content_hash != b.content_hash:
        return False
    return a.executable is None or b.executable is None or a.executable == b.executable


def agreed(local: Node, remote: Node) -> Node:
    """The synced record for an entry both sides hold with the same content.

    Content, display path and stat come from the local node, id and rev from the remote one.
    Folders keep no mtime (it moves with every child and says nothing about the folder).
    The executor records exactly this after every transfer, so a re-plan finds nothing to do.
    """
    return Node(
        path=local.path,
        kind=local.kind,
        content_hash=local.content_hash,
        size=local.size,
        mtime_ns=None if local.is_folder else local.mtime_ns,
        inode=local.inode,
        executable=local.executable if local.executable is not None else remote.executable,
        link_target=local.link_target,
        remote_id=remote.remote_id,
        rev=remote.rev,
    )


def rebase_path(path: str, src_path: str, dst_path: str) -> str:
    """`path` (at or below `src_path`) as it reads once `src_path` is moved to `dst_path`.

    Works by component count, so a child whose display prefix differs in case from its
    parent's (the server may say `/Docs` and `/docs/x`) is rebased too.
    """
    n = src_path.count("/")
    rest = path.split("/")[n + 1 :]
    return dst_path + "".join("/" + c for c in rest)


class Tree(Mapping[str, Node]):
    """An immutable mapping path key → `Node`, iterated in key order, plus local `twins`."""

    __slots__ = ("_nodes", "_kids", "twins")

    def __init__(self, nodes: Mapping[str, Node] | None = None, twins: Iterable[Node] = ()):
        """Build from a key → node mapping, checking the invariants (see the module doc)."""
        d: dict[str, Node] = dict(nodes or {})
        for k, n in d.items():
            if n.key != k:
                raise ValueError(f"node {n.path!r} filed under key {k!r}")
            pk = parent_key(k)
            if pk and (pk not in d or not d[pk].is_folder):
                raise ValueError(f"node {n.path!r} has no parent folder in the tree")
        self._nodes = d
        self._kids: dict[str, list[str]] | None = None
        self.twins: tuple[Node, ...] = tuple(sorted(twins, key=lambda n: n.path))

    @classmethod
    def from_nodes(cls, nodes: Iterable[Node], *, prefer: Mapping[str, Node] | None = None) -> Tree:
        """Build from a scan. Names that collide by key go to `twins` (with their subtrees).

        Of colliding names, the one whose name equals `prefer[key]`'s (pass the synced tree)
        is kept; otherwise an NFC name before others, then the first in code-point order. The result does not depend on the
        order of `nodes`.
        """

        def rank(n: Node) -> tuple[int, bool, bool, str]:
            p = prefer.get(n.key) if prefer is not None else None
            nfc = unicodedata.normalize("NFC", n.name) == n.name
            return (n.depth, p is None or p.name != n.name, not nfc, n.path)

        kept: dict[str, Node] = {}
        twins: list[Node] = []
        dropped: set[str] = set()  # display paths put aside as twins
        seen: set[str] = set()
        for n in sorted(nodes, key=rank):
            if n.path in seen:
                raise ValueError(f"two nodes with the display path {n.path!r}")
            seen.add(n.path)
            if n.path.rsplit("/", 1)[0] in dropped or n.key in kept:
                twins.append(n)
                dropped.add(n.path)
            else:
                kept[n.key] = n
        return cls(kept, twins)

    # -- Mapping ---------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Node:
        return self._nodes[key]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, key: object) -> bool:
        return key in self._nodes

    def get(self, key: str, default: Node | None = None) -> Node | None:  # type: ignore[override]
        return self._nodes.get(key, default)  # Mapping.get goes through a KeyError per miss

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tree):
            return NotImplemented
        return self._nodes == other._nodes and self.twins == other.twins

    def __hash__(self) -> int:  # Mapping sets __hash__ = None; trees are values
        return hash((frozenset(self._nodes.items()), self.twins))

    def __repr__(self) -> str:
        return f"Tree({[self._nodes[k].path for k in self]!r}, twins={len(self.twins)})"

    def nodes(self) -> Iterable[Node]:
        """Every node, in no particular order (cheaper than `values()`, which sorts by key)."""
        return self._nodes.values()

    # -- queries ---------------------------------------------------------------------------

    def at(self, path: str) -> Node | None:
        """The node at a display path, looked up by key (so any case or form finds it)."""
        return self._nodes.get(path_key(path))

    def children(self, key: str) -> list[Node]:
        """The direct children of `key` ("" for the root), in key order."""
        if self._kids is None:
            kids: dict[str, list[str]] = {}
            for k in sorted(self._nodes):
                kids.setdefault(parent_key(k), []).append(k)
            self._kids = kids
        return [self._nodes[k] for k in self._kids.get(key, [])]

    def subtree(self, key: str) -> list[Node]:
        """`key`'s node (if any) and everything below it, parents before children."""
        return [self._nodes[k] for k in sorted(self._nodes) if is_in_subtree(k, key)]

    # -- derived trees (what the executor records) -----------------------------------------

    def with_node(self, node: Node) -> Tree:
        """Record `node`; a non-folder replaces whatever subtree was at its key."""
        d = dict(self._nodes)
        if not node.is_folder:
            for k in [k for k in d if k.startswith(node.key + "/")]:
                del d[k]
        d[node.key] = node
        return Tree(d)

    def without(self, key: str) -> Tree:
        """Forget `key` and everything below it."""
        return Tree({k: n for k, n in self._nodes.items() if not is_in_subtree(k, key)})

    def moved(self, src_key: str, dst_path: str) -> Tree:
        """The subtree at `src_key` moved to display path `dst_path` (a no-op if absent).

        Whatever was at the destination key (other than the subtree itself) is replaced.
        """
        src = self._nodes.get(src_key)
        if src is None:
            return self
        dst_key = path_key(dst_path)
        d = {
            k: n
            for k, n in self._nodes.items()
            if not is_in_subtree(k, src_key) and not is_in_subtree(k, dst_key)
        }
        for k, n in self._nodes.items():
            if is_in_subtree(k, src_key):
                m = replace(n, path=rebase_path(n.path, src.path, dst_path))
                d[m.key] = m
        return Tree(d)
