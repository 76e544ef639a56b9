"""Shared links, replicated: the table, the commands that change it, and its reads. Pure (an
`ApplyContext` or a connection in, values out).

What a link is
--------------
A link gives whoever holds its URL a file or folder of one namespace, without an account. The
URL carries a token: 192 bits, URL-safe, `link_token(key, nonce)` = HMAC-SHA256(key, nonce)
for a random 16-byte nonce and a key that no store holds (the API derives it from the
cluster's admin token, which every member has in its configuration). The cluster stores and
replicates only the nonce and the token's SHA-256 (`link_token_hash`) — a token has too much
entropy for a slow hash to add anything — so a stolen store, snapshot or Raft log gives no
working URL, while a member can still show its owner the URL of every link (Dropbox's
`list_shared_links` and `shared_link_already_exists` answer with it). A row of
`shared_links` (DDL in `schema`):

    token_hash  the key                  nonce       what the token derives from, with the key
    owner       the account that made it
    ns, target_id  the file or folder, by id: it follows renames and moves in its namespace
    password_hash  None (public) or an argon2id hash (`raftbox.api.links` hashes and checks)
    expires_ms  None (never) or the leader's stamp after which it is gone
    allow_download, created_ms, revoked_ms (None while live)

A link is live while it is not revoked, not expired (at the time of whoever asks: the commands
use their entry's stamp, a read the caller's clock), its owner's account exists and is enabled,
its owner can still read its namespace (its home, or a shared folder it is a member of: a link
into a shared folder dies when its owner leaves or is removed), and its target is a live entry
of its namespace. Anything else is "no such link", the same answer as a token never issued
(`live_link`). Sharing a folder moves its items into the share's namespace with their ids, and
their links with them (`sharing.share_folder`); an owner who unshares keeping a copy takes its
links back home.

A shared folder's top
---------------------
A shared folder's top (a member's mount point, `/Team`) has no entry of its own in the share's
namespace: the namespace *is* the folder. A link to it has `target_id` `ROOT_TARGET` (never an
item id: those are "id:…") in the share's namespace, so it shows the folder's content whatever
any member's mount point is renamed or moved to, and every read through it stays inside that
namespace. Such a link is live while the namespace is still a shared folder (and the general
rule above: its owner still a member, enabled, …); `root_meta` is what it shows as: the folder
named as its owner's mount point is named (the share's name if the owner has it unmounted),
with the owner's mount point's id and empty paths (a namespace-relative path, like every link
target's). A link never makes a home namespace's root public: `ROOT_TARGET` counts only in a
namespace that is a shared folder. Sharing a folder turns its owner's links to that folder into
links to the new share's top; unsharing turns the owner's links to the top back into links to
the folder it keeps (its copy has the same items, as Dropbox keeps an unshared folder's links),
while every other member's links to the top die with the namespace, as their links inside it do.
A link stored before links could name a share's top, to the folder entry that is now its
owner's mount point (made before the folder was shared, or to the mount point by its id), is
read as the link to that share's top it means (`_as_top`): that entry holds nothing.

Commands (see `commands`): `CreateLink` (refused with `shared_link_already_exists`, extra
`token_hash` of the existing one, while the owner has a live link to the same target: one link
per owner and target, as Dropbox keeps it), `ModifyLink`, `RevokeLink` (a revoked row stays, so
its token can never be issued again; the owner's listing skips it). Modify and revoke answer
`shared_link_not_found` for a link that is not live and `shared_link_access_denied` to anyone
but its owner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3

import msgspec

from . import rows
from .commands import CreateLink, FolderMeta, LinkInfo, Meta, ModifyLink, RevokeLink
from .context import ApplyContext, check_ns
from .rows import Fail

TOKEN_BYTES = 24  # 192 bits; 32 URL-safe characters
NONCE_BYTES = 16
TOKEN_MAX_CHARS = 64  # longer is refused before any lookup
LINKS_PER_ACCOUNT_MAX = 10_000
ROOT_TARGET = "ns-root"  # the target of a link to a shared folder's top (module docstring)

_COLS = (
    "token_hash, nonce, owner, ns, target_id, password_hash, expires_ms, allow_download, "
    "created_ms, revoked_ms"
)


def link_token(key: bytes, nonce: bytes) -> str:
    """The URL token of a link (module docstring)."""
    mac = hmac.new(key, b"link-token:" + nonce, hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).decode()


def link_token_hash(token: str) -> bytes:
    return hashlib.sha256(b"link:" + token.encode()).digest()


def token_well_formed(token: str) -> bool:
    """Could `token` be one of ours? (Checked before any lookup: anything else is not found.)"""
    return (
        0 < len(token) <= TOKEN_MAX_CHARS
        and token.isascii()
        and all(c.isalnum() or c in "-_" for c in token)
    )


# -- reads ------------------------------------------------------------------------------------


def _info(row: tuple) -> LinkInfo:
    h, nonce, owner, ns, tid, pw, exp, dl, created, revoked = row
    return LinkInfo(bytes(h), bytes(nonce), owner, ns, tid, pw, exp, bool(dl), created, revoked)


def get_link(db: sqlite3.Connection, token_hash: bytes) -> LinkInfo | None:
    """The row of a token hash, whatever its state."""
    row = db.execute(
        f"SELECT {_COLS} FROM shared_links WHERE token_hash = ?", (token_hash,)
    ).fetchone()
    return None if row is None else _info(row)


def is_live(db: sqlite3.Connection, link: LinkInfo | None, now_ms: int) -> bool:
    """`link` can be used at `now_ms` (module docstring: not revoked, not expired, owner
    enabled, target live)."""
    if link is None or link.revoked_ms is not None:
        return False
    if link.expires_ms is not None and now_ms >= link.expires_ms:
        return False
    acct = db.execute(
        "SELECT disabled, home_ns FROM accounts WHERE account_id = ?", (link.owner,)
    ).fetchone()
    if acct is None or acct[0]:
        return False
    if link.ns != acct[1] and not _member(db, link.ns, link.owner):
        return False  # a link into a shared folder dies when its owner leaves or is removed
    if link.target_id == ROOT_TARGET:
        return link.ns != acct[1] and _is_share(db, link.ns)
    return rows.live_by_id(db, link.ns, link.target_id) is not None


def _is_share(db: sqlite3.Connection, ns: int) -> bool:
    return db.execute("SELECT 1 FROM shares WHERE ns = ?", (ns,)).fetchone() is not None


def root_meta(db: sqlite3.Connection, ns: int, owner: str) -> FolderMeta | None:
    """What a link by `owner` to the top of shared folder `ns` shows as (module docstring), or
    None if `ns` is not a shared folder."""
    share = db.execute("SELECT name FROM shares WHERE ns = ?", (ns,)).fetchone()
    if share is None:
        return None
    row = db.execute(
        "SELECT e.id, e.name FROM mounts m JOIN accounts a ON a.account_id = m.account_id "
        "JOIN entries e ON e.ns = a.home_ns AND e.key = m.key AND e.kind < 3 "
        "WHERE m.account_id = ? AND m.ns = ?",
        (owner, ns),
    ).fetchone()
    if row is not None and row[0]:
        return FolderMeta(row[0], row[1], "", "")
    return FolderMeta(f"id:{ROOT_TARGET}-{ns}", share[0], "", "")


def target_meta(db: sqlite3.Connection, link: LinkInfo) -> Meta:
    """The metadata of a live link's target, its paths inside the link's namespace."""
    if link.target_id == ROOT_TARGET:
        m = root_meta(db, link.ns, link.owner)
        assert m is not None, "a live link to a shared folder's top names a shared folder"
        return m
    e = rows.live_by_id(db, link.ns, link.target_id)
    assert e is not None, "a live link's target is a live entry"
    return rows.meta_of(db, link.ns, e)


def _member(db: sqlite3.Connection, ns: int, account_id: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM share_members WHERE ns = ? AND account_id = ?", (ns, account_id)
        ).fetchone()
        is not None
    )


def live_link(db: sqlite3.Connection, token_hash: bytes, now_ms: int) -> LinkInfo | None:
    """The live link of a token hash, or None (never issued, revoked, expired, target gone)."""
    link = get_link(db, token_hash)
    if link is None:
        return None
    link = _as_top(db, link)
    return link if is_live(db, link, now_ms) else None


def _as_top(db: sqlite3.Connection, link: LinkInfo) -> LinkInfo:
    """`link`, or the link to a share's top it means if it names its owner's mount point
    (module docstring)."""
    if link.target_id == ROOT_TARGET:
        return link
    row = db.execute(
        "SELECT m.ns FROM accounts a JOIN mounts m ON m.account_id = a.account_id "
        "JOIN entries e ON e.ns = a.home_ns AND e.key = m.key "
        "WHERE a.account_id = ? AND a.home_ns = ? AND e.id = ? AND e.kind < 3",
        (link.owner, link.ns, link.target_id),
    ).fetchone()
    if row is None:
        return link
    return msgspec.structs.replace(link, ns=row[0], target_id=ROOT_TARGET)


def link_for_target(
    db: sqlite3.Connection, owner: str, ns: int, target_id: str, now_ms: int
) -> LinkInfo | None:
    """The owner's live link to this target, if any."""
    for row in db.execute(
        f"SELECT {_COLS} FROM shared_links WHERE ns = ? AND target_id = ? AND owner = ? "
        "AND revoked_ms IS NULL",
        (ns, target_id, owner),
    ):
        link = _info(row)
        if is_live(db, link, now_ms):
            return link
    return None


def links_of(
    db: sqlite3.Connection, owner: str, now_ms: int, after: bytes = b"", limit: int = 1000
) -> tuple[list[LinkInfo], bytes | None]:
    """The owner's live links in token-hash order after `after`: (up to `limit` of them, the
    hash to continue after, or None when there are no more)."""
    out: list[LinkInfo] = []
    last = after
    cur = db.execute(
        f"SELECT {_COLS} FROM shared_links WHERE owner = ? AND token_hash > ? "
        "AND revoked_ms IS NULL ORDER BY token_hash",
        (owner, after),
    )
    for row in cur:
        link = _info(row)
        if len(out) == limit:
            return out, last
        last = link.token_hash
        link = _as_top(db, link)
        if is_live(db, link, now_ms):
            out.append(link)
    return out, None


# -- commands ---------------------------------------------------------------------------------


def _check_settings(password_hash: str | None, expires_ms: int | None, now_ms: int) -> None:
    if password_hash is not None and not password_hash.startswith("$argon2"):
        raise Fail("invalid_command", reason="a link password is stored as an argon2 hash")
    if expires_ms is not None and expires_ms <= now_ms:
        raise Fail("settings_error", "invalid_settings")


def create_link(ctx: ApplyContext, c: CreateLink) -> LinkInfo:
    db = ctx.db
    if len(c.token_hash) != 32 or len(c.nonce) != NONCE_BYTES:
        raise Fail("invalid_command", reason="a link token hash is 32 bytes, a nonce 16")
    check_ns(ctx, c.ns)
    if c.target_id == ROOT_TARGET:
        if not _is_share(db, c.ns):  # never a home namespace's root
            raise Fail("path", "not_found")
    elif rows.live_by_id(db, c.ns, c.target_id) is None:
        raise Fail("path", "not_found")
    _check_settings(c.password_hash, c.expires_ms, ctx.now_ms)
    existing = link_for_target(db, c.owner, c.ns, c.target_id, ctx.now_ms)
    if existing is not None:
        raise Fail("shared_link_already_exists", token_hash=existing.token_hash)
    if get_link(db, c.token_hash) is not None:
        raise Fail("invalid_command", reason="this token was issued before")
    (n,) = db.execute(
        "SELECT COUNT(*) FROM shared_links WHERE owner = ? AND revoked_ms IS NULL", (c.owner,)
    ).fetchone()
    if n >= LINKS_PER_ACCOUNT_MAX:
        raise Fail("settings_error", "not_authorized")
    link = LinkInfo(
        c.token_hash,
        c.nonce,
        c.owner,
        c.ns,
        c.target_id,
        c.password_hash,
        c.expires_ms,
        c.allow_download,
        ctx.now_ms,
    )
    db.execute(
        f"INSERT INTO shared_links ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            link.token_hash,
            link.nonce,
            link.owner,
            link.ns,
            link.target_id,
            link.password_hash,
            link.expires_ms,
            int(link.allow_download),
            link.created_ms,
        ),
    )
    return link


def _owned_live(ctx: ApplyContext, token_hash: bytes, owner: str) -> LinkInfo:
    link = live_link(ctx.db, token_hash, ctx.now_ms)
    if link is None:
        raise Fail("shared_link_not_found")
    if link.owner != owner:
        raise Fail("shared_link_access_denied")
    return link


def modify_link(ctx: ApplyContext, c: ModifyLink) -> LinkInfo:
    link = _owned_live(ctx, c.token_hash, c.owner)
    pw = link.password_hash
    if c.password_hash is not None:
        pw = c.password_hash or None
    exp = None if c.remove_expiration else (c.expires_ms or link.expires_ms)
    if c.expires_ms is not None and not c.remove_expiration:
        _check_settings(None, c.expires_ms, ctx.now_ms)
    _check_settings(pw, None, ctx.now_ms)
    dl = link.allow_download if c.allow_download is None else c.allow_download
    ctx.db.execute(
        "UPDATE shared_links SET password_hash = ?, expires_ms = ?, allow_download = ? "
        "WHERE token_hash = ?",
        (pw, exp, int(dl), link.token_hash),
    )
    return msgspec.structs.replace(link, password_hash=pw, expires_ms=exp, allow_download=dl)


def revoke_link(ctx: ApplyContext, c: RevokeLink) -> LinkInfo:
    link = _owned_live(ctx, c.token_hash, c.owner)
    ctx.db.execute(
        "UPDATE shared_links SET revoked_ms = ? WHERE token_hash = ?",
        (ctx.now_ms, link.token_hash),
    )
    return link
