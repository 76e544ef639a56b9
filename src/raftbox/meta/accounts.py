"""Accounts and bearer tokens: the commands that create, change and remove them, and their reads.

Writes (`ApplyContext` in, a result or `Fail` out; see `context`): `InitCluster` (the cluster
secret, once), `CreateAccount` (the account id is "dbid:" + b64url(HMAC(secret,
f"account:{index}"))[:35] and its home namespace is the entry's raft index, so neither is ever
reused), `AddToken`, `RevokeToken`, `RevokeTokens`, `SetDisabled`, `RemoveAccount` (the account,
its tokens and every row of its namespace). Only SHA-256 hashes of tokens are stored.

Reads (a connection in, values out): `get_account`, `account_by_email` (emails match
case-insensitively, by their casefold), `auth_token`, `list_accounts`.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from typing import Any

import msgspec

from . import oauth, quota, values
from .commands import (
    AccountInfo,
    AddToken,
    Count,
    CreateAccount,
    InitCluster,
    RemoveAccount,
    RevokeToken,
    RevokeTokens,
    SetDisabled,
)
from .context import ApplyContext, b64
from .rows import Fail, format_ts
from .schema import set_kv

# -- commands -------------------------------------------------------------------------------


def init_cluster(ctx: ApplyContext, c: InitCluster) -> bool:
    if ctx.secret:
        return False
    if len(c.secret) < 16:
        raise Fail("invalid_command", reason="the cluster secret must be ≥ 16 bytes")
    set_kv(ctx.db, "secret", c.secret)  # the store reads it back once the entry is committed
    return True


def create_account(ctx: ApplyContext, c: CreateAccount) -> AccountInfo:
    email = c.email.strip()
    if (
        not email
        or values.text_problem(email, values.EMAIL_MAX_CHARS)
        or values.text_problem(c.display_name, values.DISPLAY_NAME_MAX_CHARS)
    ):
        raise Fail("invalid_command", reason="bad email or display name")
    ekey = email.casefold()
    db = ctx.db
    if db.execute("SELECT 1 FROM accounts WHERE email_key = ?", (ekey,)).fetchone():
        raise Fail("email_taken")
    if c.token_hash and token_exists(ctx.db, c.token_hash):
        raise Fail("token_exists")
    mac = hmac.new(ctx.secret, f"account:{ctx.index}".encode(), hashlib.sha256).digest()
    account_id = "dbid:" + b64(mac)[:35]
    ns = ctx.index
    db.execute(
        "INSERT INTO accounts (account_id, email_key, email, display_name, home_ns, "
        "created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (account_id, ekey, email, c.display_name, ns, ctx.now_ms),
    )
    db.execute("INSERT INTO namespaces (ns, owner) VALUES (?, ?)", (ns, account_id))
    if c.token_hash:
        db.execute(
            "INSERT INTO tokens (token_hash, account_id) VALUES (?, ?)",
            (c.token_hash, account_id),
        )
    if (why := quota.quota_problem(c.quota_bytes)) is not None:
        raise Fail("invalid_command", reason=why)
    quota.put_quota(db, account_id, c.quota_bytes)
    return AccountInfo(account_id, email, c.display_name, ns, ctx.now)


def token_exists(db: sqlite3.Connection, h: bytes) -> bool:
    return db.execute("SELECT 1 FROM tokens WHERE token_hash = ?", (h,)).fetchone() is not None


def add_token(ctx: ApplyContext, c: AddToken) -> None:
    if not c.token_hash:
        raise Fail("invalid_command", reason="empty token hash")
    if get_account(ctx.db, c.account_id) is None:
        raise Fail("account_not_found")
    if token_exists(ctx.db, c.token_hash):
        raise Fail("token_exists")
    ctx.db.execute(
        "INSERT INTO tokens (token_hash, account_id) VALUES (?, ?)",
        (c.token_hash, c.account_id),
    )
    return None


def revoke_token(ctx: ApplyContext, c: RevokeToken) -> bool:
    cur = ctx.db.execute("DELETE FROM tokens WHERE token_hash = ?", (c.token_hash,))
    if cur.rowcount == 0:  # an app's access token: its whole grant (`oauth`)
        return oauth.revoke_access(ctx.db, c.token_hash)
    return cur.rowcount > 0


def _account_of_email(ctx: ApplyContext, email: str) -> AccountInfo:
    acct = account_by_email(ctx.db, email)
    if acct is None:
        raise Fail("account_not_found")
    return acct


def revoke_tokens(ctx: ApplyContext, c: RevokeTokens) -> Count:
    acct = _account_of_email(ctx, c.email)
    cur = ctx.db.execute("DELETE FROM tokens WHERE account_id = ?", (acct.account_id,))
    return Count(cur.rowcount + oauth.forget_account(ctx.db, acct.account_id))  # + apps' grants


def set_disabled(ctx: ApplyContext, c: SetDisabled) -> AccountInfo:
    acct = _account_of_email(ctx, c.email)
    ctx.db.execute(
        "UPDATE accounts SET disabled = ? WHERE account_id = ?",
        (int(c.disabled), acct.account_id),
    )
    return msgspec.structs.replace(acct, disabled=c.disabled)


def remove_account(ctx: ApplyContext, c: RemoveAccount) -> AccountInfo:
    acct = _account_of_email(ctx, c.email)
    db, ns = ctx.db, acct.home_ns
    db.execute("DELETE FROM tokens WHERE account_id = ?", (acct.account_id,))
    db.execute("DELETE FROM accounts WHERE account_id = ?", (acct.account_id,))
    oauth.forget_account(db, acct.account_id)  # its apps' grants (issue 15)
    for table in ("account_auth", "web_sessions"):  # its password, browser sessions (webstate)
        db.execute(f"DELETE FROM {table} WHERE account_id = ?", (acct.account_id,))
    db.execute(
        "DELETE FROM upload_pieces WHERE session_id IN "
        "(SELECT session_id FROM upload_sessions WHERE ns = ?)",
        (ns,),
    )
    for table in ("upload_sessions", "ns_blocks", "journal", "revisions", "entries", "jobs"):
        db.execute(f"DELETE FROM {table} WHERE ns = ?", (ns,))
    db.execute("DELETE FROM namespaces WHERE ns = ?", (ns,))
    for table in ("share_members", "mounts"):  # its shared folders: memberships and mounts
        db.execute(f"DELETE FROM {table} WHERE account_id = ?", (acct.account_id,))
    db.execute("DELETE FROM shared_links WHERE owner = ?", (acct.account_id,))
    ctx.known_ns.discard(ns)
    return acct


# -- reads ----------------------------------------------------------------------------------


def _account(db: sqlite3.Connection, where: str, arg: Any) -> AccountInfo | None:
    row = db.execute(
        "SELECT account_id, email, display_name, home_ns, created_ms, disabled FROM accounts "
        f"WHERE {where}",
        (arg,),
    ).fetchone()
    if row is None:
        return None
    return AccountInfo(row[0], row[1], row[2], row[3], format_ts(row[4]), bool(row[5]))


def list_accounts(db: sqlite3.Connection) -> list[tuple[AccountInfo, int]]:
    """Every account, by email, with its number of tokens."""
    rows = db.execute(
        "SELECT a.account_id, a.email, a.display_name, a.home_ns, a.created_ms, a.disabled, "
        "(SELECT COUNT(*) FROM tokens t WHERE t.account_id = a.account_id) "
        "FROM accounts a ORDER BY a.email_key"
    ).fetchall()
    return [(AccountInfo(r[0], r[1], r[2], r[3], format_ts(r[4]), bool(r[5])), r[6]) for r in rows]


def get_account(db: sqlite3.Connection, account_id: str) -> AccountInfo | None:
    return _account(db, "account_id = ?", account_id)


def account_by_email(db: sqlite3.Connection, email: str) -> AccountInfo | None:
    return _account(db, "email_key = ?", email.strip().casefold())


def auth_token(db: sqlite3.Connection, token_hash: bytes) -> AccountInfo | None:
    row = db.execute("SELECT account_id FROM tokens WHERE token_hash = ?", (token_hash,)).fetchone()
    if row is None:  # an app's access token, with its scopes and expiry (issue 15)
        app_token = oauth.auth_access(db, token_hash)
        if app_token is None:
            return None
        account_id, scopes, expires_ms = app_token
        acct = get_account(db, account_id)
        if acct is None:
            return None
        return msgspec.structs.replace(acct, scopes=scopes, expires_ms=expires_ms)
    return get_account(db, row[0])
