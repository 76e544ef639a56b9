"""Async jobs: a command run in one raft entry whose result is kept, replicated, under an
unguessable job id, so that any member answers its `.../check` — also after a leader change.

What
----
Dropbox runs its batch routes (`files/copy_batch_v2`, `move_batch_v2`, `delete_batch`,
`create_folder_batch`, `upload_session/finish_batch`) as async jobs: the launch answers an
`async_job_id`, and the client polls `.../check` until the job is `complete`. Here a job is one
state machine command:

- `RunJob(job_id, ns, kind, payload)` runs the command `payload` (an encoded `MetaCommand`,
  normally a batch: `WriteBatch`, `FinishBatch`) exactly as if it had been proposed alone, then
  stores its result under `job_id`, in the same raft entry; `RunJob` answers that result too.
  So a job is complete the moment its launch is committed: `check` never has to answer
  `in_progress`, and there is no job runner to own, hand over or lose at a leader change.
- `WriteBatch(entries)`: folder creations, deletions, moves and copies, each under its own
  savepoint (`context.atomic`): an entry fails on its own (its `MetaError` in its slot) and
  the others go on, in order, so a later entry sees what an earlier one did.

Contract
--------
- The job id is the caller's (the api layer draws 192 random bits: `JOB_ID_PREFIX` + token);
  it is the only credential of a job, next to the namespace. An id already in use, over
  `JOB_ID_MAX_CHARS`, a `kind` over `JOB_KIND_MAX_CHARS`, an unknown namespace, a payload that is
  not a command or is itself a `RunJob`: `invalid_command`, nothing run.
- A job is keyed by the caller's home namespace `ns`, and its payload's commands may write
  other namespaces (batch entries inside mounted shared folders: `CopyAcross`, `MoveAcross`,
  or any entry whose `ns` is a shared folder's). The state machine knows no accounts, so it
  cannot tell whether the caller may write them: only the API proposes `RunJob`, after
  resolving every entry through `raftbox.api.spaces` (a viewer's write and a namespace the
  caller has not mounted are refused there, in the entry's `refused` slot). `shown` puts each
  successful result's paths under the mount point it ran in, so the kept result reads in the
  caller's tree (only that account can read it back: it is keyed by its home namespace).
- `job_result(db, job_id, ns, kind)`: (when it ran, its result), or None — for an unknown id,
  for a job of another namespace and for a job of another kind alike (a caller cannot tell a job of
  another account from no job: Dropbox's `invalid_async_job_id`).
- Bounds: a job is kept at least `JOB_KEEP_MS` (24 h) after it ran, and forgotten by the first
  `RunJob` after that (at most `JOB_SWEEP_MAX` per run); a namespace keeps its newest
  `JOBS_PER_NS_MAX` jobs (older ones are forgotten when a new one runs). Each job's result is
  bounded by its batch (`context.MAX_BATCH_ENTRIES`, and the routes' own limits).
- `RemoveAccount` forgets the namespace's jobs with the rest of its rows.
- Deterministic: time is the entry's stamp, order the raft index; no clock, no randomness.

Why one command
---------------
The routes bound their batches (1,000 relocations or deletions, 10,000 folders, 1,000 finishes)
and an entry's positions (`context.MAX_POS`): what exceeds them fails entry by entry with
Dropbox's `too_many_write_operations` / `too_many_files`. Within those bounds one raft entry
is cheap enough, and it makes the job atomic with its record: no half-run job to resume.

Other async jobs (sharing) can use the same command: wrap the work in `RunJob` with its own
`kind` and read it back with `job_result`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from . import paths, sharing, writes
from .commands import (
    Copy,
    CopyAcross,
    CreateFolder,
    Delete,
    FolderMeta,
    MetaError,
    Move,
    MoveAcross,
    RunJob,
    WriteBatch,
    decode_command,
    typed_result,
)
from .context import MAX_BATCH_ENTRIES, ApplyContext, atomic
from .rows import ns_exists

JOB_ID_PREFIX = "dbjid:"
JOB_ID_MAX_CHARS = 100
JOB_KIND_MAX_CHARS = 40
JOB_KEEP_MS = 24 * 3600 * 1000
JOBS_PER_NS_MAX = 100
JOB_SWEEP_MAX = 1000

_ENC = msgspec.msgpack.Encoder()
# What a `refused` slot may hold: the entry's error, or a folder the API dealt with before the
# job (a mount point that a `delete_batch` entry unmounted).
_DONE = (MetaError, FolderMeta)


def move_across(ctx: ApplyContext, e: MoveAcross) -> Any:
    """`MoveAcross`: the copy into `to_ns`, then the source's deletion (a failure of either
    rolls both back: the entry's savepoint)."""
    m = sharing.copy_across(
        ctx, CopyAcross(e.from_ns, e.from_path, e.to_ns, e.to_path, e.autorename)
    )
    writes.delete(ctx, Delete(e.from_ns, e.from_path))
    return m


# The write of each kind of WriteBatch entry, and the tag of its too-many failure.
_ENTRY_WRITES: dict[type, tuple[Callable[[ApplyContext, Any], Any], str]] = {
    CreateFolder: (writes.create_folder, "too_many_write_operations"),
    Delete: (writes.delete, "too_many_files"),
    Move: (writes.relocate, "too_many_files"),
    Copy: (writes.relocate, "too_many_files"),
    CopyAcross: (sharing.copy_across, "too_many_files"),
    MoveAcross: (move_across, "too_many_files"),
}


def write_batch(ctx: ApplyContext, c: WriteBatch) -> list | MetaError:
    """Every entry in order, each under its own savepoint: a list of results and errors.

    A `CreateFolder` of a path that an earlier entry of the batch created answers that entry's
    result again (Dropbox: "duplicate path arguments in the batch are considered only once"),
    instead of a conflict — or, with autorename, a second folder."""
    if len(c.entries) > MAX_BATCH_ENTRIES:
        return MetaError(["invalid_command"], {"reason": "batch too large"})
    out = []
    made: dict[tuple[int, str], Any] = {}  # (ns, key) -> the folder this batch created there
    for e in c.entries:
        key = _folder_key(e) if isinstance(e, CreateFolder) else None
        if key is not None and key in made:
            out.append(made[key])
            continue
        fn, too_many = _ENTRY_WRITES[type(e)]
        r = atomic(ctx, lambda e=e, fn=fn: fn(ctx, e), too_many=too_many)
        if key is not None and not isinstance(r, MetaError):
            made[key] = r
        out.append(r)
    return out


def _folder_key(e: CreateFolder) -> tuple[int, str] | None:
    """The key a folder creation names (its namespace and path key), None if malformed."""
    try:
        ref = paths.parse_ref(e.path, allow_id=False)
    except paths.MalformedPath:
        return None
    if ref.ns is not None and ref.ns != e.ns:
        return None
    return e.ns, ref.path.key


def run_job(ctx: ApplyContext, c: RunJob, dispatch: Callable[[Any], Any]) -> Any:
    """Run `c.payload` through `dispatch` (the store's command dispatcher) and keep its result
    under `c.job_id` (module docstring)."""
    why = _job_problem(ctx, c)
    if why is not None:
        return MetaError(["invalid_command"], {"reason": why})
    try:
        inner = decode_command(c.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return MetaError(["invalid_command"], {"reason": f"job payload: {e}"})
    if isinstance(inner, RunJob):
        return MetaError(["invalid_command"], {"reason": "a job cannot run a job"})
    result = shown_under(c.shown, merge_refused(c.refused, dispatch(inner)))
    _sweep(ctx, c.ns)
    ctx.db.execute(
        "INSERT INTO jobs (job_id, ns, kind, idx, done_ms, result) VALUES (?, ?, ?, ?, ?, ?)",
        (c.job_id, c.ns, c.kind, ctx.index, ctx.now_ms, _ENC.encode(result)),
    )
    return result


def merge_refused(refused: list[Any], results: Any) -> Any:
    """The results of a whole batch: `refused`'s errors in their slots, the inner batch's
    `results` in order in the other (None) slots. A whole-batch error stays as it is."""
    if not refused or not isinstance(results, list):
        return results
    it = iter(results)
    out = [typed_result(r) if r is not None else next(it, None) for r in refused]
    return out + list(it)


def shown_under(shown: list[str], results: Any) -> Any:
    """Each successful result of a whole batch with its paths under `shown`'s mount point
    path in the caller's tree (an entry run inside a mounted shared folder); "" or no `shown`:
    as it is. Errors and a whole-batch error stay as they are."""
    if not shown or not isinstance(results, list):
        return results
    out = []
    for r, under in zip(results, shown, strict=False):
        if under and hasattr(r, "path_display"):
            display = under + r.path_display
            r = msgspec.structs.replace(r, path_display=display, path_lower=display.lower())
        out.append(r)
    return out + results[len(out) :]


def _job_problem(ctx: ApplyContext, c: RunJob) -> str | None:
    if not c.job_id or len(c.job_id) > JOB_ID_MAX_CHARS:
        return f"a job id has 1 to {JOB_ID_MAX_CHARS} characters"
    if not c.kind or len(c.kind) > JOB_KIND_MAX_CHARS:
        return f"a job kind has 1 to {JOB_KIND_MAX_CHARS} characters"
    if not ns_exists(ctx.db, c.ns):
        return f"unknown namespace {c.ns}"
    if ctx.db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (c.job_id,)).fetchone():
        return "job id already in use"
    if any(r is not None and not isinstance(typed_result(r), _DONE) for r in c.refused):
        return "a refused entry is an error, a folder done before the job, or None"
    if c.shown and (len(c.shown) != len(c.refused) or not all(_mount_path(s) for s in c.shown)):
        return "shown: one mount point path (or '') per entry of the whole batch"
    return None


def _mount_path(s: Any) -> bool:
    return isinstance(s, str) and (s == "" or (s.startswith("/") and len(s) <= 4096))


def _sweep(ctx: ApplyContext, ns: int) -> None:
    """Forget jobs past `JOB_KEEP_MS` (a bounded number) and all but the newest
    `JOBS_PER_NS_MAX` - 1 of `ns` (room for the one being stored)."""
    db = ctx.db
    db.execute(
        "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE done_ms <= ? "
        "ORDER BY done_ms, job_id LIMIT ?)",
        (ctx.now_ms - JOB_KEEP_MS, JOB_SWEEP_MAX),
    )
    db.execute(
        "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE ns = ? "
        "ORDER BY idx DESC, job_id DESC LIMIT -1 OFFSET ?)",
        (ns, JOBS_PER_NS_MAX - 1),
    )


# -- reads ----------------------------------------------------------------------------------


def job_result(db: Any, job_id: str, ns: int, kind: str) -> tuple[int, Any] | None:
    """(done_ms, typed result) of job `job_id` of namespace `ns` and this `kind`; None if there
    is no such job (unknown, forgotten, another namespace's or another kind's: all alike)."""
    if not isinstance(job_id, str) or len(job_id) > JOB_ID_MAX_CHARS:
        return None
    row = db.execute(
        "SELECT done_ms, result FROM jobs WHERE job_id = ? AND ns = ? AND kind = ?",
        (job_id, ns, kind),
    ).fetchone()
    if row is None:
        return None
    return row[0], typed_result(msgspec.msgpack.decode(row[1]))


__all__ = [
    "JOBS_PER_NS_MAX",
    "JOB_ID_PREFIX",
    "JOB_KEEP_MS",
    "job_result",
    "merge_refused",
    "run_job",
    "write_batch",
]
