"""The sync planner: three trees in, an ordered list of operations out. Pure.

Theory of operation
-------------------
`plan(local, remote, synced, ...)` is the classic three-way merge. For every path key it compares
each side with the synced tree (what both last agreed on) and classifies the side as NONE (absent,
never synced), ADDED, SAME, MODIFIED or DELETED; then a table decides (`_merge_leaf`):

    change on one side only            → propagate it (Upload / Download / Delete*)
    the same change on both sides      → record it (UpdateSynced): identical content is never a
                                         conflict
    different changes on both sides    → ConflictCopy the local one aside, upload the copy,
                                         download the remote one
    deleted on one side, SAME on other → propagate the delete (only entries in the synced tree
                                         are ever deleted; what a side never saw is uploaded)
    deleted on one side, changed other → keep the changed one
    file against folder                → the unchanged side gives way; if both changed, the
                                         local entry is moved aside as a conflicted copy

A folder is deleted only if nothing below it survives; otherwise it is re-created where it was
deleted. Before the per-key merge, in this order, the planner

1. drops ignored entries (`IgnoreRules`; a key is ignored if any side's name matches),
2. renames local twins (two local names with one key) aside: `RenameTwin`; from then on they
   are local entries under their new names (so a synced twin is sent as a move in step 4),
3. follows remote moves (same `remote_id`, new key) with `MoveLocal`,
4. sends local moves (a synced entry gone locally, unchanged remotely, and a new local entry with
   the same content, or the same inode for folders) as `MoveRemote`,
5. and, during the merge, top-down, turns case- or form-only renames (same key, different name)
   into a move on the other side.

Moves rewrite the planner's working copies of the trees (subtrees move with their folder), so
the merge that follows sees moved entries under their new keys on all three sides.

Held entries (`hold`: what this client cannot represent or could not read) are hidden on all
three sides, and a hidden entry must never read as deleted or absent on the side that hides it:

- a held key follows every move of a folder above it (the held entry moves with its folder on
  the side moved, so nothing is downloaded or uploaded over it at its new key), and whatever a
  move brings onto a held key is hidden again (a folder renamed locally over a held child is
  sent as a server move, which carries the server's copy to where the held local entry is; it
  must not then look deleted locally);
- a folder that holds a held entry on a side counts as changed below on that side, so it is
  never deleted there: it is kept (or re-created on the other side) like any folder with a
  surviving child.

Order of operations (`Plan.ops`) — the executor runs them in this order:

- first the structural operations, in dependency order: twin renames, moves (with the folders
  they need created first), then per folder, top-down: name fixes, conflict copies, deletes
  (children before parents), mkdirs (parents before children), synced-index updates;
- then the transfers (`Upload`, `Download`). Transfers never depend on each other, and no
  structural operation depends on a transfer, so the executor may run them concurrently and
  commit small uploads in batches (`commit_batch`).

Every operation tells the executor what to re-check first and what to record in the synced index
when it succeeds (see each type); the index stays a tree because parents are recorded before
children. If a structural operation is skipped (its re-check failed) or refused, the executor
skips every later operation on the same subtree or its ancestors, since they may depend on it,
and carries on with the rest; a transfer that fails affects nothing else. Either way nothing needs undoing: the next pass re-plans from fresh trees, and
every decision above is safe to re-take.

Never lose data: the executor re-checks a local file (kind, size, mtime_ns, inode; re-hash if the
stat is in doubt) before it overwrites (`Download.expect`) or deletes (`DeleteLocal.expect`) it;
if it changed since it was scanned it is kept as a conflicted copy (`conflicted_copy_name`) and
uploaded. A server conflict (update(parent_rev) or add refused) ends the same way.

The max-delete check counts `DeleteLocal` + `DeleteRemote` against the size of the synced tree;
past `max_delete_share` (and `max_delete_floor`) the pass is refused: `Plan.refused` says why,
`Plan.ops` is empty and `Plan.withheld` holds what would have run.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import ClassVar

from raftbox.meta.paths import (
    NAME_MAX_BYTES,
    MalformedPath,
    component_key,
    is_in_subtree,
    renamed,
    split_ext,
)

from .ignore import IgnoreRules
from .trees import (
    Kind,
    Node,
    Tree,
    agreed,
    ancestor_keys,
    parent_key,
    path_key,
    rebase_path,
    same_content,
)

# -- operations --------------------------------------------------------------------------------


class OpKind(enum.Enum):
    RENAME_TWIN = "rename_twin"
    CONFLICT_COPY = "conflict_copy"
    MOVE_LOCAL = "move_local"
    MOVE_REMOTE = "move_remote"
    MKDIR_LOCAL = "mkdir_local"
    MKDIR_REMOTE = "mkdir_remote"
    DELETE_LOCAL = "delete_local"
    DELETE_REMOTE = "delete_remote"
    UPDATE_SYNCED = "update_synced"
    UPLOAD = "upload"
    DOWNLOAD = "download"


@dataclass(frozen=True, slots=True)
class RenameTwin:
    """Rename local `src` to the free name `dst` and show `message` to the user.

    `src` and another local name map to one key (case or NFC/NFD); the other one stays. Re-check:
    skip if `src` is gone or `dst` exists. No synced change: the rest of the plan treats the
    twin as living at `dst` (a move to send, or new entries to upload).
    """

    src: str
    dst: str
    message: str
    kind: ClassVar[OpKind] = OpKind.RENAME_TWIN


@dataclass(frozen=True, slots=True)
class ConflictCopy:
    """Rename local `path` aside to the free name `new_path` (`conflicted_copy_name`).

    The plan itself then uploads the copy (`MkdirRemote`/`Upload` under `new_path`) and puts the
    remote version at `path`. Whatever is at `path` now is kept (it is renamed, not read), so no
    re-check is needed beyond: skip if `path` is gone or `new_path` exists. No synced change.
    """

    path: str
    new_path: str
    expect: Node
    kind: ClassVar[OpKind] = OpKind.CONFLICT_COPY


@dataclass(frozen=True, slots=True)
class MoveLocal:
    """Rename local `src` to `dst` (the parent exists; `dst` may differ from `src` only by case).

    Re-check: `src` exists and `dst` is free (or is `src` itself, for a case-only rename on a
    case-insensitive disk); else skip. On success: synced subtree at key(src) moves to `dst`.
    """

    src: str
    dst: str
    kind: ClassVar[OpKind] = OpKind.MOVE_LOCAL


@dataclass(frozen=True, slots=True)
class MoveRemote:
    """Server move `src` → `dst` (files/move_v2). On success: synced subtree moves to `dst`."""

    src: str
    dst: str
    kind: ClassVar[OpKind] = OpKind.MOVE_REMOTE


@dataclass(frozen=True, slots=True)
class MkdirLocal:
    """Create local folder `path` (the remote has `node`). On success: record
    `agreed(scanned local folder, node)` in synced. Already a folder there: success."""

    path: str
    node: Node
    kind: ClassVar[OpKind] = OpKind.MKDIR_LOCAL


@dataclass(frozen=True, slots=True)
class MkdirRemote:
    """Create server folder `path` (local `node` is that folder). On success: record
    `agreed(node, server metadata)` in synced."""

    path: str
    node: Node
    kind: ClassVar[OpKind] = OpKind.MKDIR_REMOTE


@dataclass(frozen=True, slots=True)
class DeleteLocal:
    """Delete local `path`, which was `expect` when planned. Children come earlier in the plan.

    Re-check first (`expect`: kind, size, mtime_ns, inode; re-hash if in doubt). If it changed,
    do not delete it: skip (the next pass uploads it: an edit wins over a delete). A folder is
    removed only if empty (OS clutter such as `.DS_Store` aside); one that holds only ignored
    files is kept and forgotten; else it is left alone (skipped). On success: forget the synced
    subtree at key(path).
    """

    path: str
    expect: Node
    kind: ClassVar[OpKind] = OpKind.DELETE_LOCAL


@dataclass(frozen=True, slots=True)
class DeleteRemote:
    """Delete server entry `path`; for a file only if its rev is still `rev` (else skip: the next
    pass downloads the newer version). Children come earlier in the plan; a folder that is not
    empty on the server any more must not be deleted. On success: forget the synced subtree."""

    path: str
    rev: str | None
    kind: ClassVar[OpKind] = OpKind.DELETE_REMOTE


@dataclass(frozen=True, slots=True)
class UpdateSynced:
    """Both sides already agree: record `node` at key(path) in synced (None: forget the subtree).

    A non-folder node replaces the synced subtree below it. No disk or server access.
    """

    path: str
    node: Node | None
    kind: ClassVar[OpKind] = OpKind.UPDATE_SYNCED


@dataclass(frozen=True, slots=True)
class Upload:
    """Upload local `path` (scanned as `node`) to the same path on the server.

    `parent_rev` None: add mode (the path must be free); else update(parent_rev). Upload what is
    on disk now (re-hash while chunking); skip if gone. If the server refuses (conflict), rename
    the local file to a conflicted copy and upload that as new; the next pass downloads the
    server's version. On success: record `agreed(local stat now, server metadata)` in synced.
    """

    path: str
    node: Node
    parent_rev: str | None
    kind: ClassVar[OpKind] = OpKind.UPLOAD


@dataclass(frozen=True, slots=True)
class Download:
    """Write remote `node` (a file or symlink) to local `path` (temp, fsync, rename, set mtime).

    Re-check just before the rename: `expect` None means `path` must be absent; a Node means it
    must still be that (kind, size, mtime_ns, inode; re-hash if in doubt). If not, rename what
    is there to a conflicted copy (upload it), then write. On success: record
    `agreed(local stat now, node)` in synced.
    """

    path: str
    node: Node
    expect: Node | None
    kind: ClassVar[OpKind] = OpKind.DOWNLOAD


Op = (
    RenameTwin
    | ConflictCopy
    | MoveLocal
    | MoveRemote
    | MkdirLocal
    | MkdirRemote
    | DeleteLocal
    | DeleteRemote
    | UpdateSynced
    | Upload
    | Download
)

_TRANSFERS = (OpKind.UPLOAD, OpKind.DOWNLOAD)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass should do, in order (see the module doc), or why it refused to."""

    ops: tuple[Op, ...]
    refused: str | None = None
    withheld: tuple[Op, ...] = ()  # when refused: the operations that were not let through
    messages: tuple[str, ...] = ()  # for the user (twin renames)
    deletes: int = 0  # DeleteLocal + DeleteRemote in the (possibly withheld) plan
    entries: int = 0  # size of the synced tree the max-delete share is taken of

    @property
    def is_empty(self) -> bool:
        """Nothing to do and nothing refused: the trees agree."""
        return not self.ops and self.refused is None


# -- names -------------------------------------------------------------------------------------

HOST_MAX_BYTES = 64
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_UNSAFE = re.compile("[\x00-\x1f\x7f/]")


def _numbered(tag: str, n: int) -> str:
    return f"({tag})" if n == 1 else f"({tag} {n})"


def _fit(name: str, suffix: str, is_folder: bool) -> str:
    """`renamed(name, suffix)`, the stem shortened if the result is over NAME_MAX_BYTES."""
    stem, ext = (name, "") if is_folder else split_ext(name)
    while stem or ext:
        out = renamed(stem + ext, suffix, is_folder=is_folder) if stem else f"{suffix}{ext}"
        if len(out.encode("utf-8")) <= NAME_MAX_BYTES:
            return out
        if stem:
            stem = stem[:-1]
        else:
            ext = ext[:-1]
    return suffix[: NAME_MAX_BYTES // 4]


def _unique(name: str, tag: str, is_folder: bool, taken: Callable[[str], bool]) -> str:
    n = 1
    while True:
        out = _fit(name, _numbered(tag, n), is_folder)
        if not taken(out):
            return out
        n += 1


def conflicted_copy_name(
    name: str,
    *,
    host: str,
    today: str,
    is_folder: bool = False,
    taken: Callable[[str], bool] = lambda _name: False,
) -> str:
    """`"a.txt"` → `"a (conflicted copy from HOST 2024-05-01).txt"`.

    The suffix goes before the last extension (`"a.tar.gz"` → `"a.tar (…).gz"`); a dotfile
    (`".bashrc"`), a name without an extension and a folder get it at the end. If `taken(name)`
    says the name is used (compare by key), the count goes inside the parentheses:
    `"a (conflicted copy from HOST 2024-05-01 2).txt"`, then 3, and so on. Over 255 UTF-8 bytes
    the stem is shortened. "/" and control characters in HOST become "_", and HOST is cut to 64 bytes.
    """
    if not _DATE.fullmatch(today):
        raise ValueError(f"today must be YYYY-MM-DD, not {today!r}")
    host = _UNSAFE.sub("_", host).strip() or "unknown host"
    while len(host.encode("utf-8")) > HOST_MAX_BYTES:  # the tag must leave room for a name
        host = host[:-1]
    return _unique(name, f"conflicted copy from {host} {today}", is_folder, taken)


def twin_name(
    name: str,
    other: str,
    *,
    is_folder: bool = False,
    taken: Callable[[str], bool] = lambda _n: False,
) -> str:
    """The new name for local `name`, which collides by key with `other` on the same folder.

    Differ by case: `"a.txt"` → `"a (case conflict).txt"`; same letters in another Unicode
    normalization (NFC/NFD): `"Café.txt"` → `"Café (Unicode normalization conflict).txt"`;
    numbered like `conflicted_copy_name` when taken. The original form of `name` is kept.
    """
    nfc_same = unicodedata.normalize("NFC", name) == unicodedata.normalize("NFC", other)
    tag = "Unicode normalization conflict" if nfc_same else "case conflict"
    return _unique(name, tag, is_folder, taken)


def _twin_message(src: str, keeper: str, dst: str) -> str:
    a, b = src.rsplit("/", 1)[1], keeper.rsplit("/", 1)[1]
    why = (
        "are the same name in different Unicode normalizations (NFC/NFD)"
        if unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b)
        else "differ only by letter case"
    )
    return (
        f"{src!r} and {keeper!r} {why}, which the server treats as one name; "
        f"{src!r} was renamed to {dst!r} so that both are kept."
    )


# -- the planner -------------------------------------------------------------------------------


class _State(enum.Enum):
    NONE = "none"  # absent, and not in synced
    ADDED = "added"  # present, not in synced
    SAME = "same"  # present, same content as synced
    MODIFIED = "modified"  # present, different content (or kind) than synced
    DELETED = "deleted"  # absent, in synced


def _state(x: Node | None, s: Node | None) -> _State:
    if s is None:
        return _State.NONE if x is None else _State.ADDED
    if x is None:
        return _State.DELETED
    return _State.SAME if same_content(x, s) else _State.MODIFIED


_CHANGED = (_State.ADDED, _State.MODIFIED)


class _Side:
    """A mutable working copy of one tree with a children index (the planner's scratch)."""

    __slots__ = ("nodes", "kids")

    def __init__(self, nodes: Iterable[Node]):
        self.nodes: dict[str, Node] = {}
        self.kids: dict[str, set[str]] = defaultdict(set)
        for n in nodes:
            self.put(n)

    def get(self, key: str) -> Node | None:
        return self.nodes.get(key)

    def put(self, n: Node) -> None:
        self.nodes[n.key] = n
        self.kids[parent_key(n.key)].add(n.key)

    def subtree(self, key: str) -> list[Node]:
        """`key` (if present) and everything below, parents before children, in key order."""
        out: list[Node] = []
        stack = [key] if key in self.nodes else []
        while stack:
            k = stack.pop()
            out.append(self.nodes[k])
            stack.extend(sorted(self.kids.get(k, ()), reverse=True))
        return out

    def remove_subtree(self, key: str) -> None:
        for n in self.subtree(key):
            del self.nodes[n.key]
            self.kids.pop(n.key, None)
        self.kids[parent_key(key)].discard(key)

    def rebase(self, src_key: str, dst_path: str) -> None:
        """Move the subtree at `src_key` to display path `dst_path` (whose key must be free)."""
        moving = self.subtree(src_key)
        if not moving:
            return
        src_path = moving[0].path
        self.remove_subtree(src_key)
        for n in moving:
            self.put(replace(n, path=rebase_path(n.path, src_path, dst_path)))

    def parent_path(self, key: str) -> str:
        """The display path of `key`'s parent on this side (which must exist)."""
        pk = parent_key(key)
        return self.nodes[pk].path if pk else ""


def _agrees(loc: Node, rem: Node, syn: Node) -> bool:
    """`agreed(loc, rem) == syn`, without building a node (the common case, kept cheap)."""
    return (
        syn.path == loc.path
        and syn.rev == rem.rev
        and syn.remote_id == rem.remote_id
        and syn.inode == loc.inode
        and syn.mtime_ns == (None if loc.is_folder else loc.mtime_ns)
        and syn.kind is loc.kind
        and syn.content_hash == loc.content_hash
        and syn.size == loc.size
        and syn.link_target == loc.link_target
        and syn.executable == (loc.executable if loc.executable is not None else rem.executable)
    )


def _depth_first(n: Node) -> tuple[int, str]:
    return (n.key.count("/"), n.key)


class _Planner:
    def __init__(
        self,
        local: Tree,
        remote: Tree,
        synced: Tree,
        *,
        host: str,
        today: str,
        held: Iterable[str] = (),
    ):
        self.local = _Side(local.nodes())
        self.remote = _Side(remote.nodes())
        self.synced = _Side(synced.nodes())
        self.twins = local.twins
        self.host, self.today = host, today
        self.structural: list[Op] = []
        self.transfers: list[Op] = []
        self.messages: list[str] = []
        # Keys no new name may take: everything on any side (held keys too, hidden from the
        # trees), and every name handed out.
        self.reserved: set[str] = {*self.local.nodes, *self.remote.nodes, *self.synced.nodes}
        self.reserved.update(n.key for n in self.twins)
        self.held: set[str] = set(held)  # grows as moves carry held entries along
        self.reserved.update(self.held)
        self.local_dirty: set[str] = set()  # keys with a changed local entry strictly below
        self.remote_dirty: set[str] = set()

    def emit(self, op: Op) -> None:
        (self.transfers if op.kind in _TRANSFERS else self.structural).append(op)

    def _moved(self, src_key: str, dst_path: str) -> None:
        """Keep held entries hidden after a move of the subtree at `src_key` to `dst_path`.

        A held entry below `src_key` moves with its folder on the side moved, so its new key is
        held too (nothing is planned over it there); and whatever a move brings onto a held key
        (the server's copy of a held local entry whose folder was renamed) is hidden again on
        every side, or it would read as deleted on the side where it is hidden.
        """
        dst_key = path_key(dst_path)
        if src_key != dst_key:
            self.held.update(
                dst_key + h[len(src_key) :] for h in list(self.held) if is_in_subtree(h, src_key)
            )
        for h in self.held:
            if is_in_subtree(h, dst_key):
                for side in (self.local, self.remote, self.synced):
                    if h in side.nodes:
                        side.remove_subtree(h)

    # -- 2. twins ------------------------------------------------------------------------------

    def rename_twins(self) -> None:
        aside = {t.path for t in self.twins}
        for t in self.twins:
            if t.path.rsplit("/", 1)[0] in aside:
                continue  # below a twin folder: moves with it
            keeper = self.local.get(t.key)
            assert keeper is not None, "a twin always has a kept namesake"
            pk = parent_key(t.key)
            name = twin_name(
                t.name,
                keeper.name,
                is_folder=t.is_folder,
                taken=lambda nm, pk=pk: f"{pk}/{component_key(nm)}" in self.reserved,
            )
            dst = t.path.rsplit("/", 1)[0] + "/" + name
            self.reserved.add(f"{pk}/{component_key(name)}")
            msg = _twin_message(t.path, keeper.path, dst)
            self.emit(RenameTwin(t.path, dst, msg))
            self.messages.append(msg)
            # From here on the twin is at `dst` locally: if it was synced under its old name,
            # the local-move step sends it to the server as a move (nothing deleted there and
            # uploaded again, which a kill in between could turn into a loss).
            moved = [
                replace(n, path=rebase_path(n.path, t.path, dst))
                for n in self.twins
                if n.path == t.path or n.path.startswith(t.path + "/")
            ]
            keys = {n.key for n in moved}
            if len(keys) == len(moved) and not keys & self.local.nodes.keys():
                for n in sorted(moved, key=_depth_first):
                    self.local.put(n)

    # -- 3. remote moves -----------------------------------------------------------------------

    def _ensure_parents(self, key: str, *, on_local: bool) -> str | None:
        """Make sure `key`'s ancestors exist on the target side, taking missing folders from the
        other side (planning Mkdir*). The target side's display path of the parent, or None if
        an ancestor is a non-folder there or missing on both sides."""
        side, other = (self.local, self.remote) if on_local else (self.remote, self.local)
        path, todo = "", []
        for a in ancestor_keys(key):
            mine, theirs = side.get(a), other.get(a)
            if theirs is None or not theirs.is_folder or (mine and not mine.is_folder):
                return None
            path = mine.path if mine else f"{path}/{theirs.name}"
            todo.append((path, mine, theirs))
        # The move records its result in synced under the destination's parent, so every
        # ancestor must be a folder on both sides and in synced first.
        for p, mine, theirs in todo:
            created = mine is None
            if mine is None:
                mine = Node(p, Kind.FOLDER)
                self.emit(MkdirLocal(p, theirs) if on_local else MkdirRemote(p, theirs))
                side.put(mine)
            loc, rem = (mine, theirs) if on_local else (theirs, mine)
            syn = self.synced.get(loc.key)
            if syn is None or not syn.is_folder:
                node = agreed(loc, rem)
                if not created:  # a Mkdir records its folder itself
                    self.emit(UpdateSynced(node.path, node))
                self.synced.put(node)
        return path

    def follow_remote_moves(self) -> None:
        by_id = {n.remote_id: n for n in self.remote.nodes.values() if n.remote_id is not None}
        for _ in range(len(self.synced.nodes) + 1):
            moved = False
            for s in sorted(self.synced.nodes.values(), key=_depth_first):
                if self.synced.get(s.key) is not s or s.remote_id is None:
                    continue  # moved with its folder earlier in this sweep
                r = by_id.get(s.remote_id)
                if r is None or r.key == s.key or r.kind is not s.kind:
                    continue
                if r.key in self.synced.nodes or r.key in self.local.nodes:
                    continue  # the destination is taken: leave it to the merge
                loc = self.local.get(s.key)
                if loc is None or loc.kind is not s.kind or is_in_subtree(r.key, s.key):
                    continue
                if loc.inode is not None and s.inode is not None and loc.inode != s.inode:
                    continue  # a different file now sits at the old name: not the one moved
                parent = self._ensure_parents(r.key, on_local=True)
                if parent is None:
                    continue
                dst = f"{parent}/{r.name}"
                self.emit(MoveLocal(loc.path, dst))
                self.local.rebase(s.key, dst)
                self.synced.rebase(s.key, dst)
                self._moved(s.key, dst)
                moved = True
            if not moved:
                return

    # -- 4. local moves ------------------------------------------------------------------------

    def send_local_moves(self) -> None:
        for _ in range(len(self.synced.nodes) + 1):
            moved = False
            fresh = [
                n
                for n in self.local.nodes.values()
                if n.key not in self.synced.nodes and n.key not in self.remote.nodes
            ]
            by_content: dict[tuple[Kind, str | None], list[Node]] = defaultdict(list)
            by_inode: dict[tuple[Kind, int], list[Node]] = defaultdict(list)
            for n in fresh:
                if not n.is_folder:
                    by_content[(n.kind, n.content_hash or n.link_target)].append(n)
                if n.inode is not None:
                    by_inode[(n.kind, n.inode)].append(n)
            used: set[str] = set()
            for s in sorted(self.synced.nodes.values(), key=_depth_first):
                if self.synced.get(s.key) is not s or s.key in self.local.nodes:
                    continue
                r = self.remote.get(s.key)
                if r is None or not same_content(r, s):
                    continue  # changed or gone on the server: not a plain local move
                cands = list(by_inode.get((s.kind, s.inode), ())) if s.inode is not None else []
                if not s.is_folder:
                    cands += by_content.get((s.kind, s.content_hash or s.link_target), ())

                def rank(n: Node, s: Node = s) -> tuple[bool, bool, str]:
                    return (n.inode != s.inode or s.inode is None, n.name != s.name, n.key)

                for d in sorted(set(cands), key=rank):
                    if d.key in used or d.key in self.synced.nodes or d.key in self.remote.nodes:
                        continue
                    if self.local.get(d.key) is not d or not same_content(d, s):
                        continue
                    parent = self._ensure_parents(d.key, on_local=False)
                    if parent is None:
                        continue
                    dst = f"{parent}/{d.name}"
                    self.emit(MoveRemote(r.path, dst))
                    self.remote.rebase(s.key, dst)
                    self.synced.rebase(s.key, dst)
                    self._moved(s.key, dst)
                    used.add(d.key)
                    moved = True
                    break
            if not moved:
                return

    # -- 5. the merge --------------------------------------------------------------------------

    def compute_dirty(self) -> None:
        for side, dirty in ((self.local, self.local_dirty), (self.remote, self.remote_dirty)):
            for n in side.nodes.values():
                if _state(n, self.synced.get(n.key)) in _CHANGED:
                    dirty.update(ancestor_keys(n.key))
        for t in self.twins:  # renamed aside, not yet uploaded: their folders must stay
            self.local_dirty.update(ancestor_keys(t.key))
        for h in self.held:  # hidden, so unknown: the folders holding them must stay
            for side, dirty in ((self.local, self.local_dirty), (self.remote, self.remote_dirty)):
                up = side.get(parent_key(h))
                if up is not None and up.is_folder:  # else it cannot be on this side
                    dirty.update(ancestor_keys(h))

    def merge_all(self) -> None:
        stack = [""]
        while stack:
            k = stack.pop()
            nxt = self._children(k) if k == "" else self._merge(k)
            stack.extend(reversed(nxt))

    def _children(self, k: str) -> list[str]:
        ks: set[str] = set()
        for side in (self.local, self.remote, self.synced):
            ks.update(side.kids.get(k, ()))
        return sorted(ks)

    def _merge(self, k: str) -> list[str]:
        """Plan key `k` (its parent exists on both sides); the keys to plan next, in order."""
        loc, rem = self.local.get(k), self.remote.get(k)
        if loc and rem and loc.is_folder == rem.is_folder and loc.name != rem.name:
            self._fix_name(k, loc, rem)
        loc, rem, syn = self.local.get(k), self.remote.get(k), self.synced.get(k)
        after: list[str] = []
        if loc and rem and loc.is_folder != rem.is_folder:  # file against folder
            if _state(rem, syn) is _State.SAME and k not in self.remote_dirty:
                self._delete_remote_subtree(k)  # only the local side changed: it wins
                rem = None
            elif _state(loc, syn) is _State.SAME and k not in self.local_dirty:
                self._delete_local_subtree(k)  # only the remote side changed: it wins
                loc = None
            else:
                after.append(self._conflict_copy(loc))
                loc = None
        if (loc and loc.is_folder) or (rem and rem.is_folder):
            return self._merge_folder(k, loc, rem, syn) + after
        return self._merge_leaf(k, loc, rem, syn) + after

    def _fix_name(self, k: str, loc: Node, rem: Node) -> None:
        """Same key, different names (case or Unicode form): make the names equal."""
        syn = self.synced.get(k)
        if syn is not None and syn.name == rem.name:  # renamed locally: rename the server's
            dst = f"{self.remote.parent_path(k)}/{loc.name}"
            self.emit(MoveRemote(rem.path, dst))
            self.remote.rebase(k, dst)
        else:  # renamed on the server (or by both, or new on both): the server's name wins
            dst = f"{self.local.parent_path(k)}/{rem.name}"
            self.emit(MoveLocal(loc.path, dst))
            self.local.rebase(k, dst)
        if syn is not None:
            self.synced.rebase(k, dst)
        self._moved(k, dst)

    def _merge_folder(self, k: str, loc: Node | None, rem: Node | None, syn: Node | None):
        if loc and rem:
            self._record(loc, rem, syn)
            return self._children(k)
        if loc:
            st = _state(loc, syn)
            if st in _CHANGED or k in self.local_dirty:
                self.emit(MkdirRemote(loc.path, loc))
                self.remote.put(replace(loc, inode=None, mtime_ns=None))
                return self._children(k)
            self._delete_local_subtree(k)  # deleted on the server, untouched here
            return []
        assert rem is not None
        st = _state(rem, syn)
        if st in _CHANGED or k in self.remote_dirty:
            path = f"{self.local.parent_path(k)}/{rem.name}"
            self.emit(MkdirLocal(path, rem))
            self.local.put(replace(rem, path=path, remote_id=None, rev=None))
            return self._children(k)
        self._delete_remote_subtree(k)  # deleted here, untouched on the server
        return []

    def _merge_leaf(self, k: str, loc: Node | None, rem: Node | None, syn: Node | None):
        S = _State
        ls, rs = _state(loc, syn), _state(rem, syn)
        if loc is None and rem is None:
            if syn is not None:
                self.emit(UpdateSynced(syn.path, None))  # deleted on both sides
            return []
        if rem is None:
            assert loc is not None
            if ls is S.SAME:
                self._delete_local_subtree(k)
            else:  # ADDED, or MODIFIED against a server delete: keep the edit
                self.emit(Upload(loc.path, loc, None))
            return []
        if loc is None:
            path = f"{self.local.parent_path(k)}/{rem.name}"
            if rs is S.SAME:
                self._delete_remote_subtree(k)
            else:
                self.emit(Download(path, rem, None))
            return []
        if same_content(loc, rem):
            self._record(loc, rem, syn)
            return []
        if rs is S.SAME:
            self.emit(Upload(loc.path, loc, rem.rev))
            return []
        if ls is S.SAME:
            self.emit(Download(loc.path, rem, loc))
            return []
        # Both changed, differently: keep the local version aside, take the server's.
        copy = self._conflict_copy(loc)
        self.emit(Download(loc.path, rem, None))
        return [copy]

    def _record(self, loc: Node, rem: Node, syn: Node | None) -> None:
        if syn is not None and _agrees(loc, rem, syn):
            return
        node = agreed(loc, rem)
        if node != syn:
            self.emit(UpdateSynced(node.path, node))
            self.synced.put(node)

    def _conflict_copy(self, loc: Node) -> str:
        pk = parent_key(loc.key)
        name = conflicted_copy_name(
            loc.name,
            host=self.host,
            today=self.today,
            is_folder=loc.is_folder,
            taken=lambda nm: f"{pk}/{component_key(nm)}" in self.reserved,
        )
        new_path = f"{loc.path.rsplit('/', 1)[0]}/{name}"
        new_key = f"{pk}/{component_key(name)}"
        self.reserved.add(new_key)
        self.emit(ConflictCopy(loc.path, new_path, loc))
        self.local.rebase(loc.key, new_path)
        self._moved(loc.key, new_path)
        return new_key

    def _delete_local_subtree(self, k: str) -> None:
        for n in reversed(self.local.subtree(k)):
            self.emit(DeleteLocal(n.path, n))
        self.local.remove_subtree(k)

    def _delete_remote_subtree(self, k: str) -> None:
        for n in reversed(self.remote.subtree(k)):
            self.emit(DeleteRemote(n.path, None if n.is_folder else n.rev))
        self.remote.remove_subtree(k)


def _held_keys(hold: Iterable[str]) -> set[str]:
    held: set[str] = set()
    for path in hold:
        try:
            held.add(path_key(path))
        except MalformedPath:
            continue
    return held


def _without_held(trees: list[Tree], held: set[str]) -> list[Tree]:
    """The trees without the keys in `held` and everything below them."""
    if not held:
        return trees

    def keep(n: Node) -> bool:
        return n.key not in held and not any(a in held for a in ancestor_keys(n.key))

    return [
        Tree({n.key: n for n in t.nodes() if keep(n)}, [n for n in t.twins if keep(n)])
        for t in trees
    ]


def _without_ignored(trees: list[Tree], ignore: IgnoreRules) -> list[Tree]:
    # Each entry is matched by itself; what is below an ignored key goes with it.
    ignored: set[str] = set()
    seen: set[tuple[str, bool]] = set()
    for t in trees:
        for n in (*t.nodes(), *t.twins):
            probe = (n.path, n.is_folder)
            if probe not in seen:
                seen.add(probe)
                if ignore.matches(n.path, is_folder=n.is_folder):
                    ignored.add(n.key)
    if not ignored:
        return trees

    def keep(n: Node) -> bool:
        return n.key not in ignored and not any(a in ignored for a in ancestor_keys(n.key))

    return [
        Tree({n.key: n for n in t.nodes() if keep(n)}, [n for n in t.twins if keep(n)])
        for t in trees
    ]


def settled(local: Tree, remote: Tree, synced: Tree) -> bool:
    """Do the three trees agree everywhere: the same keys on every side, no local twins, and
    for every key the synced node is what the local and remote nodes agree on (`agreed`)?

    Then `plan` has nothing to do, whatever the ignore rules and held keys (they hide the same
    keys on every side, which still agree): every side reads SAME, nothing moved, nothing is
    dirty. A caller may skip planning on True; False says nothing (plan to find out). One
    comparison per entry, no allocation: a no-op pass over 100,000 entries costs a fraction of
    planning them, and the pass that reads back its own uploads is one too."""
    if local.twins or not len(local) == len(remote) == len(synced):
        return False
    lget, rget = local.get, remote.get
    for syn in synced.nodes():
        loc, rem = lget(syn.key), rget(syn.key)
        if (
            loc is None
            or rem is None
            or rem.path != loc.path  # a name to fix
            or not _agrees(loc, rem, syn)
            or not same_content(rem, syn)  # the server's content, not only its rev
        ):
            return False
    return True


def plan(
    local: Tree,
    remote: Tree,
    synced: Tree,
    *,
    host: str,
    today: str,
    max_delete_share: float,
    max_delete_floor: int = 0,
    ignore: IgnoreRules | None = None,
    hold: Iterable[str] = (),
) -> Plan:
    """Plan one sync pass. Pure and deterministic: same trees in, same plan out.

    `local` comes from `Tree.from_nodes(scan, prefer=synced)` (it may hold twins); `host` and
    `today` ("YYYY-MM-DD") name conflicted copies; a pass that would delete more than
    `max_delete_share` (0..1) of the synced tree's entries, and more than `max_delete_floor`
    entries, is refused. `ignore` (default: the default patterns) hides entries on all sides;
    so does `hold` (display paths whose local state is unknown this pass, `ScanResult.unknown`:
    absent from the local tree, they would otherwise read as deleted; and the server's entries
    this client cannot represent), and no new name (a twin's, a conflicted copy's) takes a
    held key.
    """
    if not 0.0 <= max_delete_share <= 1.0:
        raise ValueError(f"max_delete_share must be within [0, 1], not {max_delete_share}")
    held = _held_keys(hold)
    local, remote, synced = _without_ignored(
        _without_held([local, remote, synced], held),
        ignore if ignore is not None else IgnoreRules(),
    )
    p = _Planner(local, remote, synced, host=host, today=today, held=held)
    p.rename_twins()
    p.follow_remote_moves()
    p.send_local_moves()
    p.compute_dirty()
    p.merge_all()
    ops = (*p.structural, *p.transfers)
    deletes = sum(1 for op in ops if op.kind in (OpKind.DELETE_LOCAL, OpKind.DELETE_REMOTE))
    entries = len(synced)
    msgs = tuple(p.messages)
    if deletes > max_delete_floor and deletes > max_delete_share * entries:
        why = (
            f"refusing to sync: this pass would delete {deletes} of {entries} synced entries "
            f"({deletes / max(entries, 1):.0%}), more than max_delete_share "
            f"({max_delete_share:.0%}) allows. If the deletions are intended, run again with a "
            f"higher share; if not, restore the missing files."
        )
        return Plan((), why, ops, msgs, deletes, entries)
    return Plan(ops, None, (), msgs, deletes, entries)


__all__ = [
    "ConflictCopy",
    "DeleteLocal",
    "DeleteRemote",
    "Download",
    "MkdirLocal",
    "MkdirRemote",
    "MoveLocal",
    "MoveRemote",
    "Op",
    "OpKind",
    "Plan",
    "RenameTwin",
    "UpdateSynced",
    "Upload",
    "conflicted_copy_name",
    "plan",
    "settled",
    "twin_name",
]
