"""Walking a sync folder into the local `trees.Tree`, re-reading only what changed.

`scan(root, cache)` lists the folder with `os.scandir` / `lstat` (never following a link) and
returns a `ScanResult`: the local tree (built with `Tree.from_nodes`, so colliding names go to
`twins`), the blocklist of every file, and what was skipped. Per entry:

- a folder is a FOLDER node (with its inode, so the planner can match renamed folders);
- a symlink is a SYMLINK node whose content is `os.readlink` (the target is never followed);
- a regular file is a FILE node with size, mtime_ns, inode, the executable bit (owner x) and its
  Dropbox content hash. The hash and blocklist come from the cache when `(inode, size, mtime_ns)`
  match a cache entry; otherwise the file is read once with `blocks.chunker.chunk_file` (cutting
  and hashing in one pass); it is cached unless modified within `RACY_NS` of the scan
  (racily clean: a second write in the same mtime tick would go unseen). A file that changes
  while it is read (its stat differs afterwards) is read again, up to `retries` times, and
  then reported as unstable, never cached;
- anything else (sockets, fifos, devices), names the server would refuse (`malformed_path`) and
  names that are not valid UTF-8 are skipped and reported in `skipped`; so is anything that
  vanished or could not be read during the scan.

Ignore rules are `ignore.IgnoreRules` with the root's `.raftboxignore` (defaults include the
`.raftbox/` state folder); an ignored folder is not descended into. The cache is anything with
`cache_get`/`cache_put_many`/`cache_retain` (`index.Index`, or `MemoryCache` in tests); new
entries are written in one batch at the end, and entries of inodes no longer present are dropped.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from raftbox.blocks.chunker import CDC, Chunking, chunk_file
from raftbox.meta.paths import MalformedPath

from .ignore import IGNORE_FILE, IgnoreRules
from .index import CacheEntry
from .trees import Kind, Node, Tree, path_key

# A file modified less than this before it was read is not cached: another write within the
# same mtime tick would leave (inode, size, mtime_ns) unchanged ("racily clean", as in git).
RACY_NS = 2_000_000_000


class ScanCache(Protocol):
    def cache_get(self, inode: int, size: int, mtime_ns: int) -> CacheEntry | None: ...
    def cache_put_many(self, entries: Iterable[CacheEntry]) -> None: ...
    def cache_retain(self, inodes: Iterable[int]) -> int: ...


class MemoryCache:
    """An in-memory `ScanCache` (tests, one-off scans)."""

    def __init__(self) -> None:
        self.entries: dict[int, CacheEntry] = {}

    def cache_get(self, inode: int, size: int, mtime_ns: int) -> CacheEntry | None:
        e = self.entries.get(inode)
        return e if e is not None and (e.size, e.mtime_ns) == (size, mtime_ns) else None

    def cache_put_many(self, entries: Iterable[CacheEntry]) -> None:
        for e in entries:
            self.entries[e.inode] = e

    def cache_retain(self, inodes: Iterable[int]) -> int:
        keep = set(inodes)
        gone = [i for i in self.entries if i not in keep]
        for i in gone:
            del self.entries[i]
        return len(gone)


@dataclass
class ScanResult:
    tree: Tree
    blocklists: dict[str, tuple[tuple[str, int], ...]] = field(
        default_factory=dict
    )  # path → blocks
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    hashed: int = 0  # files read this scan
    cached: int = 0  # files answered by the cache


def load_rules(root: str | os.PathLike[str]) -> IgnoreRules:
    """The default rules plus the root's `.raftboxignore`, if any."""
    try:
        text = (Path(root) / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    return IgnoreRules.from_text(text)


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns)  # fmt: skip


def scan(
    root: str | os.PathLike[str],
    cache: ScanCache | None = None,
    *,
    chunking: Chunking = CDC,
    rules: IgnoreRules | None = None,
    prefer: Tree | None = None,
    retries: int = 3,
) -> ScanResult:
    """Scan `root` (see the module doc). `prefer`: the synced tree, for `Tree.from_nodes`."""
    root = os.fspath(root)
    cache = cache if cache is not None else MemoryCache()
    rules = rules if rules is not None else load_rules(root)
    res = ScanResult(tree=Tree())
    nodes: list[Node] = []
    new_entries: list[CacheEntry] = []
    seen_inodes: list[int] = []

    def visit(abs_dir: str, rel_dir: str) -> None:
        try:
            it = list(os.scandir(abs_dir))
        except OSError as e:
            res.skipped.append((rel_dir or "/", f"cannot list: {e.strerror}"))
            return
        for de in sorted(it, key=lambda d: d.name):
            rel = f"{rel_dir}/{de.name}"
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                res.skipped.append((rel.encode("utf-8", "surrogateescape").decode("utf-8",
                                    "replace"), "name is not UTF-8"))  # fmt: skip
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as e:
                res.skipped.append((rel, f"vanished or unreadable: {e.strerror}"))
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if rules.is_ignored(rel, is_folder=is_dir):
                continue
            try:
                path_key(rel)
            except MalformedPath:
                res.skipped.append((rel, "name not allowed on the server"))
                continue
            if is_dir:
                nodes.append(Node(path=rel, kind=Kind.FOLDER, inode=st.st_ino))
                visit(de.path, rel)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(de.path)
                except OSError as e:
                    res.skipped.append((rel, f"unreadable link: {e.strerror}"))
                    continue
                nodes.append(Node(path=rel, kind=Kind.SYMLINK, link_target=target,
                                  size=len(os.fsencode(target)), mtime_ns=st.st_mtime_ns,
                                  inode=st.st_ino))  # fmt: skip
            elif stat.S_ISREG(st.st_mode):
                node = file_node(de.path, rel, st)
                if node is not None:
                    nodes.append(node)
            else:
                res.skipped.append((rel, "not a file, folder or symlink"))

    def file_node(abs_path: str, rel: str, st: os.stat_result) -> Node | None:
        hit = cache.cache_get(st.st_ino, st.st_size, st.st_mtime_ns)
        if hit is not None:
            res.cached += 1
            entry = hit
        else:
            for _ in range(retries):
                try:
                    cf = chunk_file(abs_path, chunking)
                    for _chunk in cf:
                        pass
                    after = os.lstat(abs_path)
                except OSError as e:
                    res.skipped.append((rel, f"vanished or unreadable: {e.strerror}"))
                    return None
                res.hashed += 1
                if _same_stat(st, after) and cf.size == st.st_size:
                    break
                st = after
                if not stat.S_ISREG(st.st_mode):
                    res.skipped.append((rel, "changed kind while scanned"))
                    return None
            else:
                res.skipped.append((rel, "keeps changing while scanned"))
                return None
            assert cf.content_hash is not None
            entry = CacheEntry(st.st_ino, st.st_size, st.st_mtime_ns, cf.content_hash,
                               tuple(cf.blocks))  # fmt: skip
            if time.time_ns() - st.st_mtime_ns >= RACY_NS:
                new_entries.append(entry)
        seen_inodes.append(st.st_ino)
        res.blocklists[rel] = entry.blocklist
        return Node(path=rel, kind=Kind.FILE, content_hash=entry.content_hash, size=st.st_size,
                    mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                    executable=bool(st.st_mode & stat.S_IXUSR))  # fmt: skip

    visit(root, "")
    cache.cache_put_many(new_entries)
    cache.cache_retain(seen_inodes)
    res.tree = Tree.from_nodes(nodes, prefer=prefer)
    return res
