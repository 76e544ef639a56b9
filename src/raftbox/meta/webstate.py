"""Passwords, administrators and browser sessions in the replicated state (issue 14, sign-in).

Tables (`schema.SCHEMA`): `account_auth(account_id, password_hash, admin)` — one row per account
that has a password or is an administrator (none: no password, not an administrator);
`web_sessions(session_hash, account_id, created_ms, expires_ms)` — SHA-256 of session tokens.
`RemoveAccount` (`accounts.remove_account`) removes both kinds of rows of the account.

Writes (`ApplyContext` in, a result or `Fail` out): `set_auth`, `start_session`, `end_session`
(commands in `webcmds`). Reads (a connection in, values out): `auth_of_email` (for sign-in: the
account, its password hash, its admin flag), `session` (a live session's account and admin
flag at a given wall-clock time), `is_admin`.

Expiry: a session row carries `expires_ms` (its start entry's stamp + ttl); a read compares it
with the reader's clock, so a member whose clock is ahead ends sessions early, never late by
more than the skew. Expired rows are deleted by the next `StartWebSession` (its stamp is the
deterministic "now"), so the table stays bounded by the live sessions.
"""

from __future__ import annotations

import sqlite3

from .accounts import account_by_email, get_account
from .commands import AccountInfo
from .context import ApplyContext
from .rows import Fail
from .webcmds import EndWebSession, SetAuth, StartWebSession

SESSIONS_PER_ACCOUNT_MAX = 100  # the oldest are ended beyond this
PASSWORD_HASH_MAX_CHARS = 512  # an argon2 encoded hash is ~100
SESSION_TTL_MS_MAX = 90 * 24 * 3600 * 1000


def set_auth(ctx: ApplyContext, c: SetAuth) -> AccountInfo:
    acct = account_by_email(ctx.db, c.email)
    if acct is None:
        raise Fail("account_not_found")
    if c.password_hash is not None and len(c.password_hash) > PASSWORD_HASH_MAX_CHARS:
        raise Fail("invalid_command", reason="password hash too long")
    db = ctx.db
    db.execute(
        "INSERT OR IGNORE INTO account_auth (account_id, password_hash, admin) VALUES (?, '', 0)",
        (acct.account_id,),
    )
    if c.password_hash is not None:
        db.execute(
            "UPDATE account_auth SET password_hash = ? WHERE account_id = ?",
            (c.password_hash, acct.account_id),
        )
        db.execute("DELETE FROM web_sessions WHERE account_id = ?", (acct.account_id,))
    if c.admin is not None:
        db.execute(
            "UPDATE account_auth SET admin = ? WHERE account_id = ?",
            (int(c.admin), acct.account_id),
        )
    return acct


def start_session(ctx: ApplyContext, c: StartWebSession) -> None:
    if len(c.session_hash) != 32 or not 0 < c.ttl_ms <= SESSION_TTL_MS_MAX:
        raise Fail("invalid_command", reason="bad session hash or ttl")
    db = ctx.db
    if get_account(db, c.account_id) is None:
        raise Fail("account_not_found")
    db.execute("DELETE FROM web_sessions WHERE expires_ms <= ?", (ctx.now_ms,))
    db.execute(
        "INSERT OR REPLACE INTO web_sessions (session_hash, account_id, created_ms, expires_ms) "
        "VALUES (?, ?, ?, ?)",
        (c.session_hash, c.account_id, ctx.now_ms, ctx.now_ms + c.ttl_ms),
    )
    db.execute(
        "DELETE FROM web_sessions WHERE account_id = ? AND session_hash NOT IN (SELECT "
        "session_hash FROM web_sessions WHERE account_id = ? "
        "ORDER BY created_ms DESC, session_hash LIMIT ?)",
        (c.account_id, c.account_id, SESSIONS_PER_ACCOUNT_MAX),
    )
    return None


def end_session(ctx: ApplyContext, c: EndWebSession) -> bool:
    cur = ctx.db.execute("DELETE FROM web_sessions WHERE session_hash = ?", (c.session_hash,))
    return cur.rowcount > 0


# -- reads ----------------------------------------------------------------------------------


def auth_of_email(db: sqlite3.Connection, email: str) -> tuple[AccountInfo, str, bool] | None:
    """(account, password hash or "", admin) of the account with this email, or None."""
    acct = account_by_email(db, email)
    if acct is None:
        return None
    row = db.execute(
        "SELECT password_hash, admin FROM account_auth WHERE account_id = ?", (acct.account_id,)
    ).fetchone()
    return (acct, "", False) if row is None else (acct, row[0], bool(row[1]))


def is_admin(db: sqlite3.Connection, account_id: str) -> bool:
    row = db.execute(
        "SELECT admin FROM account_auth WHERE account_id = ?", (account_id,)
    ).fetchone()
    return bool(row and row[0])


def session(
    db: sqlite3.Connection, session_hash: bytes, now_ms: int
) -> tuple[AccountInfo, bool] | None:
    """(account, admin) of the session with this hash if it exists and has not expired."""
    row = db.execute(
        "SELECT account_id, expires_ms FROM web_sessions WHERE session_hash = ?", (session_hash,)
    ).fetchone()
    if row is None or row[1] <= now_ms:
        return None
    acct = get_account(db, row[0])
    return None if acct is None else (acct, is_admin(db, acct.account_id))


def has_session(db: sqlite3.Connection, session_hash: bytes) -> bool:
    q = "SELECT 1 FROM web_sessions WHERE session_hash = ?"
    return db.execute(q, (session_hash,)).fetchone() is not None
