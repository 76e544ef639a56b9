"""Cursors: the opaque strings that carry a listing's `commands.CursorState` to the client and
back, signed so that they cannot be forged.

A cursor is b64url(HMAC-SHA256(secret, body)[:16] + body), body = msgpack of the state, secret
= the cluster secret held in the replicated state. A long-poll takes a cursor with no other
credential, so the signature is what makes it safe to accept: a notify process, which holds
the secret but no `MetaStore`, opens cursors with `open_signed_cursor` alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import msgspec


class CursorInvalid(Exception):
    """A cursor this cluster did not sign (or undecodable, or before the secret exists)."""


def sign_cursor(secret: bytes, state: Any) -> str:
    """The cursor carrying `state` (any msgpack-encodable value), signed with `secret`."""
    body = msgspec.msgpack.encode(state)
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def open_signed_cursor(secret: bytes, cursor: str) -> Any:
    """The state a cursor signed with `secret` carries; `CursorInvalid` if it was not signed so.
    (A function, so that a notify process, which holds the secret but no MetaStore, can check
    the long-poll cursors it is given.)"""
    if not secret:
        raise CursorInvalid("no cluster secret")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise CursorInvalid("undecodable") from None
    if len(raw) < 17:
        raise CursorInvalid("too short")
    mac, body = raw[:16], raw[16:]
    want = hmac.new(secret, body, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, want):
        raise CursorInvalid("bad signature")
    try:
        return msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        raise CursorInvalid("bad body") from None
