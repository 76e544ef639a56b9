"""The read queries of the meta role, on the local replica (the service calls them after
ReadIndex, so they are linearizable): metadata, downloads' blocklists, listings and their
cursors, revisions, and the reads of accounts, GC state and upload sessions.

`MetaQueries` is the read half of `fsm.MetaStore` (its base class): it reads `self._db` and
`self.upload_session_ttl_ms` and writes nothing. A query that cannot answer returns a
`MetaError` (the tags of the Dropbox route's error), never raises it.

Cursor state (`commands.CursorState`, from `ListPage.cursor_state` or `get_latest_cursor`; the
service adds account and namespace and signs it): (path_key, recursive, include_deleted,
position, resume). `resume` None is the journal phase: "send me the changes after journal
position P"; a key is the listing phase: "the first listing, started at journal position P, has
sent every entry with key ≤ resume". A listing pages through the current tree in
key order (a parent's key sorts before its children's); when it ends the cursor moves to the
journal phase at the position where the listing started, so changes made while it paged are
replayed. `continue` in the journal phase returns, for every path changed in the page, its
CURRENT state (FileMeta / FolderMeta, or DeletedMeta if gone) in order of its last change; a
deleted folder is reported alone (its children are implied). A folder that was moved or copied
journals every item of its new subtree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from . import accounts, gcstate, jobs, paths, quota, rows, search, sessions, sharing, templinks
from .commands import (
    AccountInfo,
    BlockRef,
    CursorState,
    DeletedMeta,
    FileMeta,
    Meta,
    MetaError,
    SessionState,
    SpaceUsage,
)
from .paths import MalformedPath
from .rows import BLOCKS_DEC, E_COLS, M_COLS, M_FROM, R_COLS, Entry, Fail, Revision, format_ts
from .schema import DELETED, FILE, FOLDER, get_kv

LIST_LIMIT_MAX = 2000


class ListPage(NamedTuple):
    """One page of `list_folder`/`continue`. Its cursor is `cursor_state` (sign it and pass it
    back to `list_folder_continue(ns, state)`), or equivalently `path_key` + `state`."""

    entries: list[Meta]
    position: int  # journal position (where the listing started, or changes sent up to)
    has_more: bool
    resume: str | None  # listing phase: the last key sent; None: journal phase
    path_key: str  # the listed folder's key ("" = root), for the cursor
    recursive: bool = False
    include_deleted: bool = False

    @property
    def state(self) -> int | tuple[int, str]:
        return self.position if self.resume is None else (self.position, self.resume)

    @property
    def cursor_state(self) -> CursorState:
        return CursorState(
            self.path_key, self.recursive, self.include_deleted, self.position, self.resume
        )


class RevisionList(NamedTuple):
    is_deleted: bool
    server_deleted: str | None
    entries: list[FileMeta]  # newest first
    has_more: bool


def clamp_limit(limit: int | None) -> int:
    if limit is None:
        return LIST_LIMIT_MAX
    return max(1, min(int(limit), LIST_LIMIT_MAX))


class MetaQueries:
    """The read queries (module docstring); mixed into `fsm.MetaStore`."""

    _db: sqlite3.Connection
    upload_session_ttl_ms: int
    secret: Callable[[], bytes]

    # -- accounts ---------------------------------------------------------------------------
    def list_accounts(self) -> list[tuple[AccountInfo, int]]:
        """Every account, by email, with its number of tokens."""
        return accounts.list_accounts(self._db)

    def get_account(self, account_id: str) -> AccountInfo | None:
        return accounts.get_account(self._db, account_id)

    def account_by_email(self, email: str) -> AccountInfo | None:
        return accounts.account_by_email(self._db, email)

    def auth_token(self, token_hash: bytes) -> AccountInfo | None:
        return accounts.auth_token(self._db, token_hash)

    def space_usage(self, account_id: str) -> SpaceUsage | None:
        """The account's usage and quota (`raftbox.meta.quota`); None if no such account."""
        return quota.space_usage(self._db, account_id)

    # -- blocks and garbage collection -------------------------------------------------------
    def store_marker(self) -> str | None:
        """The id of the cluster's block store marker (`SetStoreMarker`), None before it."""
        return get_kv(self._db, "store_marker") or None

    def ns_has_blocks(self, ns: int, ids: list[str]) -> set[str]:
        """Which of `ids` this namespace may reference (uploaded itself or already holds)."""
        return gcstate.ns_has_blocks(self._db, ns, ids)

    def gc_generation(self) -> int:
        """The GC generation: how many GcRelease commands released blocks (commands carry the
        value their blockserver read before storing blocks, see `CommitFile.gc_gen`)."""
        return gcstate.gc_generation(self._db)

    def gc_state(self) -> tuple[tuple[str, int] | None, dict[str, str]]:
        """(lease (run_id, until_ms) or None, {condemned block id: run_id})."""
        return gcstate.gc_state(self._db)

    def gc_mark(self, now_ms: int, upload_keep_ms: int) -> tuple[int, set[str]]:
        """The mark phase on this store's own connection (see `gcstate.gc_mark_db`)."""
        return gcstate.gc_mark_db(self._db, now_ms, upload_keep_ms, self.upload_session_ttl_ms)

    # -- upload sessions ---------------------------------------------------------------------
    def session_head(self, session_id: str) -> tuple[int, bool] | None:
        """(namespace, concurrent) of an upload session, without its pieces (an append needs
        no more); None if there is no such session."""
        return sessions.session_head(self._db, session_id)

    def session(self, session_id: str) -> SessionState | None:
        """An upload session (even an expired one: compare `expires_ms` with your clock)."""
        return sessions.session_state(self._db, self.upload_session_ttl_ms, session_id)

    # -- async jobs ----------------------------------------------------------------------------
    def job(self, job_id: str, ns: int, kind: str) -> tuple[int, Any] | None:
        """(done_ms, result) of an async job of `ns` and `kind`, or None (`jobs.job_result`)."""
        return jobs.job_result(self._db, job_id, ns, kind)

    # -- metadata, blocklists, listings, revisions -------------------------------------------
    def _query(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Fail as f:
            return f.error

    def resolve(self, ns: int, path: str) -> Meta | MetaError:
        """The live metadata of "/…", "ns:…" or "id:…", or a revision's for "rev:…"."""
        return self._query(lambda: self._resolve(ns, path, include_deleted=False))

    def get_metadata(self, ns: int, path: str, include_deleted: bool = False) -> Meta | MetaError:
        return self._query(lambda: self._resolve(ns, path, include_deleted=include_deleted))

    def _resolve(self, ns: int, s: str, include_deleted: bool) -> Meta:
        try:
            ref = paths.parse_ref(s, allow_rev=True)
        except MalformedPath:
            raise Fail("path", "malformed_path") from None
        if ref.kind == "rev":
            return self._by_rev(ns, ref.value)[0]
        if ref.kind == "id":
            e = rows.live_by_id(self._db, ns, ref.value)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        else:
            e = rows.entry(self._db, ns, ref.path.key)
        if e is None or (e.kind == DELETED and not include_deleted):
            raise Fail("path", "not_found")
        return rows.meta_of(self._db, ns, e)

    def _by_rev(self, ns: int, rev: str) -> tuple[FileMeta, Any]:
        """A revision's metadata ("rev:…" paths) and its row, or fail with path/not_found."""
        r = rows.revision(self._db, ns, rev)
        if r is None:
            raise Fail("path", "not_found")
        return rows.rev_meta(r, rows.live_by_id(self._db, ns, r.id) is None), r

    def file_blocks(self, ns: int, path: str) -> tuple[FileMeta, list[BlockRef]] | MetaError:
        """A file (by path, id or rev) and its blocklist, for a download."""
        return self._query(lambda: self._file_blocks(ns, path))

    def file_blocks_many(
        self, ns: int, paths_: list[str]
    ) -> list[tuple[FileMeta, list[BlockRef]] | MetaError]:
        """`file_blocks` of each path, in order, each answered on its own (path/not_found,
        path/not_file, path/malformed_path), all from the same state: one read of the replica."""
        return [self._query(lambda p=p: self._file_blocks(ns, p)) for p in paths_]

    def _file_blocks(self, ns: int, path: str) -> tuple[FileMeta, list[BlockRef]]:
        try:
            ref = paths.parse_ref(path, allow_rev=True)
        except MalformedPath:
            raise Fail("path", "malformed_path") from None
        if ref.kind == "rev":
            meta, r = self._by_rev(ns, ref.value)
            return meta, BLOCKS_DEC.decode(r.blocks)
        e = rows.lookup_live(self._db, ns, path, "path")
        if e.kind != FILE:
            raise Fail("path", "not_file")
        r = rows.revision(self._db, ns, e.rev)
        return rows.meta_of(self._db, ns, e), BLOCKS_DEC.decode(r.blocks)

    def journal_position(self, ns: int) -> int:
        row = self._db.execute("SELECT journal_end FROM namespaces WHERE ns = ?", (ns,)).fetchone()
        return 0 if row is None else row[0]

    def namespace_info(self, ns: int) -> tuple[str, int] | None:
        """(owner account id, journal position) of namespace `ns`; None if it does not exist.
        A notify server checks a long-poll cursor's account against the owner. A shared
        folder's "owner" is "shared:" then every member's account id, space-separated
        (`raftbox.notify.hub.may_watch`)."""
        row = self._db.execute(
            "SELECT owner, journal_end FROM namespaces WHERE ns = ?", (ns,)
        ).fetchone()
        if row is None:
            return None
        members = sharing.member_ids(self._db, ns)
        return (" ".join(["shared:", *members]) if members else row[0], row[1])

    def changed_since(self, index: int) -> list[tuple[int, int]]:
        """(ns, journal position) of every namespace changed by an entry after `index` — the
        change feed a notify root follows."""
        return [
            (ns, pos)
            for ns, pos in self._db.execute(
                "SELECT ns, journal_end FROM namespaces WHERE last_index > ? "
                "ORDER BY last_index, ns",
                (index,),
            )
        ]

    def _folder_key(self, ns: int, s: str) -> str:
        """The key of a folder named by "", "/…", "ns:…" or "id:…" (path/not_found, not_folder)."""
        try:
            ref = paths.parse_ref(s, allow_root=True)
        except MalformedPath:
            raise Fail("path", "malformed_path") from None
        if ref.kind == "id":
            e = rows.live_by_id(self._db, ns, ref.value)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        elif ref.path.is_root:
            if not rows.ns_exists(self._db, ns):
                raise Fail("path", "not_found")
            return ""
        else:
            e = rows.live(self._db, ns, ref.path.key)
        if e is None:
            raise Fail("path", "not_found")
        if e.kind != FOLDER:
            raise Fail("path", "not_folder")
        return e.key

    def folder_key(self, ns: int, path: str) -> str | MetaError:
        """The key of the folder "", "/…", "ns:…" or "id:…" names (path/not_found, not_folder)."""
        return self._query(lambda: self._folder_key(ns, path))

    def temporary_link(
        self, token: str, now_ms: int
    ) -> tuple[FileMeta, list[BlockRef]] | MetaError:
        """The file a temporary link gives at `now_ms`, or why not (`raftbox.meta.templinks`)."""
        return templinks.open_link(self._db, self.secret(), token, now_ms)

    def search(self, ns: int, st: search.SearchState) -> search.SearchPage:
        """One page of a search by name (`raftbox.meta.search`)."""
        return search.search_page(self._db, ns, st)

    def _check_folder_key(self, ns: int, key: str) -> None:
        if key == "":
            if not rows.ns_exists(self._db, ns):
                raise Fail("path", "not_found")
            return
        e = rows.live(self._db, ns, key)
        if e is None:
            raise Fail("path", "not_found")
        if e.kind != FOLDER:
            raise Fail("path", "not_folder")

    def list_folder(
        self,
        ns: int,
        path: str,
        recursive: bool = False,
        include_deleted: bool = False,
        limit: int | None = None,
    ) -> ListPage | MetaError:
        def q():
            key = self._folder_key(ns, path)
            page = self._list_page(
                ns, key, recursive, include_deleted, self.journal_position(ns), None, limit
            )
            return page._replace(recursive=recursive, include_deleted=include_deleted)

        return self._query(q)

    def get_latest_cursor(
        self, ns: int, path: str, recursive: bool = False, include_deleted: bool = False
    ) -> CursorState | MetaError:
        """The cursor state at the current end of the journal (no entries)."""

        def q():
            key = self._folder_key(ns, path)
            return CursorState(key, recursive, include_deleted, self.journal_position(ns))

        return self._query(q)

    def list_folder_continue(self, ns: int, *args: Any, limit: int | None = None) -> Any:
        """Continue a listing. Two call forms:

        - `list_folder_continue(ns, state, limit=None)`: `state` is a `CursorState` or its
          msgpack-decoded list (as it comes back out of a signed cursor);
        - `list_folder_continue(ns, path_key, recursive, include_deleted, position_or_resume,
          limit=None)`: `position_or_resume` is `ListPage.state`, an int (journal position) or
          (position, resume).

        Returns a `ListPage` or `MetaError`: path/not_found or path/not_folder if the folder is
        gone, `reset` if the state is not one this store made.
        """
        if args and isinstance(args[0], str):
            path_key, recursive, include_deleted, por, *rest = args
            if isinstance(por, int):
                position, resume = por, None
            else:
                position, resume = por
        else:
            raw, *rest = args
            try:
                st = msgspec.convert(raw, CursorState)
            except (msgspec.ValidationError, TypeError):
                return MetaError(["reset"])
            path_key, recursive, include_deleted = st.path_key, st.recursive, st.include_deleted
            position, resume = st.position, st.resume
        if rest:
            limit = rest[0]

        def q():
            self._check_folder_key(ns, path_key)
            if resume is None:
                page = self._changes_page(ns, path_key, recursive, position, limit)
            else:
                page = self._list_page(
                    ns, path_key, recursive, include_deleted, position, resume, limit
                )
            return page._replace(recursive=recursive, include_deleted=include_deleted)

        return self._query(q)

    def _list_page(
        self,
        ns: int,
        key: str,
        recursive: bool,
        include_deleted: bool,
        position: int,
        resume: str | None,
        limit: int | None,
    ) -> ListPage:
        limit = clamp_limit(limit)
        entries: list[Meta] = []
        after = resume if resume is not None else ""
        if recursive and key and resume is None:
            # the folder itself first
            entries.append(rows.meta_of(self._db, ns, rows.live(self._db, ns, key)))
            after = key
        deleted = "" if include_deleted else " AND e.kind < 3"
        want = limit - len(entries) + 1
        if recursive:
            lo, hi = paths.subtree_range(key)
            found = self._db.execute(
                f"SELECT {M_COLS} FROM {M_FROM} WHERE e.ns = ? AND e.key > ? AND e.key < ?"
                f"{deleted} ORDER BY e.key LIMIT ?",
                (ns, max(after, lo), hi, want),
            ).fetchall()
        else:
            found = self._db.execute(
                f"SELECT {M_COLS} FROM {M_FROM} WHERE e.ns = ? AND e.parent_key = ? "
                f"AND e.key > ?{deleted} ORDER BY e.key LIMIT ?",
                (ns, key, after, want),
            ).fetchall()
        has_more = len(found) == want
        if has_more:
            found.pop()
        entries.extend(rows.meta_row(r) for r in found)
        if has_more:
            last = found[-1][0] if found else after
            return ListPage(entries, position, True, last, key)
        # The listing is complete: from now on the cursor follows the journal, from where the
        # listing started (changes made while it paged are replayed).
        return ListPage(entries, position, position < self.journal_position(ns), None, key)

    def _changes_page(
        self, ns: int, key: str, recursive: bool, position: int, limit: int | None
    ) -> ListPage:
        limit = clamp_limit(limit)
        end = self.journal_position(ns)
        if position > end or position < 0:
            raise Fail("reset")
        # Bound the rows scanned for a subtree cursor in a busy namespace: a page may come back
        # empty with has_more, and the position still advances.
        hi = min(end, position + max(16 * limit, 4096))
        if recursive and not key:
            flt, args = "", ()
        elif recursive:
            lo, top = paths.subtree_range(key)
            flt, args = " AND ((key > ? AND key < ?) OR key = ?)", (lo, top, key)
        else:
            flt, args = " AND parent_key = ?", (key,)
        found = self._db.execute(
            f"SELECT pos, key, display FROM journal WHERE ns = ? AND pos > ? AND pos <= ?{flt} "
            "ORDER BY pos LIMIT ?",
            (ns, position, hi, *args, limit),
        ).fetchall()
        if len(found) == limit:
            new_pos = found[-1][0]
        else:
            new_pos = hi
        # Each changed path once, at its last change in this page, in its current state.
        last: dict[str, str] = {}
        for _pos, k, display in found:
            last.pop(k, None)
            last[k] = display
        entries: list[Meta] = []
        for k, display in last.items():
            row = self._db.execute(
                f"SELECT {M_COLS} FROM {M_FROM} WHERE e.ns = ? AND e.key = ? AND e.kind < 3",
                (ns, k),
            ).fetchone()
            if row is None:
                entries.append(DeletedMeta(display.rsplit("/", 1)[-1], display.lower(), display))
            else:
                entries.append(rows.meta_row(row))
        return ListPage(entries, new_pos, new_pos < end, None, key)

    def list_revisions(
        self,
        ns: int,
        path: str,
        mode: str = "path",
        limit: int = 10,
        before_rev: str | None = None,
    ) -> RevisionList | MetaError:
        """A file's revisions, newest first. mode "path": every version written at the path of
        the file named by `path` (path or id); mode "id": every version of that file's id,
        wherever it was (ids survive moves)."""
        return self._query(lambda: self._list_revisions(ns, path, mode, limit, before_rev))

    def _list_revisions(
        self, ns: int, path: str, mode: str, limit: int, before_rev: str | None
    ) -> RevisionList:
        try:
            ref = paths.parse_ref(path)
        except MalformedPath:
            raise Fail("path", "malformed_path") from None
        if mode not in ("path", "id"):
            raise Fail("invalid_command", reason="mode is path or id")
        db = self._db
        e: Entry | None
        if ref.kind == "id":
            e = rows.live_by_id(self._db, ns, ref.value)
            if e is None:
                row = db.execute(
                    f"SELECT {E_COLS} FROM entries WHERE ns = ? AND id = ? AND rev IS NOT NULL "
                    "ORDER BY deleted_ms DESC LIMIT 1",
                    (ns, ref.value),
                ).fetchone()
                e = None if row is None else Entry(*row)
        elif ref.ns is not None and ref.ns != ns:
            e = None
        else:
            e = rows.entry(self._db, ns, ref.path.key)
        if e is not None and e.kind == FOLDER:
            raise Fail("path", "not_file")
        if e is None or e.rev is None:
            raise Fail("path", "not_found")
        is_deleted = e.kind == DELETED
        col, val = ("id", e.id) if mode == "id" else ("key", e.key)
        lim = max(1, min(int(limit), 100))
        bound = ""
        args: tuple = (ns, val)
        if before_rev is not None:
            if not paths.valid_rev(before_rev):
                raise Fail("invalid_before_rev")
            hit = db.execute(
                f"SELECT 1 FROM revisions WHERE ns = ? AND rev = ? AND {col} = ?",
                (ns, before_rev, val),
            ).fetchone()
            if hit is None:
                raise Fail("invalid_before_rev")
            bound = " AND rev < ?"
            args += (before_rev,)
        found = db.execute(
            f"SELECT {R_COLS} FROM revisions WHERE ns = ? AND {col} = ?{bound} "
            "ORDER BY rev DESC LIMIT ?",
            (*args, lim + 1),
        ).fetchall()
        gone: dict[str, bool] = {}
        out = []
        for row in found[:lim]:
            r = Revision(*row)
            if r.id not in gone:
                gone[r.id] = rows.live_by_id(self._db, ns, r.id) is None
            out.append(rows.rev_meta(r, gone[r.id]))
        server_deleted = (
            format_ts(e.deleted_ms) if is_deleted and e.deleted_ms is not None else None
        )
        return RevisionList(is_deleted, server_deleted, out, len(found) > lim)

    def dump(self, tables: list[str] | None = None) -> dict[str, list[tuple]]:
        """Every row of `tables` (default: all), in primary-key order: compare two stores."""
        names = tables or [
            n
            for (n,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {n: self._db.execute(f"SELECT * FROM {n} ORDER BY 1, 2").fetchall() for n in names}
