"""The state machine commands of web sign-in (passwords, administrators, browser sessions). Pure.

Kept apart from `commands` (which includes them in its `MetaCommand` union) so that the
vocabulary of the web feature is in one place; their effects are in `raftbox.meta.webstate`.

| command          | result                                                       |
| ---------------- | ------------------------------------------------------------ |
| SetAuth          | AccountInfo (the account changed), or `account_not_found`    |
| StartWebSession  | None, or `account_not_found` / `invalid_command`             |
| EndWebSession    | bool (True if the session existed)                           |

Only hashes cross the log: an argon2 hash of a password (computed by the member that proposes,
never by the state machine: apply must be cheap and deterministic), the SHA-256 of a session
token. A session's expiry is its start entry's stamp plus `ttl_ms`, so every replica agrees.
"""

from __future__ import annotations

import msgspec


class _WebCmd(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=False):
    pass


class SetAuth(_WebCmd, tag="web_auth"):
    """Set the password hash (None: unchanged; "": no password, sign-in impossible) and/or the
    administrator flag (None: unchanged) of the account with this email. A new password ends
    every browser session of the account."""

    email: str
    password_hash: str | None = None
    admin: bool | None = None


class StartWebSession(_WebCmd, tag="web_session"):
    """A browser session of `account_id`, known by the SHA-256 of its token, valid `ttl_ms`
    after this entry's stamp. Also forgets every session that has expired by then, and the
    account's oldest ones beyond `webstate.SESSIONS_PER_ACCOUNT_MAX`."""

    session_hash: bytes
    account_id: str
    ttl_ms: int


class EndWebSession(_WebCmd, tag="web_logout"):
    session_hash: bytes
