"""Shared folders: namespaces of their own, with members, mounted into each member's tree.

What
----
Every account has a home (root) namespace. Sharing the folder `/Project` makes a new namespace
(its id is the raft index of the `ShareFolder` entry, never reused) holding what was below
`/Project`; the folder entry `/Project` stays in the owner's home namespace as the *mount
point* (a `mounts` row: account, ns, key, display). A member that mounts the folder gets a
folder entry of its own in its home namespace (`/<name>`, autorenamed on a clash) and a
`mounts` row. An account's tree is therefore its home namespace with mount points; the API
resolves a path through them (`resolve`, pure) into (namespace, path inside it).

Contract (commands, each one raft entry, all or nothing; results `ShareResult` or `MetaError`
with the tags of the SDK's error unions):

| command         | who may                     | effect                                          |
| --------------- | --------------------------- | ----------------------------------------------- |
| ShareFolder     | any account, on its home ns | new ns, content moved in (ids and revs kept)    |
| AddMembers      | owner or editor             | member rows (an account) or invites (an email)  |
| SetMemberAccess | owner                       | editor ↔ viewer                                 |
| RemoveMember    | owner                       | unmount (a copy if `leave_a_copy`), row gone    |
| MountFolder     | member or invitee           | mount at `/<name>`; an invite becomes a member  |
| UnmountFolder   | a member that has it mounted| mount point deleted; membership kept            |
| Relinquish      | a member but the owner      | unmount (a copy if asked), membership gone      |
| Unshare         | owner                       | owner keeps a copy, others if `leave_a_copy`;   |
|                 |                             | the namespace and every row of it are deleted   |

Why this shape: every write stays inside one namespace, except these commands, which move or
copy content between namespaces as Dropbox does (so namespaces can later live in different
Raft groups). Ids stay stable: sharing keeps the ids (and revs) of what it moves; the owner's
copy after `Unshare` keeps them too; a member's copy is a new file (new ids).

Refusals (Dropbox's): sharing a file (`bad_path/is_file`), a folder inside a mount point
(`bad_path/inside_shared_folder`), a folder containing one (`bad_path/contains_shared_folder`),
a mount point (`bad_path/already_shared`); a viewer adding members (`no_permission`); the owner
leaving (`folder_owner`); a non-member (`access_error/not_a_member`) and an unknown namespace
(`access_error/invalid_id`) answer alike for things the caller cannot see.

Jobs (`force_async`, `check_job_status`): a command with a `job_id` records its outcome (the
namespace, or the error's tags) in `share_jobs`, replicated, so any member answers the check;
it then answers `ShareResult(ns, [error tags joined by "/", "" for success])` in any case.
At most `JOBS_MAX` are kept, none older than `JOB_KEEP_MS`.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

from . import accounts, gcstate, paths, rows, writes
from .commands import (
    AddMembers,
    CopyAcross,
    FolderMeta,
    Meta,
    MetaError,
    MountFolder,
    MoveMount,
    Relinquish,
    RemoveMember,
    SetMemberAccess,
    ShareFolder,
    ShareMember,
    ShareResult,
    UnmountFolder,
    Unshare,
)
from .context import ApplyContext, atomic, check_ns
from .links import ROOT_TARGET
from .paths import MalformedPath, Path
from .rows import BLOCKS_DEC, E_COLS, Entry, Fail
from .schema import DELETED, FILE, FOLDER

JOBS_MAX = 10_000
JOB_KEEP_MS = 24 * 3600 * 1000
MEMBERS_MAX = 1000  # members and invitees of one shared folder
ACCESS = ("owner", "editor", "viewer")


class Mount(NamedTuple):
    """A shared namespace mounted in an account's tree at `key` (`display` as created)."""

    ns: int
    key: str
    display: str
    access: str  # the account's access level: owner, editor, viewer


# -- pure: path resolution across mount points ---------------------------------------------------


def mount_of(mounts: list[Mount], key: str) -> Mount | None:
    """The mount whose mount point is `key` or an ancestor of it, or None (home namespace)."""
    for m in mounts:
        if paths.is_in_subtree(key, m.key):
            return m
    return None


def inner(m: Mount, p: Path) -> Path:
    """The path inside mount `m`'s namespace of the account path `p` (under or at the mount)."""
    return Path(p.display[len(m.display) :], p.key[len(m.key) :])


def mounts_below(mounts: list[Mount], key: str) -> list[Mount]:
    """The mounts strictly below `key` (the root "" holds every mount)."""
    return [m for m in mounts if m.key != key and paths.is_in_subtree(m.key, key)]


# -- reads -----------------------------------------------------------------------------------------


def mounts(db: sqlite3.Connection, account_id: str) -> list[Mount]:
    return [
        Mount(*r)
        for r in db.execute(
            "SELECT m.ns, m.key, m.display, s.access FROM mounts m JOIN share_members s "
            "ON s.ns = m.ns AND s.account_id = m.account_id WHERE m.account_id = ? ORDER BY m.key",
            (account_id,),
        )
    ]


def member_ids(db: sqlite3.Connection, ns: int) -> list[str]:
    """The account ids of the members of shared folder `ns` (none: not a shared folder)."""
    return [
        r[0]
        for r in db.execute(
            "SELECT account_id FROM share_members WHERE ns = ? ORDER BY account_id", (ns,)
        )
    ]


def shared_infos(store: Any, nss: list[int]) -> list[tuple[int, str, int]]:
    """`store.namespace_info` of those of `nss` that are shared folders: a notify root sends
    them with the change events, so that its members' list follows membership changes."""
    out = []
    for ns in nss:
        if store.db.execute("SELECT 1 FROM shares WHERE ns = ?", (ns,)).fetchone():
            info = store.namespace_info(ns)
            if info is not None:
                out.append((ns, info[0], info[1]))
    return out


def access_of(db: sqlite3.Connection, ns: int, account_id: str) -> str | None:
    row = db.execute(
        "SELECT access FROM share_members WHERE ns = ? AND account_id = ?", (ns, account_id)
    ).fetchone()
    return None if row is None else row[0]


class ShareRow(NamedTuple):
    """What `get_folder_metadata`/`list_folders` show of a shared folder, for one account."""

    ns: int
    name: str
    owner: str  # account id
    owner_name: str
    created_ms: int
    access: str  # the caller's (an invitee's: the invited level)
    invited_ms: int
    mount_display: str | None  # None: not mounted by this account


def share_row(db: sqlite3.Connection, ns: int, account_id: str, email: str) -> ShareRow | None:
    """The shared folder `ns` as `account_id` sees it, or None unless a member or invitee."""
    s = db.execute(
        "SELECT s.name, s.owner, COALESCE(a.display_name, ''), s.created_ms FROM shares s "
        "LEFT JOIN accounts a ON a.account_id = s.owner WHERE s.ns = ?",
        (ns,),
    ).fetchone()
    if s is None:
        return None
    m = db.execute(
        "SELECT access, invited_ms FROM share_members WHERE ns = ? AND account_id = ?",
        (ns, account_id),
    ).fetchone()
    if m is None:
        m = db.execute(
            "SELECT access, invited_ms FROM share_invites WHERE ns = ? AND email_key = ?",
            (ns, email.casefold()),
        ).fetchone()
        if m is None:
            return None
    mt = db.execute(
        "SELECT display FROM mounts WHERE account_id = ? AND ns = ?", (account_id, ns)
    ).fetchone()
    return ShareRow(ns, s[0], s[1], s[2], s[3], m[0], m[1], None if mt is None else mt[0])


def shares_of(
    db: sqlite3.Connection, account_id: str, email: str, mountable: bool
) -> list[ShareRow]:
    """The shared folders of an account, by ns: mounted ones (`mountable` False) or those it
    may mount (a member without a mount, or an invitee by email)."""
    nss = [
        r[0]
        for r in db.execute(
            "SELECT ns FROM share_members WHERE account_id = ? UNION "
            "SELECT ns FROM share_invites WHERE email_key = ? ORDER BY 1",
            (account_id, email.casefold()),
        )
    ]
    out = []
    for ns in nss:
        r = share_row(db, ns, account_id, email)
        if r is not None and (r.mount_display is None) == mountable:
            out.append(r)
    return out


class MemberRow(NamedTuple):
    account_id: str  # "" for an invitee without an account
    email: str
    display_name: str
    access: str


def members(db: sqlite3.Connection, ns: int) -> tuple[list[MemberRow], list[MemberRow]]:
    """(members, invitees) of shared folder `ns`: members owner first, then by email."""
    users = [
        MemberRow(*r)
        for r in db.execute(
            "SELECT m.account_id, a.email, a.display_name, m.access FROM share_members m "
            "JOIN accounts a ON a.account_id = m.account_id WHERE m.ns = ? "
            "ORDER BY m.access != 'owner', a.email_key",
            (ns,),
        )
    ]
    invitees = [
        MemberRow("", r[0], "", r[1])
        for r in db.execute(
            "SELECT email, access FROM share_invites WHERE ns = ? ORDER BY email_key", (ns,)
        )
    ]
    return users, invitees


def job(db: sqlite3.Connection, job_id: str, account_id: str) -> tuple[int, str] | None:
    """A job's outcome (ns, error tags joined by "/" or ""), or None if unknown to `account_id`."""
    row = db.execute(
        "SELECT ns, error FROM share_jobs WHERE job_id = ? AND account_id = ?",
        (job_id, account_id),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def readable_namespaces(db: sqlite3.Connection, account_id: str, home_ns: int) -> list[int]:
    """Every namespace `account_id` may read: its home and the shared folders it is a member of."""
    return [home_ns] + [
        r[0]
        for r in db.execute(
            "SELECT ns FROM share_members WHERE account_id = ? ORDER BY ns", (account_id,)
        )
    ]


def has_blocks(db: sqlite3.Connection, nss: list[int], ids: list[str]) -> set[str]:
    """The ids of `ids` that any of the namespaces `nss` references."""
    have: set[str] = set()
    for ns in nss:
        rest = [i for i in ids if i not in have]
        if not rest:
            break
        have |= gcstate.ns_has_blocks(db, ns, rest)
    return have


def locate(db: sqlite3.Connection, nss: list[int], ref: str) -> int | None:
    """The first of `nss` that holds the item `ref` ("id:…" or "rev:…"), or None."""
    for ns in nss:
        if ref.startswith("id:"):
            row = db.execute(
                "SELECT 1 FROM entries WHERE ns = ? AND id = ? LIMIT 1", (ns, ref)
            ).fetchone()
        else:
            row = db.execute(
                "SELECT 1 FROM revisions WHERE ns = ? AND rev = ?", (ns, ref[4:])
            ).fetchone()
        if row is not None:
            return ns
    return None


# -- commands ------------------------------------------------------------------------------------


def _members_changed(ctx: ApplyContext, ns: int) -> None:
    """The change feed reports `ns` (a notify root then re-reads its members)."""
    ctx.db.execute("UPDATE namespaces SET last_index = ? WHERE ns = ?", (ctx.index, ns))


def _with_job(ctx: ApplyContext, account_id: str, job_id: str, fn: Any) -> Any:
    """Run `fn` under its own savepoint; with a job id, record its outcome whatever it is."""
    if not job_id:
        return fn()
    r = atomic(ctx, fn)
    err = "/".join(r.tags) if isinstance(r, MetaError) else ""
    db = ctx.db
    db.execute("DELETE FROM share_jobs WHERE created_ms < ?", (ctx.now_ms - JOB_KEEP_MS,))
    db.execute(
        "DELETE FROM share_jobs WHERE job_id IN (SELECT job_id FROM share_jobs "
        "ORDER BY created_ms DESC, job_id LIMIT -1 OFFSET ?)",
        (JOBS_MAX - 1,),
    )
    db.execute(
        "INSERT OR REPLACE INTO share_jobs (job_id, account_id, created_ms, ns, error) "
        "VALUES (?, ?, ?, ?, ?)",
        (job_id, account_id, ctx.now_ms, getattr(r, "ns", 0), err),
    )
    # The command itself succeeds (a failure would roll the job row back): its outcome is
    # the job's, which `ShareResult.failed` also carries.
    return ShareResult(getattr(r, "ns", 0), [err])


def _account(ctx: ApplyContext, account_id: str) -> Any:
    a = accounts.get_account(ctx.db, account_id)
    if a is None:
        raise Fail("invalid_command", reason="unknown account")
    return a


def _share_of(ctx: ApplyContext, ns: int, account_id: str) -> str:
    """The caller's access to shared folder `ns`, or fail as if it did not exist."""
    if ctx.db.execute("SELECT 1 FROM shares WHERE ns = ?", (ns,)).fetchone() is None:
        raise Fail("access_error", "invalid_id")
    acc = access_of(ctx.db, ns, account_id)
    if acc is None:
        raise Fail("access_error", "not_a_member")
    return acc


def _subtree(db: sqlite3.Connection, ns: int, key: str) -> list[Entry]:
    """The live entries strictly below `key` ("" = the root) in key order."""
    lo, hi = paths.subtree_range(key)
    return [
        Entry(*r)
        for r in db.execute(
            f"SELECT {E_COLS} FROM entries WHERE ns = ? AND key > ? AND key < ? AND kind < 3 "
            "ORDER BY key",
            (ns, lo, hi),
        )
    ]


def _grant_blocks(ctx: ApplyContext, src_ns: int, dst_ns: int, blobs: list[bytes]) -> None:
    """`dst_ns` may reference the blocks of these blocklists (it holds files made of them)."""
    ids: set[str] = set()
    for b in blobs:
        ids.update(ref.id for ref in BLOCKS_DEC.decode(b))
    for bid in sorted(ids):
        ctx.db.execute(
            "INSERT OR REPLACE INTO ns_blocks (ns, block_id, size, last_ms, last_idx) "
            "SELECT ?, block_id, size, ?, ? FROM ns_blocks WHERE ns = ? AND block_id = ?",
            (dst_ns, ctx.now_ms, ctx.index, src_ns, bid),
        )


def _copy_tree(
    ctx: ApplyContext,
    src_ns: int,
    src_key: str,
    src_display_len: int,
    dst_ns: int,
    dst: Path,
    *,
    keep_ids: bool,
    journal: bool,
) -> None:
    """Copy every live entry below `src_key` of `src_ns` to below `dst` in `dst_ns` (whose
    folder `dst` exists and holds nothing live). `keep_ids`: same ids (and every revision, with
    its rev) — the content moves; else new ids and one new revision per file — a copy."""
    db = ctx.db
    n = len(src_key)
    blobs: list[bytes] = []
    for e in _subtree(db, src_ns, src_key):
        key = dst.key + e.key[n:]
        display = dst.display + e.display[src_display_len:]
        parent_key = dst.key + e.parent_key[n:]
        if e.kind == FOLDER:
            id_ = e.id if keep_ids else ctx.new_id(ctx.next_pos())
            rev = None
        elif keep_ids:
            id_, rev = e.id, e.rev
            db.execute(
                "INSERT OR REPLACE INTO revisions (ns, rev, id, key, display, size, "
                "content_hash, client_modified, server_modified, stamp_ms, blocks, symlink, "
                "executable) SELECT ?, rev, id, ?, ?, size, content_hash, client_modified, "
                "server_modified, stamp_ms, blocks, symlink, executable FROM revisions "
                "WHERE ns = ? AND id = ?",
                (dst_ns, key, display, src_ns, e.id),
            )
        else:
            pos = ctx.next_pos()
            id_, rev = ctx.new_id(pos), ctx.rev(pos)
            db.execute(
                "INSERT INTO revisions (ns, rev, id, key, display, size, content_hash, "
                "client_modified, server_modified, stamp_ms, blocks, symlink, executable) "
                "SELECT ?, ?, ?, ?, ?, size, content_hash, client_modified, ?, ?, blocks, "
                "symlink, executable FROM revisions WHERE ns = ? AND rev = ?",
                (dst_ns, rev, id_, key, display, ctx.now, ctx.now_ms, src_ns, e.rev),
            )
        if e.kind == FILE:
            (blob,) = db.execute(
                "SELECT blocks FROM revisions WHERE ns = ? AND rev = ?", (dst_ns, rev)
            ).fetchone()
            blobs.append(blob)
        writes.put_entry(ctx, dst_ns, key, parent_key, display, e.kind, id_, rev)
        if journal:
            writes.journal(ctx, dst_ns, key, parent_key, display, e.kind)
    _grant_blocks(ctx, src_ns, dst_ns, blobs)


def _drop_namespace(ctx: ApplyContext, ns: int) -> None:
    db = ctx.db
    db.execute(
        "DELETE FROM upload_pieces WHERE session_id IN "
        "(SELECT session_id FROM upload_sessions WHERE ns = ?)",
        (ns,),
    )
    for table in (
        "upload_sessions",
        "ns_blocks",
        "journal",
        "revisions",
        "entries",
        "share_members",
        "share_invites",
        "mounts",
        "shares",
    ):
        db.execute(f"DELETE FROM {table} WHERE ns = ?", (ns,))
    db.execute("DELETE FROM namespaces WHERE ns = ?", (ns,))
    ctx.known_ns.discard(ns)


def _mount_entry(ctx: ApplyContext, account_id: str, ns: int) -> tuple[int, Entry] | None:
    """(home ns, the mount point's entry) of `account_id`'s mount of `ns`, or None."""
    row = ctx.db.execute(
        "SELECT m.key, a.home_ns FROM mounts m JOIN accounts a ON a.account_id = m.account_id "
        "WHERE m.account_id = ? AND m.ns = ?",
        (account_id, ns),
    ).fetchone()
    if row is None:
        return None
    e = rows.live(ctx.db, row[1], row[0])
    if e is None:  # every mount point is a live folder (kept so by the API and these commands)
        raise Fail("internal_error", reason="mount point without its folder")
    return row[1], e


def _unmount(ctx: ApplyContext, account_id: str, ns: int, copy: bool, keep_ids: bool) -> None:
    """Remove `account_id`'s mount of `ns`: the mount point folder stays (with a copy of the
    content) if `copy`, else it is deleted. A no-op if not mounted."""
    found = _mount_entry(ctx, account_id, ns)
    ctx.db.execute("DELETE FROM mounts WHERE account_id = ? AND ns = ?", (account_id, ns))
    if found is None:
        return
    home, e = found
    if copy:
        # A cursor may not have been sent the share's last deletes yet, and the mount leaves
        # it now: what is deleted in the share is journaled deleted below the mount point in
        # the home namespace, so such a cursor forgets it too (the copy names only the live).
        for key, parent_key, display in ctx.db.execute(
            "SELECT key, parent_key, display FROM entries WHERE ns = ? AND kind = ? ORDER BY key",
            (ns, DELETED),
        ).fetchall():
            writes.journal(ctx, home, e.key + key, e.key + parent_key, e.display + display,
                           DELETED)  # fmt: skip
        _copy_tree(ctx, ns, "", 0, home, Path(e.display, e.key), keep_ids=keep_ids, journal=True)
        if keep_ids:  # the copy is the same items: this account's links follow them home
            ctx.db.execute(  # its links to the share's top: to the folder that stays
                "UPDATE shared_links SET ns = ?, target_id = ? WHERE ns = ? AND owner = ? "
                "AND target_id = ?",
                (home, e.id, ns, account_id, ROOT_TARGET),
            )
            ctx.db.execute(
                "UPDATE shared_links SET ns = ? WHERE ns = ? AND owner = ?", (home, ns, account_id)
            )
        return
    ctx.db.execute(
        "UPDATE entries SET kind = ?, deleted_ms = ? WHERE ns = ? AND key = ?",
        (DELETED, ctx.now_ms, home, e.key),
    )
    writes.journal(ctx, home, e.key, e.parent_key, e.display, DELETED)


def share_folder(ctx: ApplyContext, c: ShareFolder) -> ShareResult:
    def run() -> ShareResult:
        acct = _account(ctx, c.account_id)
        home = acct.home_ns
        try:
            path = paths.parse_path(c.path)
        except MalformedPath:
            raise Fail("bad_path", "invalid_path") from None
        mine = mounts(ctx.db, c.account_id)
        m = mount_of(mine, path.key)
        if m is not None:
            raise Fail(
                "bad_path", "already_shared" if m.key == path.key else "inside_shared_folder"
            )
        if mounts_below(mine, path.key):
            raise Fail("bad_path", "contains_shared_folder")
        e = rows.live(ctx.db, home, path.key)
        if e is not None and e.kind == FILE:
            raise Fail("bad_path", "is_file")
        if e is None:
            writes.create_folder(ctx, writes.CreateFolder(home, path.display))
            e = rows.live(ctx.db, home, path.key)
        ns = ctx.index
        db = ctx.db
        db.execute("INSERT INTO namespaces (ns, owner) VALUES (?, ?)", (ns, c.account_id))
        db.execute(
            "INSERT INTO shares (ns, name, owner, created_ms) VALUES (?, ?, ?, ?)",
            (ns, e.name, c.account_id, ctx.now_ms),
        )
        db.execute(
            "INSERT INTO share_members (ns, account_id, access, invited_ms) VALUES (?, ?, ?, ?)",
            (ns, c.account_id, "owner", ctx.now_ms),
        )
        db.execute(
            "INSERT INTO mounts (account_id, ns, key, display) VALUES (?, ?, ?, ?)",
            (c.account_id, ns, e.key, e.display),
        )
        # The content moves: same ids and revs, journaled in the new namespace (a cursor on
        # it lists it from the start); gone from the home namespace without a journal entry
        # (for the owner's tree nothing changed: the same items at the same paths).
        _copy_tree(ctx, home, e.key, len(e.display), ns, Path("", ""), keep_ids=True, journal=True)
        lo, hi = paths.subtree_range(e.key)
        # Shared links to items of the folder follow them (same ids) into the new namespace;
        # the owner's links to the folder itself become links to the share's top.
        db.execute(
            "UPDATE shared_links SET ns = ?, target_id = ? WHERE ns = ? AND target_id = ?",
            (ns, ROOT_TARGET, home, e.id),
        )
        db.execute(
            "UPDATE shared_links SET ns = ? WHERE ns = ? AND target_id IN (SELECT id FROM "
            "entries WHERE ns = ? AND key > ? AND key < ? AND id IS NOT NULL)",
            (ns, home, home, lo, hi),
        )
        db.execute(
            "DELETE FROM revisions WHERE ns = ? AND id IN (SELECT id FROM entries "
            "WHERE ns = ? AND key > ? AND key < ? AND kind = ?)",
            (home, home, lo, hi, FILE),
        )
        db.execute("DELETE FROM entries WHERE ns = ? AND key > ? AND key < ?", (home, lo, hi))
        return ShareResult(ns)

    return _with_job(ctx, c.account_id, c.job_id, run)


def add_members(ctx: ApplyContext, c: AddMembers) -> ShareResult:
    acc = _share_of(ctx, c.ns, c.actor)
    if acc == "viewer":
        raise Fail("no_permission")
    db = ctx.db
    failed: list[str] = []
    for m in c.members:
        if m.access not in ("editor", "viewer"):
            raise Fail("invalid_command", reason="access must be editor or viewer")
        target = None
        if m.account_id:
            target = accounts.get_account(db, m.account_id)
            if target is None:
                raise Fail("bad_member", "invalid_dropbox_id", invalid_dropbox_id=m.account_id)
        else:
            email = m.email.strip()
            if "@" not in email or len(email) > 254:
                raise Fail("bad_member", "invalid_email", invalid_email=m.email)
            target = accounts.account_by_email(db, email)
        if target is not None:
            if access_of(db, c.ns, target.account_id) is not None:
                failed.append("already_a_member")  # Dropbox: a no-op, not an error
                continue
            db.execute(
                "INSERT INTO share_members (ns, account_id, access, invited_ms) "
                "VALUES (?, ?, ?, ?)",
                (c.ns, target.account_id, m.access, ctx.now_ms),
            )
            db.execute(
                "DELETE FROM share_invites WHERE ns = ? AND email_key = ?",
                (c.ns, target.email.casefold()),
            )
        else:
            db.execute(
                "INSERT OR REPLACE INTO share_invites (ns, email_key, email, access, invited_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (c.ns, m.email.strip().casefold(), m.email.strip(), m.access, ctx.now_ms),
            )
        failed.append("")
    (n,) = db.execute(
        "SELECT (SELECT count(*) FROM share_members WHERE ns = ?) + "
        "(SELECT count(*) FROM share_invites WHERE ns = ?)",
        (c.ns, c.ns),
    ).fetchone()
    if n > MEMBERS_MAX:
        raise Fail("too_many_members", too_many_members=MEMBERS_MAX)
    _members_changed(ctx, c.ns)
    return ShareResult(c.ns, failed)


def _member_target(ctx: ApplyContext, ns: int, m: ShareMember) -> tuple[str, str]:
    """("account", account id) of a member, or ("invite", email key) of an invitee."""
    db = ctx.db
    acct = (
        accounts.get_account(db, m.account_id)
        if m.account_id
        else accounts.account_by_email(db, m.email.strip())
    )
    if acct is not None and access_of(db, ns, acct.account_id) is not None:
        return "account", acct.account_id
    ekey = m.email.strip().casefold()
    if (
        not m.account_id
        and db.execute(
            "SELECT 1 FROM share_invites WHERE ns = ? AND email_key = ?", (ns, ekey)
        ).fetchone()
    ):
        return "invite", ekey
    raise Fail("member_error", "not_a_member")


def set_member_access(ctx: ApplyContext, c: SetMemberAccess) -> ShareResult:
    if _share_of(ctx, c.ns, c.actor) != "owner":
        raise Fail("no_permission")
    if c.member.access not in ("editor", "viewer"):
        raise Fail("invalid_command", reason="access must be editor or viewer")
    kind, who = _member_target(ctx, c.ns, c.member)
    if kind == "account":
        if who == c.actor:
            raise Fail("no_permission")  # the owner stays owner
        ctx.db.execute(
            "UPDATE share_members SET access = ? WHERE ns = ? AND account_id = ?",
            (c.member.access, c.ns, who),
        )
    else:
        ctx.db.execute(
            "UPDATE share_invites SET access = ? WHERE ns = ? AND email_key = ?",
            (c.member.access, c.ns, who),
        )
    return ShareResult(c.ns)


def remove_member(ctx: ApplyContext, c: RemoveMember) -> ShareResult:
    def run() -> ShareResult:
        if _share_of(ctx, c.ns, c.actor) != "owner":
            raise Fail("no_permission")
        kind, who = _member_target(ctx, c.ns, c.member)
        if kind == "invite":
            ctx.db.execute("DELETE FROM share_invites WHERE ns = ? AND email_key = ?", (c.ns, who))
            return ShareResult(c.ns)
        if who == c.actor:
            raise Fail("folder_owner")
        _unmount(ctx, who, c.ns, copy=c.leave_a_copy, keep_ids=False)
        ctx.db.execute("DELETE FROM share_members WHERE ns = ? AND account_id = ?", (c.ns, who))
        _members_changed(ctx, c.ns)
        return ShareResult(c.ns)

    return _with_job(ctx, c.actor, c.job_id, run)


def mount_folder(ctx: ApplyContext, c: MountFolder) -> ShareResult:
    db = ctx.db
    acct = _account(ctx, c.account_id)
    share = db.execute("SELECT name FROM shares WHERE ns = ?", (c.ns,)).fetchone()
    if share is None:
        raise Fail("access_error", "invalid_id")
    if access_of(db, c.ns, c.account_id) is None:
        inv = db.execute(
            "SELECT access, invited_ms FROM share_invites WHERE ns = ? AND email_key = ?",
            (c.ns, acct.email.casefold()),
        ).fetchone()
        if inv is None:
            raise Fail("access_error", "not_a_member")
        db.execute(
            "INSERT INTO share_members (ns, account_id, access, invited_ms) VALUES (?, ?, ?, ?)",
            (c.ns, c.account_id, inv[0], inv[1]),
        )
        db.execute(
            "DELETE FROM share_invites WHERE ns = ? AND email_key = ?",
            (c.ns, acct.email.casefold()),
        )
        _members_changed(ctx, c.ns)
    if db.execute(
        "SELECT 1 FROM mounts WHERE account_id = ? AND ns = ?", (c.account_id, c.ns)
    ).fetchone():
        raise Fail("already_mounted")
    home = acct.home_ns
    root = Path("", "")
    at = root.child(share[0])
    if rows.live(db, home, at.key) is not None:
        at = writes.free_name(ctx, home, root, share[0], is_folder=True, conflicted=False)
    writes.create_folder(ctx, writes.CreateFolder(home, at.display))
    db.execute(
        "INSERT INTO mounts (account_id, ns, key, display) VALUES (?, ?, ?, ?)",
        (c.account_id, c.ns, at.key, at.display),
    )
    return ShareResult(c.ns)


def unmount_folder(ctx: ApplyContext, c: UnmountFolder) -> ShareResult:
    _share_of(ctx, c.ns, c.account_id)
    if _mount_entry(ctx, c.account_id, c.ns) is None:
        raise Fail("access_error", "unmounted")
    _unmount(ctx, c.account_id, c.ns, copy=False, keep_ids=False)
    return ShareResult(c.ns)


def relinquish(ctx: ApplyContext, c: Relinquish) -> ShareResult:
    def run() -> ShareResult:
        if _share_of(ctx, c.ns, c.account_id) == "owner":
            raise Fail("folder_owner")
        _unmount(ctx, c.account_id, c.ns, copy=c.leave_a_copy, keep_ids=False)
        ctx.db.execute(
            "DELETE FROM share_members WHERE ns = ? AND account_id = ?", (c.ns, c.account_id)
        )
        _members_changed(ctx, c.ns)
        return ShareResult(c.ns)

    return _with_job(ctx, c.account_id, c.job_id, run)


def unshare(ctx: ApplyContext, c: Unshare) -> ShareResult:
    def run() -> ShareResult:
        if _share_of(ctx, c.ns, c.actor) != "owner":
            raise Fail("no_permission")
        for (acct,) in ctx.db.execute(
            "SELECT account_id FROM share_members WHERE ns = ? ORDER BY account_id", (c.ns,)
        ).fetchall():
            owner = acct == c.actor
            _unmount(ctx, acct, c.ns, copy=owner or c.leave_a_copy, keep_ids=owner)
        _drop_namespace(ctx, c.ns)
        return ShareResult(c.ns)

    return _with_job(ctx, c.actor, c.job_id, run)


def copy_across(ctx: ApplyContext, c: CopyAcross) -> Meta:
    """See `commands.CopyAcross`: like `writes.relocate` (copy), from another namespace."""
    db = ctx.db
    check_ns(ctx, c.to_ns)
    src = rows.lookup_live(db, c.from_ns, c.from_path, "from_lookup")
    to = writes.write_path(ctx, c.to_ns, c.to_path, "to", allow_id=False)
    if to.is_root:
        raise Fail("to", "malformed_path")
    parent = Path(writes.ensure_parents(ctx, c.to_ns, to, "to"), to.parent.key)
    if rows.live(db, c.to_ns, to.key) is not None:
        if not c.autorename:
            raise Fail("to", "conflict", "folder" if src.kind == FOLDER else "file")
        to = writes.free_name(
            ctx,
            c.to_ns,
            parent,
            to.name,
            is_folder=src.kind == FOLDER,
            conflicted=False,
            outer="to",
        )
    else:
        to = parent.child(to.name)
    db.execute(  # deleted history at the destination goes (as a same-namespace copy does)
        "DELETE FROM entries WHERE ns = ? AND (key = ? OR (key > ? AND key < ?))",
        (c.to_ns, to.key, *paths.subtree_range(to.key)),
    )
    pos = ctx.next_pos()
    id_ = ctx.new_id(pos)
    if src.kind == FOLDER:
        writes.put_entry(ctx, c.to_ns, to.key, parent.key, to.display, FOLDER, id_, None)
        writes.journal(ctx, c.to_ns, to.key, parent.key, to.display, FOLDER)
        _copy_tree(
            ctx, c.from_ns, src.key, len(src.display), c.to_ns, to, keep_ids=False, journal=True
        )
        return FolderMeta(id_, to.name, to.lower, to.display)
    rev = ctx.rev(pos)
    db.execute(
        "INSERT INTO revisions (ns, rev, id, key, display, size, content_hash, "
        "client_modified, server_modified, stamp_ms, blocks, symlink, executable) "
        "SELECT ?, ?, ?, ?, ?, size, content_hash, client_modified, ?, ?, blocks, "
        "symlink, executable FROM revisions WHERE ns = ? AND rev = ?",
        (c.to_ns, rev, id_, to.key, to.display, ctx.now, ctx.now_ms, c.from_ns, src.rev),
    )
    (blob,) = db.execute(
        "SELECT blocks FROM revisions WHERE ns = ? AND rev = ?", (c.to_ns, rev)
    ).fetchone()
    _grant_blocks(ctx, c.from_ns, c.to_ns, [blob])
    writes.put_entry(ctx, c.to_ns, to.key, parent.key, to.display, FILE, id_, rev)
    writes.journal(ctx, c.to_ns, to.key, parent.key, to.display, FILE)
    return rows.meta_of(db, c.to_ns, rows.live(db, c.to_ns, to.key))


def move_mount(ctx: ApplyContext, c: MoveMount) -> Meta:
    """The mount point moves like any folder of the home namespace (it holds nothing there)."""
    found = _mount_entry(ctx, c.account_id, c.ns)
    if found is None:
        raise Fail("from_lookup", "not_found")
    home, e = found
    to = writes.write_path(ctx, home, c.to_path, "to", allow_id=False)
    others = [m for m in mounts(ctx.db, c.account_id) if m.ns != c.ns]
    if mount_of(others, to.key) is not None:
        raise Fail("cant_nest_shared_folder")
    m = writes.relocate(ctx, writes.Move(home, e.display, c.to_path, c.autorename))
    ctx.db.execute(
        "UPDATE mounts SET key = ?, display = ? WHERE account_id = ? AND ns = ?",
        (paths.make_key(m.path_display), m.path_display, c.account_id, c.ns),
    )
    return m


HANDLERS = {
    CopyAcross: copy_across,
    MoveMount: move_mount,
    ShareFolder: share_folder,
    AddMembers: add_members,
    SetMemberAccess: set_member_access,
    RemoveMember: remove_member,
    MountFolder: mount_folder,
    UnmountFolder: unmount_folder,
    Relinquish: relinquish,
    Unshare: unshare,
}
