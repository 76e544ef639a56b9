"""Space usage and quotas: what an account stores, what it may store, and the guard that refuses
a write past it (`users/get_space_usage`, `raftbox user quota`).

What "used" means (Dropbox's `SpaceUsage.used`): the bytes of the account's CURRENT files —
the size of the current revision of every live file in the namespaces the account owns
(`namespaces.owner`). Old revisions and deleted files are not counted (Dropbox does not count
them either: version history is free), folders weigh nothing, and two files with the same
content count twice (the quota is about what the user stores, not about the block store, which
keeps one copy).

The counter (`ns_usage`, defined with its triggers in `schema`), replicated state kept by the
state machine itself: SQLite triggers on
`entries` add the size of a file's current revision when a live file row appears (insert, or an
update of `kind`/`rev`) and take it off when it goes (delete, an update to a folder or to
"deleted", the row an `INSERT OR REPLACE` replaces — a BEFORE INSERT trigger, since SQLite fires
no delete trigger for a REPLACE unless `recursive_triggers` is on, which the store never turns
on). So every write of every command — commit, batches, upload sessions, delete, move, copy,
restore, account removal, and any command added later — keeps it right without a scan, on every
replica alike (triggers are deterministic). A namespace's row is made with the namespace (a
trigger on `namespaces`) and dropped with it. A store made before this module existed gets its
counters computed once, when opened (`schema.migrate`: the same sum on every replica).

Quotas (`account_quota`): bytes per account; no row means no quota. `SetQuota` sets or clears
it (the operator: `raftbox/admin/set_quota`); `CreateAccount.quota_bytes` gives a new account
its quota in the same entry (`raftbox serve|up --default-quota`). With no quota the API reports
`UNLIMITED_ALLOCATION_BYTES` as the allocation.

The guard (`guarded`): a command that may make an account store more (a commit — upload,
upload session finish, each item of a commit batch or finish batch —, a copy, a restore) runs
inside it. If the account has a quota, its usage is read before and after the command; a command
that grew the usage past the quota fails with the route's `insufficient_space` error and, like
any failed command, is rolled back by its savepoint: nothing half written. A command that does
not grow it (a move, a delete, an overwrite with a smaller file) is never refused, so an account
over its quota (the operator lowered it) can always clean up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .commands import SetQuota, SpaceUsage
from .context import ApplyContext
from .rows import Fail

UNLIMITED_ALLOCATION_BYTES = 2**50  # 1 PiB: what `allocated` says for an account with no quota
QUOTA_MAX_BYTES = 2**62  # a quota must fit in SQLite's INTEGER with room for sums

# -- reads ----------------------------------------------------------------------------------


def account_used(db: sqlite3.Connection, account_id: str) -> int:
    """The bytes of the current files of every namespace `account_id` owns."""
    row = db.execute(
        "SELECT COALESCE(SUM(u.used_bytes), 0) FROM namespaces n JOIN ns_usage u ON u.ns = n.ns "
        "WHERE n.owner = ?",
        (account_id,),
    ).fetchone()
    return int(row[0])


def account_quota(db: sqlite3.Connection, account_id: str) -> int | None:
    row = db.execute(
        "SELECT quota_bytes FROM account_quota WHERE account_id = ?", (account_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def space_usage(db: sqlite3.Connection, account_id: str) -> SpaceUsage | None:
    """The account's usage and quota; None if there is no such account."""
    row = db.execute("SELECT email FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
    if row is None:
        return None
    return SpaceUsage(
        account_id, row[0], account_used(db, account_id), account_quota(db, account_id)
    )


# -- writes ---------------------------------------------------------------------------------


def quota_problem(quota_bytes: int | None) -> str | None:
    """Why `quota_bytes` cannot be a quota, or None (None itself: no quota)."""
    if quota_bytes is None:
        return None
    if isinstance(quota_bytes, bool) or not isinstance(quota_bytes, int):
        return "a quota is a number of bytes"
    if not 0 <= quota_bytes <= QUOTA_MAX_BYTES:
        return f"a quota is between 0 and {QUOTA_MAX_BYTES} bytes"
    return None


def put_quota(db: sqlite3.Connection, account_id: str, quota_bytes: int | None) -> None:
    if quota_bytes is None:
        db.execute("DELETE FROM account_quota WHERE account_id = ?", (account_id,))
    else:
        db.execute(
            "INSERT OR REPLACE INTO account_quota (account_id, quota_bytes) VALUES (?, ?)",
            (account_id, quota_bytes),
        )


def set_quota(ctx: ApplyContext, c: SetQuota) -> SpaceUsage:
    """`SetQuota`: set (or clear, None) the quota of the account with this email."""
    why = quota_problem(c.quota_bytes)
    if why is not None:
        raise Fail("invalid_command", reason=why)
    row = ctx.db.execute(
        "SELECT account_id FROM accounts WHERE email_key = ?", (c.email.strip().casefold(),)
    ).fetchone()
    if row is None:
        raise Fail("account_not_found")
    put_quota(ctx.db, row[0], c.quota_bytes)
    usage = space_usage(ctx.db, row[0])
    assert usage is not None
    return usage


def guarded(ctx: ApplyContext, ns: int, tags: list[str], fn: Callable[[], Any]) -> Any:
    """Run `fn` (a write into namespace `ns`); fail with `tags` if it grew the owner's usage
    past the owner's quota (module docstring). The caller's savepoint undoes `fn`'s writes."""
    memo = ctx.batch  # a CommitBatch changes no quota and no owner: one read per namespace
    if memo is not None and ns in memo.quota:
        row = memo.quota[ns]
    else:
        row = ctx.db.execute(
            "SELECT q.account_id, q.quota_bytes FROM namespaces n "
            "JOIN account_quota q ON q.account_id = n.owner WHERE n.ns = ?",
            (ns,),
        ).fetchone()
        if memo is not None:
            memo.quota[ns] = row
    if row is None:  # no such namespace (fn fails on its own) or no quota
        return fn()
    owner, quota = row
    before = account_used(ctx.db, owner)
    result = fn()
    after = account_used(ctx.db, owner)
    if after > before and after > quota:
        raise Fail(*tags)
    return result


_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
    "p": 2**50,
    "pib": 2**50,
    "pb": 10**15,
}


def parse_quota(s: str) -> int | None:
    """A quota as an operator writes it: "none" (no quota), or a number of bytes with an
    optional unit — K/M/G/T/P and KiB… are powers of 1024, KB/MB/GB/TB/PB powers of 1000
    (as `dd` reads them); "1.5G" is allowed. `ValueError` says what is wrong."""
    t = s.strip().lower().replace(" ", "")
    if t in ("none", "unlimited"):
        return None
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"{s!r}: a size like 500M, 10G, 2TB, or none")
    try:
        n = float(num) if "." in num else int(num)
    except ValueError:
        raise ValueError(f"{s!r}: a size like 500M, 10G, 2TB, or none") from None
    out = int(n * _UNITS[unit])
    if why := quota_problem(out):
        raise ValueError(f"{s!r}: {why}")
    return out
