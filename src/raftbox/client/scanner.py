"""Walking a sync folder into the local `trees.Tree`, re-reading only what changed.

`scan(root, cache)` lists the folder with `os.scandir` / `lstat` (never following a link) and
returns a `ScanResult`: the local tree (built with `Tree.from_nodes`, so colliding names go to
`twins`), the blocklist of every file, and what was skipped. Per entry:

- a folder is a FOLDER node (with its inode, so the planner can match renamed folders);
- a symlink is a SYMLINK node whose content is `os.readlink` (the target is never followed);
- a regular file is a FILE node with size, mtime_ns, inode, the executable bit (owner x) and its
  Dropbox content hash. The hash and blocklist come from the cache when `(inode, size, mtime_ns)`
  match a cache entry; otherwise the file is read once (`_read_file`: the blocks it had before
  are kept while they still match, the rest is cut and hashed in one pass); it is cached
  unless modified within one mtime tick of the scan (`racy`: a second write in the same tick
  would go unseen). A file that changes
  while it is read (its stat differs afterwards) is read again, up to `retries` times, and
  then reported as unstable, never cached;
- anything else (sockets, fifos, devices), names the server would refuse (`malformed_path`) and
  names that are not valid UTF-8 are skipped and reported in `skipped`; so is anything that
  vanished or could not be read during the scan, and a folder at depth `limits.DEPTH_MAX`
  that holds anything (held whole, as the engine holds the server's: the walk never recurses
  deeper than that).

Ignore rules are `ignore.IgnoreRules` with the root's `.raftboxignore` (defaults include the
`.raftbox/` state folder); an ignored folder is not descended into. The cache is anything with
`cache_get`/`cache_put_many`/`cache_retain` (`index.Index`, or `MemoryCache` in tests); one that
also has `cache_load_all` is read whole in one call at the start instead of once per file. New
entries are written in one batch at the end, and entries of inodes no longer present are dropped.

Cost of an unchanged rescan: one `lstat` and one `Node` per entry; nothing is done per path
that can be done per folder or per name: a name is validated and keyed on its own (its folder's
path already was; the key is the folder's key + the name's, as `meta.paths.parse_path` makes
it, so nodes are built with `Node.trusted`), ignore rules are matched against the entry alone
(its folders were not ignored, or it would not be visited), and the tree is built directly
when no two names collide. The cyclic garbage collector is paused during a scan: a scan makes
hundreds of thousands of objects and keeps most of them, and the collections their number
triggers re-traverse the whole heap again and again (a third of an unchanged rescan of 100,000
files); what it frees is freed by reference counting anyway.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from raftbox.blocks.chunker import CDC, Chunker, Chunking
from raftbox.blocks.hashing import ContentHasher
from raftbox.meta.paths import PATH_MAX_BYTES, MalformedPath, component_key, validate_name

from .ignore import IGNORE_FILE, IgnoreRules
from .index import CacheEntry
from .limits import DEPTH_MAX, deep_reason
from .trees import Kind, Node, Tree

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

    def cache_load_all(self) -> dict[int, CacheEntry]:
        return dict(self.entries)

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
    # Entries whose state could not be read (unreadable, unlistable, changing while read, not
    # a file/folder/link): the planner leaves them and their subtrees alone this pass, since
    # missing from the tree would read as deleted.
    unknown: list[str] = field(default_factory=list)
    hashed: int = 0  # files read this scan
    cached: int = 0  # files answered by the cache


def load_rules(root: str | os.PathLike[str]) -> IgnoreRules:
    """The default rules plus the root's `.raftboxignore`, if any."""
    try:
        text = (Path(root) / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    return IgnoreRules.from_text(text)


def same_stat(a: os.stat_result, b: os.stat_result) -> bool:
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
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Scan `root` (see the module doc). `prefer`: the synced tree, for `Tree.from_nodes`;
    `progress(files, bytes_read)` is called after each file (from the scanning thread)."""
    with _gc_paused():
        return _scan(os.fspath(root), cache, chunking, rules, prefer, retries, progress)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic collection inside (reference counting still frees everything acyclic)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _scan(
    root: str,
    cache: ScanCache | None,
    chunking: Chunking,
    rules: IgnoreRules | None,
    prefer: Tree | None,
    retries: int,
    progress: Callable[[int, int], None] | None,
) -> ScanResult:
    started = time.time_ns()  # every file is read after this
    cache = cache if cache is not None else MemoryCache()
    rules = rules if rules is not None else load_rules(root)
    res = ScanResult(tree=Tree())
    nodes: list[Node] = []
    new_entries: list[CacheEntry] = []
    seen_inodes: list[int] = []
    load_all = getattr(cache, "cache_load_all", None)  # optional: one read, not one per file
    known: dict[int, CacheEntry] | None = load_all() if load_all is not None else None
    blocklists = res.blocklists
    skipped = res.skipped
    unknown = res.unknown
    ignored = rules.matches

    def visit(abs_dir: str, rel_dir: str, key_dir: str, rel_dir_bytes: int) -> None:
        """`rel_dir` ("" for the root) is valid and not ignored, with key `key_dir` and
        `rel_dir_bytes` bytes of UTF-8."""
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=_name)
        except OSError as e:
            skipped.append((rel_dir or "/", f"cannot list: {e.strerror}"))
            unknown.append(rel_dir or "/")
            return
        if entries and rel_dir.count("/") >= DEPTH_MAX:  # as `limits.held_entries` holds it
            skipped.append((rel_dir, deep_reason()))
            unknown.append(rel_dir)
            return
        for de in entries:
            name = de.name
            rel = f"{rel_dir}/{name}"
            try:
                rel_bytes = rel_dir_bytes + 1 + len(name.encode("utf-8"))
            except UnicodeEncodeError:
                skipped.append((rel.encode("utf-8", "surrogateescape").decode("utf-8",
                                "replace"), "name is not UTF-8"))  # fmt: skip
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except OSError as e:
                skipped.append((rel, f"vanished or unreadable: {e.strerror}"))
                unknown.append(rel)
                continue
            mode = st.st_mode
            is_dir = stat.S_ISDIR(mode)
            if ignored(rel, is_folder=is_dir):  # its folders were matched on the way down
                continue
            try:  # the folder's path is valid: the name and the length are what is left
                validate_name(name)
                if rel_bytes > PATH_MAX_BYTES:
                    raise MalformedPath("path too long")
            except MalformedPath:
                skipped.append((rel, "name not allowed on the server"))
                continue
            key = f"{key_dir}/{component_key(name)}"
            if is_dir:
                nodes.append(Node.trusted(key, rel, Kind.FOLDER, inode=st.st_ino))
                visit(de.path, rel, key, rel_bytes)
            elif stat.S_ISLNK(mode):
                try:
                    target = os.readlink(de.path)
                except OSError as e:
                    skipped.append((rel, f"unreadable link: {e.strerror}"))
                    unknown.append(rel)
                    continue
                nodes.append(Node.trusted(key, rel, Kind.SYMLINK, link_target=target,
                                          size=len(os.fsencode(target)),
                                          mtime_ns=st.st_mtime_ns, inode=st.st_ino))  # fmt: skip
            elif stat.S_ISREG(mode):
                if known is not None:
                    hit = known.get(st.st_ino)
                    if hit is not None and (hit.size != st.st_size or
                                            hit.mtime_ns != st.st_mtime_ns):  # fmt: skip
                        hit = None
                else:
                    hit = cache.cache_get(st.st_ino, st.st_size, st.st_mtime_ns)
                if hit is not None:
                    res.cached += 1
                    if progress is not None:
                        progress(1, 0)
                    seen_inodes.append(st.st_ino)
                    blocklists[rel] = hit.blocklist
                    nodes.append(Node.trusted(key, rel, Kind.FILE, hit.content_hash,
                                              size=st.st_size, mtime_ns=st.st_mtime_ns,
                                              inode=st.st_ino,
                                              executable=bool(mode & stat.S_IXUSR)))  # fmt: skip
                else:
                    node = file_node(de.path, rel, key, st)
                    if node is not None:
                        nodes.append(node)
            else:
                skipped.append((rel, "not a file, folder or symlink"))
                unknown.append(rel)

    def file_node(abs_path: str, rel: str, key: str, st: os.stat_result) -> Node | None:
        """A file the cache does not know as it is: read it (the blocks it had before, while
        they still match, then cut the rest: see `_read_file`)."""
        old = known.get(st.st_ino) if known is not None else None
        for _ in range(retries):
            try:
                blocks, size, content_hash = _read_file(abs_path, chunking, old)
                after = os.lstat(abs_path)
            except OSError as e:
                skipped.append((rel, f"vanished or unreadable: {e.strerror}"))
                unknown.append(rel)
                return None
            res.hashed += 1
            if progress is not None:
                progress(1, size)
            if same_stat(st, after) and size == st.st_size:
                break
            st = after
            if not stat.S_ISREG(st.st_mode):
                skipped.append((rel, "changed kind while scanned"))
                unknown.append(rel)
                return None
        else:
            skipped.append((rel, "keeps changing while scanned"))
            unknown.append(rel)
            return None
        entry = remembered(st.st_ino, st.st_size, st.st_mtime_ns, content_hash, blocks, started)
        new_entries.append(entry)
        seen_inodes.append(st.st_ino)
        blocklists[rel] = entry.blocklist
        return Node.trusted(key, rel, Kind.FILE, entry.content_hash, size=st.st_size,
                            mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                            executable=bool(st.st_mode & stat.S_IXUSR))  # fmt: skip

    visit(root, "", "", 0)
    if new_entries:
        cache.cache_put_many(new_entries)
    if known is None or not known.keys() <= set(seen_inodes):
        cache.cache_retain(seen_inodes)
    by_key = {n.key: n for n in nodes}
    if len(by_key) == len(nodes):  # no two names share a key: nothing for from_nodes to choose
        res.tree = Tree(by_key)
    else:
        res.tree = Tree.from_nodes(nodes, prefer=prefer)
    return res


HINT_MTIME = -1  # matches no stat: the entry is only a hint of the blocks (see `as_hint`)


def as_hint(entry: CacheEntry) -> CacheEntry:
    """`entry` kept only as a hint for the next read of its inode (`_read_file` checks every
    block it reuses by its hash), never as a cache hit: a racily clean file's stat proves
    nothing, but its blocks are still the likeliest content of its next version."""
    return CacheEntry(entry.inode, entry.size, HINT_MTIME, entry.content_hash, entry.blocklist)


def remembered(
    inode: int,
    size: int,
    mtime_ns: int,
    content_hash: str,
    blocks: Iterable[tuple[str, int]],
    read_started_ns: int,
) -> CacheEntry:
    """The cache entry for a file read after `read_started_ns`: a hit for the next scan, or
    only a hint of its blocks if it was racily clean (`racy`, `as_hint`)."""
    entry = CacheEntry(inode, size, mtime_ns, content_hash, tuple(blocks))
    return as_hint(entry) if racy(mtime_ns, read_started_ns) else entry


def racy(mtime_ns: int, read_started_ns: int) -> bool:
    """Could a file modified at `mtime_ns`, read after `read_started_ns`, be written again
    after that read without its stat changing ("racily clean", as in git)?

    Only if the write could fall in the same mtime tick. Sub-second timestamps tick in
    milliseconds (ext4, xfs, btrfs, apfs): a 100 ms margin covers them. A whole-second mtime may
    come from a coarse filesystem (FAT: 2 s), so it gets `RACY_NS`."""
    margin = RACY_NS if mtime_ns % 1_000_000_000 == 0 else 100_000_000
    return mtime_ns >= read_started_ns - margin


def _read_file(
    path: str, chunking: Chunking, old: CacheEntry | None
) -> tuple[tuple[tuple[str, int], ...], int, str]:
    """(blocklist, size, content hash) of the file at `path`, read once.

    With `old` (what the file held the last time it was read), its blocks are kept for as long
    as they still match, in order, at their old offsets (hashed, not cut), and only the rest is
    cut. Any blocklist is a valid one; this one keeps an appended or tail-edited file's old
    blocks whole, where cutting afresh would end the old last block elsewhere and send it
    again (with 1 MiB average blocks, an append of 1 MiB cost ~2 MiB). After a change in the
    middle, cutting resumes at an old block boundary, so it falls back into step with the old
    cuts soon after the change, as content-defined chunking does."""
    hasher = ContentHasher()
    blocks: list[tuple[str, int]] = []
    with open(path, "rb") as f:
        if old is not None:
            for bid, size in old.blocklist:
                data = f.read(size)
                if len(data) != size or hashlib.sha256(data).hexdigest() != bid:
                    f.seek(-len(data), os.SEEK_CUR)
                    break
                hasher.update(data)
                blocks.append((bid, size))
        ch = Chunker(chunking)
        # Two hashes of the bytes are needed (each block's, and the content hash's 4 MiB
        # windows): for a big file the second runs in a helper thread, beside the cutting
        # (hashlib releases the GIL), which takes a quarter off the time.
        pending = None
        helper = (
            _hash_thread() if os.fstat(f.fileno()).st_size - f.tell() > _PARALLEL_BYTES else None
        )
        while piece := f.read(_READ_BYTES):
            if helper is None:
                hasher.update(piece)
            else:
                if pending is not None:
                    pending.result()
                pending = helper.submit(hasher.update, piece)
            blocks.extend((c.id, c.size) for c in ch.feed(piece))
        if pending is not None:
            pending.result()
        blocks.extend((c.id, c.size) for c in ch.finish())
        size = f.tell()
    return tuple(blocks), size, hasher.hexdigest()


_READ_BYTES = 4 * 1024 * 1024
_PARALLEL_BYTES = 8 * 1024 * 1024
_hasher_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _hash_thread() -> concurrent.futures.ThreadPoolExecutor:
    global _hasher_pool
    if _hasher_pool is None:
        _hasher_pool = concurrent.futures.ThreadPoolExecutor(2, "raftbox-hash")
    return _hasher_pool


def _name(de: os.DirEntry[str]) -> str:
    return de.name
