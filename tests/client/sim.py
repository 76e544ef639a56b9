"""A tiny in-memory model of both sides of a sync, and a strict executor for plans.

`LocalDisk` is a case-sensitive disk (so it can hold twins); `Server` is case-insensitive
(keys, as the real one) with ids and revs. `Executor.run` carries out a `Plan` by the contracts
in `raftbox.client.planner`, asserting every precondition the planner promises; with `racy`
set it also re-checks as a real executor must (and keeps changed files as conflicted copies).
Content is a token string: the content hash is the token itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from raftbox.client import (
    Kind,
    Node,
    OpKind,
    Plan,
    Tree,
    agreed,
    conflicted_copy_name,
    path_key,
    plan,
    settled,
)
from raftbox.meta.paths import component_key, is_in_subtree

HOST = "box"
TODAY = "2024-05-01"


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


@dataclass
class LEnt:
    kind: Kind
    content: str | None = None  # file content or symlink target
    executable: bool = False
    inode: int = 0
    mtime: int = 0


@dataclass
class REnt:
    path: str
    kind: Kind
    content: str | None
    executable: bool
    id: str
    rev: str


class LocalDisk:
    def __init__(self, clock: itertools.count):
        self.e: dict[str, LEnt] = {}
        self.clock = clock

    def tick(self) -> int:
        return next(self.clock)

    def node(self, path: str) -> Node | None:
        x = self.e.get(path)
        if x is None:
            return None
        return Node(
            path,
            x.kind,
            content_hash=x.content if x.kind is Kind.FILE else None,
            size=len(x.content or ""),
            mtime_ns=x.mtime,
            inode=x.inode,
            executable=x.executable if x.kind is Kind.FILE else None,
            link_target=x.content if x.kind is Kind.SYMLINK else None,
        )

    def scan(self) -> list[Node]:
        return [self.node(p) for p in self.e]  # type: ignore[misc]

    def is_folder(self, path: str) -> bool:
        return path == "" or (path in self.e and self.e[path].kind is Kind.FOLDER)

    def below(self, path: str) -> list[str]:
        return [p for p in self.e if p.startswith(path + "/")]

    def write(self, path: str, kind: Kind, content: str, executable: bool = False) -> None:
        """Atomic replace (temp + rename): a new inode."""
        assert self.is_folder(_parent(path)), f"no local parent for {path}"
        old = self.e.get(path)
        assert old is None or old.kind is not Kind.FOLDER, f"write over local folder {path}"
        self.e[path] = LEnt(kind, content, executable, self.tick(), self.tick())

    def edit(self, path: str, content: str, in_place: bool) -> None:
        x = self.e[path]
        x.content, x.mtime = content, self.tick()
        if not in_place:
            x.inode = self.tick()

    def mkdir(self, path: str) -> None:
        assert self.is_folder(_parent(path)), f"no local parent for {path}"
        if path in self.e:
            assert self.e[path].kind is Kind.FOLDER, f"mkdir over local file {path}"
            return
        self.e[path] = LEnt(Kind.FOLDER, inode=self.tick())

    def rename(self, src: str, dst: str) -> None:
        assert src in self.e, f"local rename: no {src}"
        assert dst not in self.e, f"local rename: {dst} exists"
        assert self.is_folder(_parent(dst)), f"local rename: no parent for {dst}"
        assert not dst.startswith(src + "/"), "local rename into itself"
        for p in [src, *self.below(src)]:
            self.e[dst + p[len(src) :]] = self.e.pop(p)

    def delete(self, path: str) -> None:
        for p in [*self.below(path), path]:
            del self.e[p]


class Server:
    def __init__(self, clock: itertools.count):
        self.e: dict[str, REnt] = {}
        self.clock = clock

    def rev(self) -> str:
        return f"{next(self.clock):09x}"

    def node(self, key: str) -> Node | None:
        x = self.e.get(key)
        if x is None:
            return None
        return Node(
            x.path,
            x.kind,
            content_hash=x.content if x.kind is Kind.FILE else None,
            size=len(x.content or ""),
            executable=x.executable if x.kind is Kind.FILE else None,
            link_target=x.content if x.kind is Kind.SYMLINK else None,
            remote_id=x.id,
            rev=None if x.kind is Kind.FOLDER else x.rev,
        )

    def scan(self) -> list[Node]:
        return [self.node(k) for k in self.e]  # type: ignore[misc]

    def is_folder(self, key: str) -> bool:
        return key == "" or (key in self.e and self.e[key].kind is Kind.FOLDER)

    def below(self, key: str) -> list[str]:
        return [k for k in self.e if k.startswith(key + "/")]

    def upload(self, path, kind, content, executable, parent_rev) -> REnt | None:
        """None: refused (conflict), as files/upload in add mode or update(parent_rev)."""
        k = path_key(path)
        if not self.is_folder(_parent(k)):
            return None
        cur = self.e.get(k)
        if parent_rev is None:
            if cur is not None:
                return None
            x = REnt(path, kind, content, executable, f"id:{next(self.clock)}", self.rev())
        else:
            if cur is None or cur.kind is Kind.FOLDER or cur.rev != parent_rev:
                return None
            x = replace(cur, kind=kind, content=content, executable=executable, rev=self.rev())
        self.e[k] = x
        return x

    def mkdir(self, path: str) -> REnt | None:
        k = path_key(path)
        if not self.is_folder(_parent(k)) or k in self.e:
            return None
        x = REnt(path, Kind.FOLDER, None, False, f"id:{next(self.clock)}", self.rev())
        self.e[k] = x
        return x

    def delete(self, path: str, rev: str | None, *, recursive: bool = False) -> bool:
        k = path_key(path)
        cur = self.e.get(k)
        if cur is None or (rev is not None and cur.rev != rev):
            return False
        if self.below(k) and not recursive:
            return False
        for kk in [*self.below(k), k]:
            del self.e[kk]
        return True

    def move(self, src: str, dst: str) -> bool:
        sk, dk = path_key(src), path_key(dst)
        if (
            sk not in self.e
            or not self.is_folder(_parent(dk))
            or is_in_subtree(dk, sk)
            and dk != sk
        ):
            return False
        if dk in self.e and dk != sk:
            return False
        n = src.count("/")
        for k in [sk, *self.below(sk)]:
            x = self.e.pop(k)
            rest = x.path.split("/")[n + 1 :]
            x.path = dst + "".join("/" + c for c in rest)
            self.e[path_key(x.path)] = x
        return True


class Executor:
    """Runs plans against a `LocalDisk` and a `Server`, keeping the synced tree.

    Strict (`racy=False`): nothing else happens between planning and executing, so every
    precondition the planner promises must hold; a failure is a planner bug. Racy: re-check as
    the contracts say and fall back to conflicted copies.
    """

    def __init__(self, disk: LocalDisk, server: Server, *, racy: bool = False):
        self.disk, self.server, self.racy = disk, server, racy
        self.synced = Tree()
        self.conflicts = 0  # executor-level conflicted copies (racy mode)

    def trees(self) -> tuple[Tree, Tree, Tree]:
        return (
            Tree.from_nodes(self.disk.scan(), prefer=self.synced),
            Tree.from_nodes(self.server.scan()),
            self.synced,
        )

    def plan(self, **kw) -> Plan:
        local, remote, synced = self.trees()
        args = dict(host=HOST, today=TODAY, max_delete_share=1.0) | kw
        p = plan(local, remote, synced, **args)
        # Deterministic, and independent of the order the scanners list entries in.
        local2 = Tree.from_nodes(reversed(self.disk.scan()), prefer=self.synced)
        remote2 = Tree.from_nodes(reversed(self.server.scan()))
        assert plan(local2, remote2, synced, **args) == p, "plan is not deterministic"
        # The engine skips planning when the trees are settled: that must never hide work.
        assert not settled(local, remote, synced) or p.is_empty, "settled, yet a plan"
        return p

    def sync(self, max_passes: int = 8) -> int:
        """Plan and execute until a plan is empty; the number of passes that did something."""
        for i in range(max_passes):
            p = self.plan()
            assert p.refused is None
            if p.is_empty:
                return i
            self.run(p)
        raise AssertionError(f"no quiescence after {max_passes} passes; last plan: {p.ops}")

    # -- execution -------------------------------------------------------------------------

    def _record(self, node: Node | None, path: str) -> None:
        if node is None:
            self.synced = self.synced.without(path_key(path))
        else:
            self.synced = self.synced.with_node(node)

    def _unchanged(self, path: str, expect: Node | None) -> bool:
        now = self.disk.node(path)
        ok = now == expect
        assert ok or self.racy, f"{path} changed between plan and execution: {expect} → {now}"
        return ok

    def _aside(self, path: str) -> None:
        """Executor-level conflict: keep what is at `path` as a conflicted copy, upload it."""
        name = conflicted_copy_name(
            path.rsplit("/", 1)[1],
            host=HOST,
            today=TODAY,
            is_folder=self.disk.is_folder(path),
            taken=lambda nm: (
                any(path_key(p) == path_key(_parent(path) + "/" + nm) for p in self.disk.e)
                or path_key(_parent(path) + "/" + nm) in self.server.e
            ),
        )
        self.disk.rename(path, _parent(path) + "/" + name)
        self.conflicts += 1  # uploaded by the next pass (it is a new local entry)

    def run(self, p: Plan) -> None:
        """Run a plan as the contract says: a structural operation that does not go as planned
        ends the pass (later ones may depend on it); a transfer that does not affects nothing
        else."""
        for op in p.ops:
            if not self.run_op(op) and op.kind not in (OpKind.UPLOAD, OpKind.DOWNLOAD):
                return

    def run_op(self, op) -> bool:  # noqa: C901 - one branch per operation kind, as the contract
        """Carry out one operation; False if it was skipped or refused."""
        d, s = self.disk, self.server
        k = op.kind
        if k in (OpKind.RENAME_TWIN, OpKind.CONFLICT_COPY):
            src, dst = (op.src, op.dst) if k is OpKind.RENAME_TWIN else (op.path, op.new_path)
            if self.racy and (src not in d.e or dst in d.e):
                return False
            d.rename(src, dst)
        elif k is OpKind.MOVE_LOCAL:
            if self.racy and (op.src not in d.e or op.dst in d.e):
                return False
            d.rename(op.src, op.dst)
            self.synced = self.synced.moved(path_key(op.src), op.dst)
        elif k is OpKind.MOVE_REMOTE:
            ok = s.move(op.src, op.dst)
            assert ok or self.racy, f"server refused {op}"
            if not ok:
                return False
            self.synced = self.synced.moved(path_key(op.src), op.dst)
        elif k is OpKind.MKDIR_LOCAL:
            if self.racy and not (d.is_folder(_parent(op.path)) and d.e.get(op.path) is None):
                return False
            d.mkdir(op.path)
            self._record(agreed(d.node(op.path), op.node), op.path)
        elif k is OpKind.MKDIR_REMOTE:
            r = s.mkdir(op.path)
            assert r is not None or self.racy, f"server refused {op}"
            here = d.node(op.node.path)
            if r is None or here is None or not here.is_folder:
                return False
            self._record(agreed(here, s.node(path_key(op.path))), op.node.path)
        elif k is OpKind.DELETE_LOCAL:
            if not self._unchanged(op.path, op.expect):
                if d.node(op.path) is not None and not d.is_folder(op.path):
                    self._aside(op.path)
                return False
            if op.expect.is_folder and d.below(op.path):
                assert self.racy, f"local folder {op.path} not empty"
                return False
            d.delete(op.path)
            self._record(None, op.path)
        elif k is OpKind.DELETE_REMOTE:
            ok = s.delete(op.path, op.rev)
            assert ok or self.racy, f"server refused {op}"
            if not ok:
                return False
            self._record(None, op.path)
        elif k is OpKind.UPDATE_SYNCED:
            self._record(op.node, op.path)
        elif k is OpKind.UPLOAD:
            now = d.node(op.path)
            assert now == op.node or self.racy, f"{op.path} changed before upload"
            if now is None or now.is_folder:
                return False
            x = d.e[op.path]
            r = s.upload(op.path, x.kind, x.content, x.executable, op.parent_rev)
            assert r is not None or self.racy, f"server refused {op}"
            if r is None:
                self._aside(op.path)  # server-side conflict: keep ours as a copy
                return False
            self._record(agreed(now, s.node(path_key(op.path))), op.path)
        elif k is OpKind.DOWNLOAD:
            if not self._unchanged(op.path, op.expect):
                if d.node(op.path) is None or d.is_folder(op.path):
                    return False  # vanished, or a folder now: the next pass decides
                self._aside(op.path)
            if self.racy and not d.is_folder(_parent(op.path)):
                return False
            n = op.node
            d.write(op.path, n.kind, n.content_hash or n.link_target, bool(n.executable))
            self._record(agreed(d.node(op.path), n), op.path)
        else:  # pragma: no cover
            raise AssertionError(f"unknown op {op}")
        return True


def view_local(disk: LocalDisk) -> dict[str, tuple]:
    """key → (name, kind, content, executable); twins make it fail (they must be gone)."""
    out: dict[str, tuple] = {}
    for p, x in disk.e.items():
        k = path_key(p)
        assert k not in out, f"local twins remain: {p}"
        out[k] = (p.rsplit("/", 1)[1], x.kind, x.content, x.executable and x.kind is Kind.FILE)
    return out


def view_remote(server: Server) -> dict[str, tuple]:
    return {
        k: (x.path.rsplit("/", 1)[1], x.kind, x.content, x.executable and x.kind is Kind.FILE)
        for k, x in server.e.items()
    }


def view_synced(t: Tree) -> dict[str, tuple]:
    return {
        k: (
            n.name,
            n.kind,
            n.content_hash or n.link_target,
            bool(n.executable) and n.kind is Kind.FILE,
        )
        for k, n in t.items()
    }


def key_of(parent_key: str, name: str) -> str:
    return f"{parent_key}/{component_key(name)}"
