"""The batch routes of the Dropbox API, as async jobs: `files/copy_batch_v2`, `move_batch_v2`,
`delete_batch`, `create_folder_batch`, each with its `.../check` (`ContentRoutes` has
`upload_session/finish_batch` v1, built the same way).

Contract (the SDK's types, `dropbox.files`):

- The arguments are checked whole first: a field of the wrong type, a path that does not match
  the route's pattern, too many entries (1,000 relocations or deletions — `RelocationBatchArgBase`
  needs at least one —, 10,000 folders) is a 400 and nothing runs. A path the pattern lets
  through but the path rules refuse (`raftbox.meta.paths`: `malformed_path`), or an `ns:` path
  of another namespace, fails its own entry only (`RunJob.refused`).
- Launch: one `RunJob` wrapping one `WriteBatch` (`raftbox.meta.jobs`): every entry in order in
  ONE raft entry, each succeeding or failing on its own (a later entry sees what an earlier one
  did), the results kept under the job id in the same entry. The launch answers
  `{".tag": "async_job_id"}` as Dropbox does for these routes; `create_folder_batch` answers
  `complete` with the results at once (Dropbox does so for small batches) unless `force_async`.
- Check: the kept result, read linearizably on any member: `complete` with one entry per
  argument entry, in order (never `in_progress`: the job ran in its launch's raft entry). An
  id that is unknown, forgotten (`jobs.JOB_KEEP_MS`), another account's or another route's is
  `invalid_async_job_id` (Dropbox's `PollError`) — the same answer for all, so an id tells
  nothing about other accounts.
- Per-entry errors have Dropbox's batch shapes: `RelocationBatchErrorEntry` (a
  `relocation_error` holding the `RelocationError`, or `too_many_write_operations`),
  `DeleteError`, `CreateFolderEntryError` (`path`: a `WriteError`). Running out of an entry's
  positions (`context.MAX_POS`: a batch that would write too many items in one raft entry)
  fails the remaining entries with `too_many_write_operations` / `too_many_files`.
- `create_folder_batch`: a path given twice is created once, both entries answering the same
  folder (Dropbox: "duplicate path arguments in the batch are considered only once").
- `move_batch_v2`'s `allow_ownership_transfer` is accepted and changes nothing (every item of a
  namespace has one owner).

Shared folders: every entry resolves through `raftbox.api.spaces` as the single v2 routes do
(`files/create_folder_v2`, `delete_v2`, `move_v2`, `copy_v2`): an entry below a mount point runs
in the shared folder's namespace; a relocation between namespaces is one `CopyAcross` or
`MoveAcross` entry (the copy and the source's deletion in one savepoint); a viewer's write, or a
destination in a namespace the caller has not mounted, fails that entry with
`no_write_permission` before anything is proposed (the state machine knows no accounts: this
check is the only one, `raftbox.meta.jobs`); a source the caller cannot read is `not_found`,
exactly as one that does not exist. A mount point cannot be moved or copied inside a batch
(`cant_move_shared_folder` / `cant_copy_shared_folder`: `files/move_v2` moves it); deleting it,
or a folder above it, unmounts it first, as `files/delete_v2` does (the unmount is its own raft
entry, before the job's). The job is keyed by the caller's home namespace and its results are
kept with their paths in the caller's tree (`RunJob.shown`), so `.../check` shows them as the
caller sees them, with their `sharing_info`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta import jobs
from raftbox.meta import paths as P
from raftbox.meta.sharing import mount_of

from . import spaces, wire
from .args import WRITE_PATH, Args, path_arg, rpc_args
from .errors import ApiError, BadInput, Unavailable
from .metaclient import MetaClient
from .wire import json_response

RELOCATION_BATCH_MAX_ENTRIES = 1000
DELETE_BATCH_MAX_ENTRIES = 1000
CREATE_FOLDER_BATCH_MAX_PATHS = 10_000

log = logging.getLogger(__name__)


def new_job_id() -> str:
    """An unguessable async job id (192 random bits)."""
    return jobs.JOB_ID_PREFIX + secrets.token_urlsafe(24)


def async_job_id(a: Args) -> str:
    """The `async_job_id` of a `PollArg` (a non-empty string); an id no job can have (too long)
    is left for the lookup to refuse as `invalid_async_job_id`."""
    jid = a.str("async_job_id", required=True)
    if not jid:
        raise BadInput(a.route, "async_job_id: expected a non-empty string")
    return jid


async def launch_job(
    mc: MetaClient,
    who: Any,
    kind: str,
    batch: Any,
    refused: list[Any],
    shown: list[str] | None = None,
) -> str:
    """Run `batch` as job `kind` of `who`'s namespace; its id. Every entry of `batch` has been
    resolved through `spaces` with its write permission checked: the state machine runs the
    commands of any namespace a job carries (it knows no accounts)."""
    jid = new_job_id()
    cmd = C.RunJob(jid, who.namespace_id, kind, C.encode_command(batch), refused, shown or [])
    r = await mc.write(cmd)
    if isinstance(r, C.MetaError) and r.tags[:1] == ["not_initialized"]:
        raise Unavailable("the cluster is starting")
    if isinstance(r, C.MetaError) and r.tags[:1] == ["invalid_command"]:
        # Not the batch's outcome: the state machine refused the job itself (a bug of ours).
        raise RuntimeError(f"job {kind} refused: {r.extra.get('reason', r.summary)}")
    return jid


async def job_result(mc: MetaClient, who: Any, kind: str, jid: str) -> Any:
    """The kept result of job `jid` of `who` and `kind`, or `invalid_async_job_id`."""
    got = await mc.query("job", jid, who.namespace_id, kind)
    if got is None:
        raise ApiError(["invalid_async_job_id"])
    return C.typed_result(got[1])


def entries_json(results: Any, success: Callable[[Any], dict], failure: Callable[[Any], dict]):
    """One JSON entry per result. A whole-batch error (a `MetaError` instead of a list: the
    state machine refused the batch itself, a bug of ours) is `PollError.internal_error`."""
    results = whole_batch(results)
    return [failure(r) if isinstance(r, C.MetaError) else success(r) for r in results]


def whole_batch(results: Any) -> list:
    """`results` if it is a list of per-entry results, else `internal_error` (logged)."""
    if isinstance(results, list):
        return results
    log.error("a kept job result is not a batch result: %r", results)
    raise ApiError(["internal_error"])


# -- the per-entry error shapes ----------------------------------------------------------------


def _known(tags: list[str], members: set[str]) -> dict:
    """`union(tags)` when the outer tag is one of the error union's `members`, else
    `internal_error` (a failure that is ours). That tag is not a member: the SDKs read an
    unknown tag as the union's catch-all `other` — which they refuse to read when sent by name
    ("unexpected use of the catch-all tag")."""
    if tags and tags[0] in members:
        return wire.union(tags)
    return {".tag": "internal_error"}


_RELOCATION_ERROR = {
    "from_lookup",
    "from_write",
    "to",
    "cant_move_folder_into_itself",
    "too_many_files",
    "duplicated_or_nested_paths",
    "insufficient_quota",
    "internal_error",
    "cant_copy_shared_folder",
    "cant_move_shared_folder",
}
_DELETE_ERROR = {"path_lookup", "path_write", "too_many_write_operations", "too_many_files"}


def relocation_failure(e: C.MetaError) -> dict:
    if e.tags == ["too_many_write_operations"]:
        inner: dict = {".tag": "too_many_write_operations"}
    elif e.tags == ["internal_error"]:
        inner = {".tag": "internal_error"}
    elif e.tags and e.tags[0] in _RELOCATION_ERROR:
        inner = {".tag": "relocation_error", "relocation_error": wire.union(e.tags, e.extra)}
    else:
        inner = {".tag": "internal_error"}
    return {".tag": "failure", "failure": inner}


def delete_failure(e: C.MetaError) -> dict:
    return {".tag": "failure", "failure": _known(e.tags, _DELETE_ERROR)}


def create_folder_failure(e: C.MetaError) -> dict:
    tags = e.tags
    if tags == ["too_many_write_operations"]:
        tags = ["path", "too_many_write_operations"]
    return {".tag": "failure", "failure": _known(tags, {"path"})}


class BatchRoutes:
    """The batch routes and their checks (module docstring), over a `MetaClient`."""

    def __init__(self, mc: MetaClient) -> None:
        self.mc = mc

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("files/copy_batch_v2", "user", self.copy_batch),
            ("files/copy_batch/check_v2", "user", self.copy_batch_check),
            ("files/move_batch_v2", "user", self.move_batch),
            ("files/move_batch/check_v2", "user", self.move_batch_check),
            ("files/delete_batch", "user", self.delete_batch),
            ("files/delete_batch/check", "user", self.delete_batch_check),
            ("files/create_folder_batch", "user", self.create_folder_batch),
            ("files/create_folder_batch/check", "user", self.create_folder_batch_check),
        ]

    # -- copy and move ---------------------------------------------------------------------------
    async def _relocate(self, request: web.Request, who: Any, route: str, copy: bool) -> Any:
        a = await rpc_args(request, route)
        raw = _entries(a, "entries", 1, RELOCATION_BATCH_MAX_ENTRIES)
        autorename = a.bool("autorename")
        if not copy:
            a.bool("allow_ownership_transfer")  # one owner per namespace: nothing to transfer
        pairs = []
        for e in raw:
            ea = Args(route, e)
            pairs.append(
                (path_arg(ea, "from_path", WRITE_PATH), path_arg(ea, "to_path", WRITE_PATH))
            )
        cmds, refused, shown = [], [], []
        for src, dst in pairs:
            try:
                cmd, under = await self._relocation(who, src, dst, copy, autorename)
            except ApiError as e:
                refused.append(C.MetaError(e.tags))
                shown.append("")
                continue
            refused.append(None)
            shown.append(under)
            cmds.append(cmd)
        kind = "copy_batch" if copy else "move_batch"
        jid = await launch_job(self.mc, who, kind, C.WriteBatch(cmds), refused, shown)
        return json_response({".tag": "async_job_id", "async_job_id": jid})

    async def _relocation(
        self, who: Any, src_arg: str, dst_arg: str, copy: bool, autorename: bool
    ) -> tuple[Any, str]:
        """One copy or move entry, resolved as `files/copy_v2` / `move_v2` resolve theirs
        (`spaces`): (its command, the mount point its result is shown under, or "")."""
        src = await spaces.resolve_write(
            self.mc, who, src_arg, ["from_lookup"], write=not copy, deny=["from_write"]
        )
        dst = write_target(who, dst_arg, "to")
        if src.at_mount_point or spaces.mounts_under(who, src):
            # a mount point moves with files/move_v2 (MoveMount), not inside a batch
            raise ApiError(["cant_copy_shared_folder" if copy else "cant_move_shared_folder"])
        if src.ns != dst.ns:  # across namespaces: one entry copies and (a move) deletes
            across = C.CopyAcross if copy else C.MoveAcross
            cmd: Any = across(src.ns, src.path, dst.ns, dst.path, autorename)
        else:
            cmd = (C.Copy if copy else C.Move)(src.ns, src.path, dst.path, autorename)
        return cmd, dst.mount.display if dst.mount is not None else ""

    async def _relocate_check(self, request: web.Request, who: Any, route: str, kind: str) -> Any:
        a = await rpc_args(request, route)
        results = await job_result(self.mc, who, kind, async_job_id(a))
        out = entries_json(
            results,
            lambda m: {".tag": "success", "success": shown_json(who, m, tagged=True)},
            relocation_failure,
        )
        return json_response({".tag": "complete", "entries": out})

    async def copy_batch(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate(request, who, "files/copy_batch_v2", copy=True)

    async def move_batch(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate(request, who, "files/move_batch_v2", copy=False)

    async def copy_batch_check(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate_check(request, who, "files/copy_batch/check_v2", "copy_batch")

    async def move_batch_check(self, request: web.Request, who: Any) -> web.Response:
        return await self._relocate_check(request, who, "files/move_batch/check_v2", "move_batch")

    # -- delete --------------------------------------------------------------------------------
    async def delete_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/delete_batch")
        raw = _entries(a, "entries", 0, DELETE_BATCH_MAX_ENTRIES)
        parsed = []
        for e in raw:
            ea = Args(a.route, e)
            parsed.append((path_arg(ea, "path", WRITE_PATH), ea.rev("parent_rev")))
        cmds, refused, shown = [], [], []
        for path, parent_rev in parsed:
            try:
                t = await spaces.resolve_write(
                    self.mc, who, path, ["path_lookup"], deny=["path_write"]
                )
                if t.at_mount_point:  # deleting a mount point unmounts it, before the job
                    refused.append(await self._unmount(who, t.mount))
                    shown.append("")
                    continue
                for inner in spaces.mounts_under(who, t):  # so is deleting a folder above one
                    await self._unmount(who, inner)
            except ApiError as e:
                refused.append(C.MetaError(e.tags))
                shown.append("")
                continue
            refused.append(None)
            shown.append(t.mount.display if t.mount is not None else "")
            cmds.append(C.Delete(t.ns, t.path, parent_rev))
        jid = await launch_job(self.mc, who, "delete_batch", C.WriteBatch(cmds), refused, shown)
        return json_response({".tag": "async_job_id", "async_job_id": jid})

    async def _unmount(self, who: Any, mount: Any) -> Any:
        """Unmount `mount` of `who`; the mount point folder's metadata (the entry's result)."""
        m = await self.mc.query("resolve", who.namespace_id, mount.display)
        r = await self.mc.write(C.UnmountFolder(who.account_id, mount.ns))
        if isinstance(r, C.MetaError):
            raise ApiError(["path_lookup", "not_found"])  # gone meanwhile
        return m

    async def delete_batch_check(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/delete_batch/check")
        results = await job_result(self.mc, who, "delete_batch", async_job_id(a))
        out = entries_json(
            results,
            lambda m: {".tag": "success", "metadata": shown_json(who, m, tagged=True)},
            delete_failure,
        )
        return json_response({".tag": "complete", "entries": out})

    # -- create folders ------------------------------------------------------------------------
    async def create_folder_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/create_folder_batch")
        raw = _entries(a, "paths", 0, CREATE_FOLDER_BATCH_MAX_PATHS)
        autorename = a.bool("autorename")
        force_async = a.bool("force_async")
        paths = []
        for i, p in enumerate(raw):
            if not isinstance(p, str):
                raise BadInput(a.route, f"paths[{i}]: expected a string")
            if not WRITE_PATH.match(p):
                raise BadInput(a.route, f"paths[{i}]: {p[:200]!r} did not match pattern")
            paths.append(p)
        cmds, refused, shown = [], [], []
        for path in paths:
            try:
                t = write_target(who, path, "path")
            except ApiError as e:
                refused.append(C.MetaError(e.tags))
                shown.append("")
                continue
            refused.append(None)
            shown.append(t.mount.display if t.mount is not None else "")
            cmds.append(C.CreateFolder(t.ns, t.path, autorename))
        batch = C.WriteBatch(cmds)
        if force_async:
            jid = await launch_job(self.mc, who, "create_folder_batch", batch, refused, shown)
            return json_response({".tag": "async_job_id", "async_job_id": jid})
        results = jobs.merge_refused(refused, await self.mc.write(batch) if cmds else [])
        results = jobs.shown_under(shown, results)
        out = entries_json(results, lambda m: _folder_success(who, m), create_folder_failure)
        return json_response({".tag": "complete", "entries": out})

    async def create_folder_batch_check(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "files/create_folder_batch/check")
        results = await job_result(self.mc, who, "create_folder_batch", async_job_id(a))
        out = entries_json(results, lambda m: _folder_success(who, m), create_folder_failure)
        return json_response({".tag": "complete", "entries": out})


def write_target(who: Any, path: str, outer: str) -> spaces.Target:
    """Where a new item goes (`spaces.target`; a `WriteError` under `outer`): malformed, an id
    (a destination is a path), a viewer's shared folder or another namespace's
    (`no_write_permission`, as the state machine says). At a mount point: the home
    namespace's folder entry (a conflict there, or autorename)."""
    if path.startswith("id:"):
        raise ApiError([outer, "malformed_path"])
    try:
        t = spaces.target(who, path, [outer], write=True)
    except ApiError as e:
        if e.tags[-1:] == ["not_found"]:
            raise ApiError([outer, "no_write_permission"]) from None
        raise
    if t.at_mount_point:
        t = spaces.Target(who.namespace_id, t.mount.display)
    return t


def shown_json(who: Any, m: Any, tagged: bool) -> dict:
    """A kept job result (its paths already in `who`'s tree: `RunJob.shown`) with the
    sharing_info of the mounted shared folder it is in, if any (as the mounts are now)."""
    path = getattr(m, "path_display", "")
    mount = mount_of(who.mounts, P.make_key(path)) if path else None
    if mount is not None and mount.key == P.make_key(path):
        mount = None  # the mount point: the home namespace's folder entry
    return spaces.meta_json(who, m, tagged, mount)


def _folder_success(who: Any, m: Any) -> dict:
    return {".tag": "success", "metadata": shown_json(who, m, tagged=False)}


def _entries(a: Args, name: str, lo: int, hi: int) -> list:
    v = a.obj.get(name)
    if not isinstance(v, list):
        raise BadInput(a.route, f"{name}: expected a list")
    if len(v) < lo:
        raise BadInput(a.route, f"{name}: at least {lo} item(s)")
    if len(v) > hi:
        raise BadInput(a.route, f"{name}: at most {hi} items")
    return v
