"""Temporary links (`files/get_temporary_link`): what a link token says, how it is signed, and
the check that decides whether a link still gives its file. Pure but the connection and the
clock value it is given.

A token is b64url(HMAC-SHA256(key, body)[:16] + body) (`cursors.sign_cursor`), body = msgpack
`[kind, ns, file id, rev, expires_ms]` (kind "tl": the file; "tlr": one revision of it, for a
link asked for a "rev:" path, served as long as that revision is kept), key = HMAC-SHA256(cluster secret, `KEY_LABEL`): derived
from the secret held in the replicated state, so every member signs and checks the same links
(no per-process secret: a link made on one member works on all of them), and a link cannot be
taken for a cursor or a cursor for a link (another key). Knowing a path, an id or a rev gives
nothing: only the signature does, and only until `expires_ms`.

`open_link(db, secret, token, now_ms)` → the file's metadata and blocklist, or a `MetaError`:

- `["invalid_token"]`: not a token of this cluster (forged, tampered, garbled);
- `["not_found"]`: its file is gone: deleted, its account removed or disabled, or its content
  changed since the link was made — a link is to the file's content at that revision (an
  edit, a restore of other content, a different file put at the same path: refused), while a
  rename or a move (same file id, same content) keeps it working;
- `["expired"]`: `now_ms` is past `expires_ms` (the API answers 410 Gone, as Dropbox does).

`now_ms` is the caller's clock (the member serving the link): expiry is checked with the wall
clocks of the members, which must agree within a small part of `LINK_TTL_MS`.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3

from . import rows
from .commands import BlockRef, FileMeta, MetaError
from .cursors import CursorInvalid, open_signed_cursor, sign_cursor
from .rows import BLOCKS_DEC
from .schema import FILE

LINK_TTL_MS = 4 * 3600 * 1000  # Dropbox: a temporary link expires after four hours
KEY_LABEL = b"raftbox temporary link v1"
TOKEN_MAX_CHARS = 512  # ours are about 110


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, KEY_LABEL, hashlib.sha256).digest()


def make_token(
    secret: bytes, ns: int, id_: str, rev: str, expires_ms: int, *, pinned: bool = False
) -> str:
    """The token of a link to file `id_` at `rev` in namespace `ns`, valid until `expires_ms`;
    `pinned`: to that revision itself (a "rev:" path), not to the file."""
    return sign_cursor(_key(secret), ["tlr" if pinned else "tl", ns, id_, rev, expires_ms])


def signed_body(secret: bytes, token: str) -> list | None:
    """The body of a token this cluster signed (`[kind, ns, id, rev, expires_ms]`), else None:
    one HMAC, no lookup (a meta member refuses forgeries with this alone)."""
    if not secret or not isinstance(token, str) or len(token) > TOKEN_MAX_CHARS:
        return None
    try:
        body = open_signed_cursor(_key(secret), token)
    except CursorInvalid:
        return None
    if (
        not isinstance(body, list)
        or len(body) != 5
        or body[0] not in ("tl", "tlr")
        or not isinstance(body[1], int)
        or not all(isinstance(x, str) for x in body[2:4])
        or not isinstance(body[4], int)
    ):
        return None  # signed by us, so only a bug gets here
    return body


def open_link(
    db: sqlite3.Connection, secret: bytes, token: str, now_ms: int
) -> tuple[FileMeta, list[BlockRef]] | MetaError:
    """The file a link token gives now, or why not (module docstring)."""
    body = signed_body(secret, token)
    if body is None:
        return MetaError(["invalid_token"])
    kind, ns, id_, rev, expires_ms = body
    if now_ms >= expires_ms:
        return MetaError(["expired"])
    owner = db.execute(
        "SELECT a.disabled FROM namespaces n JOIN accounts a ON a.account_id = n.owner "
        "WHERE n.ns = ?",
        (ns,),
    ).fetchone()
    if owner is None or owner[0]:
        return MetaError(["not_found"])
    if kind == "tlr":  # a revision: served while it is kept
        r = rows.revision(db, ns, rev)
        if r is None or r.id != id_:
            return MetaError(["not_found"])
        return rows.rev_meta(r), BLOCKS_DEC.decode(r.blocks)
    e = rows.live_by_id(db, ns, id_)
    if e is None or e.kind != FILE:
        return MetaError(["not_found"])
    cur = rows.revision(db, ns, e.rev)
    if e.rev != rev:
        then = rows.revision(db, ns, rev)
        if then is None or (then.content_hash, then.size, then.symlink) != (
            cur.content_hash,
            cur.size,
            cur.symlink,
        ):
            return MetaError(["not_found"])
    return rows.meta_of(db, ns, e), BLOCKS_DEC.decode(cur.blocks)
