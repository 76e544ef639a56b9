"""The writes to the tree of a namespace: commit a file, create a folder, delete, move, copy,
restore — and the steps they share (journal, entries, parent folders, autorename, revisions).

Contract: each command function takes the entry's `ApplyContext` and the command, writes its
rows through `ctx.db`, and returns the command's result (a `Meta`) or raises `Fail` (the
dispatcher rolls the command's savepoint back: a failed command changes nothing). Time is
`ctx.now_ms`; every item written takes the entry's next position (`ctx.next_pos()`), which
makes its rev and, for a new item, its id. Every change is journaled (`journal`), which is
what cursors and the notify feed follow.

- `commit` (`CommitFile`): modes add / overwrite / update with autorename; an identical commit
  changes nothing; a conflict makes "a (1).txt" or, in update mode, "a (conflicted copy).txt".
  Blocks must be the namespace's to reference (`need_blocks`) unless just uploaded (then
  checked against GC: `gc_retry`).
- `create_folder`, `delete` (the subtree, journaled once at its root), `relocate` (move or
  copy of a subtree: every item of the new subtree is journaled; a copy gets new ids and a new
  server_modified), `restore` (an old revision becomes the newest).
- `commit_batch`: one savepoint per item, each answered on its own. The items share a
  `context.BatchMemo` (folders read, block rights held when the batch began, quota rows) and
  their journal rows are written together at the end, numbered as one by one: the rows
  written and the answers are those of committing the items one after the other.

Every write that can make an account store more (commit, copy, restore) runs inside
`quota.guarded`: past the account's quota it fails with `insufficient_space`.
"""

from __future__ import annotations

import msgspec

from . import gcstate, paths, quota, rows, values
from .commands import (
    MAX_FILE_BYTES,
    CommitBatch,
    CommitFile,
    Copy,
    CreateFolder,
    Delete,
    FileMeta,
    FolderMeta,
    Meta,
    MetaError,
    Move,
    Restore,
    dropbox_content_hash,
    symlink_blocks_problem,
    symlink_target_problem,
)
from .context import MAX_BATCH_ENTRIES, ApplyContext, BatchMemo, atomic, check_ns
from .paths import MalformedPath, Path
from .rows import BLOCKS_ENC, E_COLS, HEX64, Entry, Fail
from .schema import DELETED, FILE, FOLDER

AUTORENAME_MAX_TRIES = 10_000


def write_path(ctx: ApplyContext, ns: int, s: str, outer: str, *, allow_id: bool = True) -> Path:
    """A write destination: "/…", "ns:<ns>/…" or the id of a live entry (its path)."""
    try:
        ref = paths.parse_ref(s, allow_id=allow_id)
    except MalformedPath:
        raise Fail(outer, "malformed_path") from None
    if ref.kind == "id":
        e = rows.live_by_id(ctx.db, ns, ref.value)
        if e is None:
            raise Fail(outer, "not_found")
        return Path(e.display, e.key)
    if ref.ns is not None and ref.ns != ns:
        raise Fail(outer, "no_write_permission")
    if paths.depth_problem(ref.path):
        raise Fail(outer, "malformed_path")
    return ref.path


def journal(ctx: ApplyContext, ns: int, key: str, parent_key: str, display: str, kind: int) -> None:
    memo = ctx.batch
    if memo is not None:  # written by `commit_batch` when its items are done
        memo.journal.append((ns, key, parent_key, display, kind))
        return
    (pos,) = ctx.db.execute(
        "UPDATE namespaces SET journal_end = journal_end + 1, last_index = ? WHERE ns = ? "
        "RETURNING journal_end",
        (ctx.index, ns),
    ).fetchone()
    ctx.db.execute(
        "INSERT INTO journal (ns, pos, key, parent_key, display, idx, kind) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (ns, pos, key, parent_key, display, ctx.index, kind),
    )


def put_entry(
    ctx: ApplyContext,
    ns: int,
    key: str,
    parent_key: str,
    display: str,
    kind: int,
    id_: str | None,
    rev: str | None,
    deleted_ms: int | None = None,
) -> None:
    ctx.db.execute(
        "INSERT OR REPLACE INTO entries (ns, key, parent_key, name, display, kind, id, rev, "
        "deleted_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ns, key, parent_key, display.rsplit("/", 1)[-1], display, kind, id_, rev, deleted_ms),
    )


def ensure_parents(ctx: ApplyContext, ns: int, path: Path, outer: str) -> str:
    """Create the missing folders above `path`; return the parent's display path.
    Fails with outer/conflict/file_ancestor if a file is in the way."""
    display = ""
    parent_key = ""
    folders = ctx.batch.folders if ctx.batch is not None else None
    for anc in path.ancestors():
        if folders is not None and (ns, anc.key) in folders:
            display = folders[(ns, anc.key)]
            parent_key = anc.key
            continue
        e = rows.entry(ctx.db, ns, anc.key)
        if folders is not None and e is not None and e.kind == FOLDER:
            folders[(ns, anc.key)] = e.display  # read, not made by this item: it stays
        if e is not None and e.kind == FILE:
            raise Fail(outer, "conflict", "file_ancestor")
        if e is not None and e.kind == FOLDER:
            display = e.display
        else:
            display = f"{display}/{anc.name}"
            put_entry(
                ctx, ns, anc.key, parent_key, display, FOLDER, ctx.new_id(ctx.next_pos()), None
            )
            journal(ctx, ns, anc.key, parent_key, display, FOLDER)
        parent_key = anc.key
    return display


def free_name(
    ctx: ApplyContext,
    ns: int,
    parent: Path,
    name: str,
    *,
    is_folder: bool,
    conflicted: bool,
    outer: str = "path",
) -> Path:
    """The first name in `parent` with no live entry: "a (1).txt", "a (2).txt", … or
    "a (conflicted copy).txt", "a (conflicted copy 1).txt", …"""
    for n in range(AUTORENAME_MAX_TRIES):
        if conflicted:
            suffix = "(conflicted copy)" if n == 0 else f"(conflicted copy {n})"
        else:
            suffix = f"({n + 1})"
        cand = paths.renamed(name, suffix, is_folder=is_folder)
        try:
            paths.validate_name(cand)
        except MalformedPath:
            break
        p = parent.child(cand)
        if rows.live(ctx.db, ns, p.key) is None:
            return p
    raise Fail(outer, "conflict", "folder" if is_folder else "file")


def write_file(
    ctx: ApplyContext,
    ns: int,
    path: Path,
    parent_key: str,
    id_: str | None,
    blocks_blob: bytes,
    size: int,
    content_hash: str,
    client_modified: str,
    symlink: str | None = None,
    executable: bool = False,
) -> FileMeta:
    """Write a new revision at `path` (whose parents exist) and make it current."""
    pos = ctx.next_pos()
    rev = ctx.rev(pos)
    existing = id_ is not None
    id_ = id_ or ctx.new_id(pos)
    now = ctx.now
    ctx.db.execute(
        "INSERT INTO revisions (ns, rev, id, key, display, size, content_hash, "
        "client_modified, server_modified, stamp_ms, blocks, symlink, executable) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ns,
            rev,
            id_,
            path.key,
            path.display,
            size,
            content_hash,
            client_modified,
            now,
            ctx.now_ms,
            blocks_blob,
            symlink,
            int(executable),
        ),
    )
    put_entry(ctx, ns, path.key, parent_key, path.display, FILE, id_, rev)
    journal(ctx, ns, path.key, parent_key, path.display, FILE)
    if existing:
        prune_revisions(ctx, ns, id_)
    return FileMeta(
        id_,
        path.name,
        path.lower,
        path.display,
        rev,
        size,
        client_modified,
        now,
        content_hash,
        symlink_target=symlink,
        executable=executable,
    )


def prune_revisions(ctx: ApplyContext, ns: int, id_: str) -> None:
    """Keep a file's newest `revisions_keep` versions and all younger than the age limit."""
    ctx.db.execute(
        "DELETE FROM revisions WHERE ns = ? AND id = ? AND stamp_ms < ? AND rev IN ("
        "SELECT rev FROM revisions WHERE ns = ? AND id = ? ORDER BY rev DESC "
        "LIMIT -1 OFFSET ?)",
        (ns, id_, ctx.now_ms - ctx.revisions_keep_ms, ns, id_, ctx.revisions_keep),
    )


def _validate_commit(c: CommitFile) -> None:
    if not (0 <= c.size <= MAX_FILE_BYTES):
        raise Fail("invalid_command", reason="size out of range")
    if HEX64.fullmatch(c.content_hash) is None:
        raise Fail("invalid_command", reason="content_hash must be 64 lowercase hex")
    gcstate.validate_blocks(c.blocks, c.size)
    if c.mode == "update" and not paths.valid_rev(c.update_rev or ""):
        raise Fail("invalid_command", reason="update mode needs a valid rev")
    if c.client_modified is not None and not _valid_ts(c.client_modified):
        why = values.timestamp_problem(c.client_modified)
        raise Fail("invalid_command", reason=f"client_modified: {why}")
    if c.symlink_target is not None:
        _validate_symlink(c)


def commit(ctx: ApplyContext, c: CommitFile) -> FileMeta:
    """`CommitFile` (every upload route's, batches' and sessions' too), within the quota."""
    return quota.guarded(ctx, c.ns, ["path", "insufficient_space"], lambda: _commit(ctx, c))


def _commit(ctx: ApplyContext, c: CommitFile) -> FileMeta:
    ns = c.ns
    check_ns(ctx, ns)
    _validate_commit(c)
    path = write_path(ctx, ns, c.path, "path")
    if path.is_root:
        raise Fail("path", "malformed_path")
    if c.uploaded:
        gcstate.gc_check(ctx, c.blocks, c.gc_gen)
    elif c.blocks:
        have = _ns_has_blocks(ctx, ns, [b.id for b in c.blocks])
        for other in c.readable_ns:  # shared folders: what the committer can read counts
            rest = [b.id for b in c.blocks if b.id not in have]
            if not rest:
                break
            if other != ns:
                have |= _ns_has_blocks(ctx, other, rest)
        missing = sorted({b.id for b in c.blocks} - have)
        if missing:
            raise Fail("need_blocks", missing=missing)
    gcstate.grant(ctx, ns, c.blocks)
    parent_display = ensure_parents(ctx, ns, path, "path")
    parent = Path(parent_display, path.parent.key)
    target = rows.entry(ctx.db, ns, path.key)
    live = target if target is not None and target.kind != DELETED else None
    conflict = None
    keep_id = None
    executable = c.executable  # a new file: as said (inheriting is for a kept id)
    if live is None:
        if c.mode == "update" and c.strict_conflict:
            conflict = "file"
        path = parent.child(path.name)
    elif live.kind == FOLDER:
        conflict = "folder"
    else:
        cur = rows.revision(ctx.db, ns, live.rev)
        executable = c.executable or (
            c.keep_executable and c.symlink_target is None and bool(cur.executable)
        )
        identical = (
            cur.content_hash == c.content_hash
            and cur.size == c.size
            and cur.symlink == c.symlink_target
            and bool(cur.executable) == executable
        )
        if c.mode == "update":
            if live.rev == c.update_rev:
                if identical:
                    return rows.meta_of(ctx.db, ns, live)
            elif identical and not c.strict_conflict:
                return rows.meta_of(ctx.db, ns, live)
            else:
                conflict = "file"
        elif identical:
            return rows.meta_of(ctx.db, ns, live)
        elif c.mode == "add":
            conflict = "file"
        path = Path(live.display, live.key)  # keep the case it was created with
        keep_id = live.id
    if conflict is not None:
        if not c.autorename:
            raise Fail("path", "conflict", conflict)
        path = free_name(ctx, ns, parent, path.name, is_folder=False, conflicted=c.mode == "update")
        keep_id = None
        executable = c.executable
    return write_file(
        ctx,
        ns,
        path,
        parent.key,
        keep_id,
        BLOCKS_ENC.encode(c.blocks),
        c.size,
        c.content_hash,
        c.client_modified or ctx.now,
        c.symlink_target,
        executable,
    )


def _ns_has_blocks(ctx: ApplyContext, ns: int, ids: list[str]) -> set[str]:
    """`gcstate.ns_has_blocks`, answered from the batch's memo where it can."""
    memo = ctx.batch
    if memo is None:
        return gcstate.ns_has_blocks(ctx.db, ns, ids)
    known = memo.has.get(ns, set())
    granted = memo.granted.get(ns, set())  # by earlier items, not yet written
    have = {i for i in ids if i in known or i in granted}
    rest = [i for i in ids if i not in have]
    if rest:
        have |= gcstate.ns_has_blocks(ctx.db, ns, rest)
    return have


def commit_batch(ctx: ApplyContext, c: CommitBatch) -> list:
    if len(c.entries) > MAX_BATCH_ENTRIES:
        return MetaError(["invalid_command"], {"reason": "batch too large"})
    memo = BatchMemo()
    wanted: dict[int, set[str]] = {}  # the block rights the items will ask about
    for e in c.entries:
        if not e.uploaded and e.blocks:
            for ns in (e.ns, *e.readable_ns):
                wanted.setdefault(ns, set()).update(b.id for b in e.blocks)
    for ns, ids in wanted.items():
        memo.has[ns] = gcstate.ns_has_blocks(ctx.db, ns, list(ids))
    ctx._counters.batch = memo
    out = []
    try:
        for e in c.entries:
            mark, gmark = len(memo.journal), len(memo.grants)
            r = atomic(ctx, lambda e=e: commit(ctx, e))
            if isinstance(r, MetaError):  # rolled back: its journal rows and grants too
                del memo.journal[mark:]
                del memo.grants[gmark:]
            else:
                for ns, bid, _ in memo.grants[gmark:]:
                    memo.granted.setdefault(ns, set()).add(bid)
            out.append(r)
    finally:
        ctx._counters.batch = None
    gcstate.write_grants(ctx, memo.grants)
    _write_journal(ctx, memo.journal)
    return out


def _write_journal(ctx: ApplyContext, rows_: list[tuple[int, str, str, str, int]]) -> None:
    """The journal rows of a batch, numbered per namespace in order, as `journal` would have."""
    by_ns: dict[int, list[tuple[int, str, str, str, int]]] = {}
    for r in rows_:
        by_ns.setdefault(r[0], []).append(r)
    for ns, rs in by_ns.items():
        (end,) = ctx.db.execute(
            "UPDATE namespaces SET journal_end = journal_end + ?, last_index = ? WHERE ns = ? "
            "RETURNING journal_end",
            (len(rs), ctx.index, ns),
        ).fetchone()
        first = end - len(rs) + 1
        ctx.db.executemany(
            "INSERT INTO journal (ns, pos, key, parent_key, display, idx, kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (ns, first + i, k, pk, d, ctx.index, kind)
                for i, (_, k, pk, d, kind) in enumerate(rs)
            ],
        )


def create_folder(ctx: ApplyContext, c: CreateFolder) -> FolderMeta:
    ns = c.ns
    check_ns(ctx, ns)
    path = write_path(ctx, ns, c.path, "path", allow_id=False)
    if path.is_root:
        raise Fail("path", "malformed_path")
    parent = Path(ensure_parents(ctx, ns, path, "path"), path.parent.key)
    live = rows.live(ctx.db, ns, path.key)
    if live is not None:
        if not c.autorename:
            raise Fail("path", "conflict", "folder" if live.kind == FOLDER else "file")
        path = free_name(ctx, ns, parent, path.name, is_folder=True, conflicted=False)
    else:
        path = parent.child(path.name)
    id_ = ctx.new_id(ctx.next_pos())
    put_entry(ctx, ns, path.key, parent.key, path.display, FOLDER, id_, None)
    journal(ctx, ns, path.key, parent.key, path.display, FOLDER)
    return FolderMeta(id_, path.name, path.lower, path.display)


def delete(ctx: ApplyContext, c: Delete) -> Meta:
    ns = c.ns
    check_ns(ctx, ns)
    e = rows.lookup_live(ctx.db, ns, c.path, "path_lookup")
    if c.parent_rev is not None:
        if e.kind != FILE:
            raise Fail("path_lookup", "not_file")
        if e.rev != c.parent_rev:
            raise Fail("path_write", "conflict", "file")
    meta = rows.meta_of(ctx.db, ns, e)
    lo, hi = paths.subtree_range(e.key)
    ctx.db.execute(
        "UPDATE entries SET kind = 3, deleted_ms = ? "
        "WHERE ns = ? AND (key = ? OR (key > ? AND key < ?)) AND kind < 3",
        (ctx.now_ms, ns, e.key, lo, hi),
    )
    journal(ctx, ns, e.key, e.parent_key, e.display, DELETED)
    return meta


def relocate(ctx: ApplyContext, c: Move | Copy) -> Meta:
    """`Move` or `Copy`; a copy within the quota (RelocationError's `insufficient_quota`)."""
    if isinstance(c, Copy):
        return quota.guarded(ctx, c.ns, ["insufficient_quota"], lambda: _relocate(ctx, c))
    return _relocate(ctx, c)


def _relocate(ctx: ApplyContext, c: Move | Copy) -> Meta:
    ns = c.ns
    copy = isinstance(c, Copy)
    check_ns(ctx, ns)
    src = rows.lookup_live(ctx.db, ns, c.from_path, "from_lookup")
    to = write_path(ctx, ns, c.to_path, "to")
    if to.is_root:
        raise Fail("to", "malformed_path")
    case_only = False
    if to.key == src.key:
        if not copy and to.display != src.display and to.name != src.name:
            case_only = True
        elif copy and c.autorename:
            pass  # a copy beside the original, renamed below
        else:
            raise Fail("duplicated_or_nested_paths")
    elif src.kind == FOLDER and paths.is_in_subtree(to.key, src.key):
        raise Fail("cant_move_folder_into_itself")
    if case_only:
        parent = Path(src.display.rsplit("/", 1)[0], src.parent_key)
        to = parent.child(to.name)
    else:
        parent = Path(ensure_parents(ctx, ns, to, "to"), to.parent.key)
        live = rows.live(ctx.db, ns, to.key)
        if live is not None:
            if not c.autorename:
                raise Fail("to", "conflict", "folder" if live.kind == FOLDER else "file")
            to = free_name(
                ctx, ns, parent, to.name, is_folder=src.kind == FOLDER, conflicted=False, outer="to"
            )
        else:
            to = parent.child(to.name)
    return move_subtree(ctx, ns, src, to, parent.key, copy=copy, case_only=case_only)


def move_subtree(
    ctx: ApplyContext,
    ns: int,
    src: Entry,
    to: Path,
    to_parent_key: str,
    *,
    copy: bool,
    case_only: bool,
) -> Meta:
    db = ctx.db
    subtree = [src]
    if src.kind == FOLDER:
        lo, hi = paths.subtree_range(src.key)
        subtree += [
            Entry(*r)
            for r in db.execute(
                f"SELECT {E_COLS} FROM entries "
                "WHERE ns = ? AND key > ? AND key < ? AND kind < 3 ORDER BY key",
                (ns, lo, hi),
            )
        ]
    _check_relocated(src, to, subtree)
    if not case_only:
        # The destination holds no live entry (checked), so at most deleted history here.
        lo, hi = paths.subtree_range(to.key)
        db.execute(
            "DELETE FROM entries WHERE ns = ? AND (key = ? OR (key > ? AND key < ?))",
            (ns, to.key, lo, hi),
        )
        if not copy:
            lo, hi = paths.subtree_range(src.key)
            db.execute(
                "DELETE FROM entries "
                "WHERE ns = ? AND (key = ? OR (key > ? AND key < ? AND kind < 3))",
                (ns, src.key, lo, hi),
            )
            put_entry(
                ctx, ns, src.key, src.parent_key, src.display, DELETED, src.id, src.rev, ctx.now_ms
            )
            journal(ctx, ns, src.key, src.parent_key, src.display, DELETED)
    now = ctx.now
    n = len(src.key)
    nd = len(src.display)
    first: Meta | None = None
    for e in subtree:
        key = to.key + e.key[n:]
        display = to.display + e.display[nd:]
        parent_key = to_parent_key if e is src else to.key + e.parent_key[n:]
        if e.kind == FOLDER:
            id_ = ctx.new_id(ctx.next_pos()) if copy else e.id
            rev = None
        else:
            pos = ctx.next_pos()
            rev = ctx.rev(pos)
            id_ = ctx.new_id(pos) if copy else e.id
            # Same blocks, same client_modified; a copy is a new file (server_modified now).
            db.execute(
                "INSERT INTO revisions (ns, rev, id, key, display, size, content_hash, "
                "client_modified, server_modified, stamp_ms, blocks, symlink, executable) "
                "SELECT ns, ?, ?, ?, ?, size, content_hash, client_modified, "
                "CASE WHEN ? THEN ? ELSE server_modified END, ?, blocks, symlink, executable "
                "FROM revisions WHERE ns = ? AND rev = ?",
                (rev, id_, key, display, copy, now, ctx.now_ms, ns, e.rev),
            )
            prune_revisions(ctx, ns, id_)
        put_entry(ctx, ns, key, parent_key, display, e.kind, id_, rev)
        journal(ctx, ns, key, parent_key, display, e.kind)
        if first is None:
            first = rows.meta_of(
                ctx.db, ns, Entry(key, parent_key, "", display, e.kind, id_, rev, None)
            )
    return _with_name(first)


def restore(ctx: ApplyContext, c: Restore) -> FileMeta:
    """`Restore`, within the quota."""
    return quota.guarded(ctx, c.ns, ["path_write", "insufficient_space"], lambda: _restore(ctx, c))


def _restore(ctx: ApplyContext, c: Restore) -> FileMeta:
    ns = c.ns
    check_ns(ctx, ns)
    path = write_path(ctx, ns, c.path, "path_lookup", allow_id=False)
    if path.is_root:
        raise Fail("path_lookup", "malformed_path")
    if not paths.valid_rev(c.rev):
        raise Fail("invalid_revision")
    r = rows.revision(ctx.db, ns, c.rev)
    if r is None:
        raise Fail("invalid_revision")
    target = rows.entry(ctx.db, ns, path.key)
    if r.key != path.key and (target is None or target.id != r.id):
        raise Fail("invalid_revision")
    parent = Path(ensure_parents(ctx, ns, path, "path_write"), path.parent.key)
    live = target if target is not None and target.kind != DELETED else None
    if live is not None and live.kind == FOLDER:
        raise Fail("path_write", "conflict", "folder")
    if live is not None:
        id_ = live.id
        path = Path(live.display, live.key)
    else:
        id_ = r.id if rows.live_by_id(ctx.db, ns, r.id) is None else None
        path = parent.child(path.name)
    return write_file(
        ctx,
        ns,
        path,
        parent.key,
        id_,
        r.blocks,
        r.size,
        r.content_hash,
        r.client_modified,
        r.symlink,
        bool(r.executable),
    )


def _check_relocated(src: Entry, to: Path, subtree: list[Entry]) -> None:
    """A move or copy must not carry an entry of the subtree past the bounds of a new path
    (`paths.PATH_MAX_BYTES`, `paths.PATH_MAX_DEPTH`): `to/malformed_path` if it would. Only
    growth is checked, so a subtree stored before the bounds existed can still move up."""
    more_bytes = len(to.display.encode()) - len(src.display.encode())
    more_depth = to.display.count("/") - src.display.count("/")
    if more_bytes <= 0 and more_depth <= 0:
        return
    for e in subtree:
        if (
            len(e.display.encode()) + more_bytes > paths.PATH_MAX_BYTES
            or e.display.count("/") + more_depth > paths.PATH_MAX_DEPTH
        ):
            raise Fail("to", "malformed_path")


def _with_name(m: Meta) -> Meta:
    """`rows.meta_of` on a synthetic row leaves `name` empty: fill it from the display path."""
    name = m.path_display.rsplit("/", 1)[-1]
    return msgspec.structs.replace(m, name=name)


def _valid_ts(s: str) -> bool:
    """A storable client_modified: the format and the range of `raftbox.meta.values`."""
    return values.timestamp_problem(s) is None


def _validate_symlink(c: CommitFile) -> None:
    why = symlink_target_problem(c.symlink_target)
    why = why or symlink_blocks_problem(c.symlink_target, c.blocks, c.size)
    if why is None and c.content_hash != dropbox_content_hash(c.symlink_target.encode()):
        why = "a symlink's content_hash is that of its target"
    if why is None and c.executable:
        why = "a symlink is never executable"
    if why is not None:
        raise Fail("invalid_command", reason=why)
