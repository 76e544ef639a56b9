"""The `sharing/*` routes for shared folders, and `users/get_account(_batch)` to show members.

Routes (`SharingRoutes(meta, mc).routes()`, registered on a meta member's `ApiServer`; auth
"user"). Arguments, results and errors are the SDK's (`dropbox/sharing.py`, `users.py`):

| route                                   | result                                          |
| --------------------------------------- | ----------------------------------------------- |
| sharing/share_folder                    | ShareFolderLaunch: complete or async_job_id     |
| sharing/check_share_job_status          | ShareFolderJobStatus                            |
| sharing/add_folder_member               | null                                            |
| sharing/list_folder_members(/continue)  | SharedFolderMembers                             |
| sharing/update_folder_member            | MemberAccessLevelResult                         |
| sharing/remove_folder_member            | async_job_id (check_remove_member_job_status)   |
| sharing/list_folders(/continue)         | ListFoldersResult (mounted folders)             |
| sharing/list_mountable_folders(/continue)| ListFoldersResult (not mounted, invitations)   |
| sharing/mount_folder                    | SharedFolderMetadata                            |
| sharing/unmount_folder                  | null                                            |
| sharing/relinquish_folder_membership    | LaunchEmptyResult (complete)                    |
| sharing/unshare_folder                  | LaunchEmptyResult (async_job_id)                |
| sharing/check_job_status                | JobStatus                                       |
| sharing/get_folder_metadata             | SharedFolderMetadata                            |
| users/get_account, get_account_batch    | BasicAccount (itself, or a co-member)           |

Each change is one state machine command (`raftbox.meta.sharing`). An "async" job is the
same single command, run before the answer; its outcome is kept in the replicated state
(`share_jobs`) so that any member answers its check, whichever the client asks.

Visibility: a shared folder id the caller is not a member (or invitee) of answers
`access_error/invalid_id`, as an id that does not exist; `users/get_account` answers
`no_account` for any account that is not the caller or a member of a folder it shares.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta import sharing as S
from raftbox.meta.rows import format_ts
from raftbox.meta.service import CursorInvalid, MetaService

from . import spaces
from .args import WRITE_PATH, Args, path_arg, rpc_args
from .errors import ApiError, BadInput
from .wire import json_response, union

LIST_MAX = 1000  # ListFoldersArgs.limit's bound
MEMBERS_PAGE_MAX = 1000
ADD_MEMBERS_MAX = 100  # members in one add_folder_member call


def _raise(r: Any) -> Any:
    if isinstance(r, C.MetaError):
        raise ApiError(r.tags, r.extra)
    return r


def name_json(display: str, email: str) -> dict:
    name = display or email.split("@")[0]
    given, _, surname = name.partition(" ")
    return {
        "given_name": given,
        "surname": surname,
        "familiar_name": given,
        "display_name": name,
        "abbreviated_name": "".join(p[0] for p in name.split() if p)[:2].upper() or "RB",
    }


def folder_json(r: S.ShareRow) -> dict:
    """SharedFolderMetadata of `r` for the account it was read for."""
    d: dict = {
        "access_type": {".tag": r.access},
        "is_inside_team_folder": False,
        "is_team_folder": False,
        "owner_display_names": [r.owner_name] if r.owner_name else [],
        "name": r.name,
        "policy": {
            "member_policy": {".tag": "anyone"},
            "resolved_member_policy": {".tag": "anyone"},
            "acl_update_policy": {".tag": "owner"},
            "shared_link_policy": {".tag": "anyone"},
            "viewer_info_policy": {".tag": "enabled"},
        },
        "preview_url": f"https://raftbox.invalid/sharing/{r.ns}",
        "shared_folder_id": str(r.ns),
        "time_invited": format_ts(r.invited_ms),
        "access_inheritance": {".tag": "inherit"},
    }
    if r.mount_display is not None:
        d["path_display"] = r.mount_display
        d["path_lower"] = r.mount_display.lower()
    return d


class SharingRoutes:
    def __init__(self, meta: MetaService, mc: Any) -> None:
        self.meta = meta
        self.mc = mc

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("sharing/share_folder", "user", self.share_folder),
            ("sharing/check_share_job_status", "user", self.check_share_job_status),
            ("sharing/add_folder_member", "user", self.add_folder_member),
            ("sharing/list_folder_members", "user", self.list_folder_members),
            ("sharing/list_folder_members/continue", "user", self.list_folder_members_continue),
            ("sharing/update_folder_member", "user", self.update_folder_member),
            ("sharing/remove_folder_member", "user", self.remove_folder_member),
            ("sharing/check_remove_member_job_status", "user", self.check_remove_member_job),
            ("sharing/check_job_status", "user", self.check_job_status),
            ("sharing/list_folders", "user", self.list_folders),
            ("sharing/list_folders/continue", "user", self.list_folders_continue),
            ("sharing/list_mountable_folders", "user", self.list_mountable),
            ("sharing/list_mountable_folders/continue", "user", self.list_mountable_continue),
            ("sharing/mount_folder", "user", self.mount_folder),
            ("sharing/unmount_folder", "user", self.unmount_folder),
            ("sharing/relinquish_folder_membership", "user", self.relinquish),
            ("sharing/unshare_folder", "user", self.unshare_folder),
            ("sharing/get_folder_metadata", "user", self.get_folder_metadata),
            ("users/get_account", "user", self.get_account),
            ("users/get_account_batch", "user", self.get_account_batch),
        ]

    # -- helpers -------------------------------------------------------------------------------
    async def _row(self, who: Any, ns: int, prefix: tuple = ("access_error",)) -> S.ShareRow:
        """The folder as `who` sees it; not a member (or invitee): `invalid_id`, as a folder
        that does not exist (under `prefix`: the route's error union)."""
        r = await self.meta.read(lambda s: S.share_row(s.db, ns, who.account_id, who.email))
        if r is None:
            raise ApiError([*prefix, "invalid_id"])
        return r

    @staticmethod
    def _sfid(a: Args, prefix: list[str] | None = None) -> int:
        v = a.str("shared_folder_id", required=True)
        if not v or len(v) > 40:
            raise BadInput(a.route, "shared_folder_id: did not match pattern '[-_0-9a-zA-Z:]+'")
        if not v.isdigit() or not v.isascii():  # not one of ours: as if it did not exist
            raise ApiError(
                ["access_error", "invalid_id"] if prefix is None else [*prefix, "invalid_id"]
            )
        return int(v)

    @staticmethod
    def _selector(a: Args, v: Any) -> C.ShareMember:
        """A MemberSelector ({".tag": "email"|"dropbox_id", …}) as a `ShareMember`."""
        if not isinstance(v, dict) or v.get(".tag") not in ("email", "dropbox_id"):
            raise BadInput(a.route, "member: expected a MemberSelector (email or dropbox_id)")
        tag = v[".tag"]
        val = v.get(tag)
        if not isinstance(val, str) or not val or len(val) > 254:
            raise BadInput(a.route, f"member.{tag}: expected a string")
        if tag == "email":
            return C.ShareMember("", val)
        return C.ShareMember(val, "")

    @staticmethod
    def _access(a: Args, v: Any, default: str = "viewer") -> str:
        tag = v.get(".tag") if isinstance(v, dict) else v if v is not None else default
        if tag not in ("editor", "viewer", "viewer_no_comment"):
            raise BadInput(a.route, f"access_level: {tag!r} cannot be given (editor or viewer)")
        return "viewer" if tag == "viewer_no_comment" else tag

    async def _job(self, who: Any, a: Args) -> tuple[int, str]:
        job_id = a.str("async_job_id", required=True)
        if not job_id or len(job_id) > 100:
            raise BadInput(a.route, "async_job_id: expected a job id")
        r = await self.meta.read(lambda s: S.job(s.db, job_id, who.account_id))
        if r is None:
            raise ApiError(["invalid_async_job_id"])
        return r

    @staticmethod
    def _new_job_id() -> str:
        return "dbjid:" + secrets.token_urlsafe(24)

    # -- share, jobs -----------------------------------------------------------------------
    async def share_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/share_folder")
        path = path_arg(a, "path", WRITE_PATH)
        force_async = a.bool("force_async")
        t = await spaces.resolve_write(self.mc, who, path, ["bad_path"], write=False)
        if t.at_mount_point:
            row = await self._row(who, t.mount.ns)
            raise ApiError(["bad_path", "already_shared"], folder_json(row))
        if t.mount is not None:
            raise ApiError(["bad_path", "inside_shared_folder"])
        if t.path == "":
            raise ApiError(["bad_path", "invalid_path"])
        job_id = self._new_job_id() if force_async else ""
        r = _raise(await self.meta.write(C.ShareFolder(who.account_id, t.path, job_id)))
        if force_async:
            return json_response({".tag": "async_job_id", "async_job_id": job_id})
        row = await self._row(who, r.ns)
        return json_response({".tag": "complete", **folder_json(row)})

    async def check_share_job_status(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/check_share_job_status")
        ns, err = await self._job(who, a)
        if err:
            tags = err.split("/")
            if tags[:2] == ["bad_path", "already_shared"]:  # needs its metadata: say it plainly
                tags = ["bad_path", "invalid_path"]
            return json_response({".tag": "failed", "failed": _union(tags)})
        row = await self._row(who, ns)
        return json_response({".tag": "complete", **folder_json(row)})

    async def check_job_status(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/check_job_status")
        _, err = await self._job(who, a)
        if not err:
            return json_response({".tag": "complete"})
        return json_response({".tag": "failed", "failed": {".tag": "other"}} | _job_error(err))

    async def check_remove_member_job(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/check_remove_member_job_status")
        _, err = await self._job(who, a)
        if not err:
            return json_response({".tag": "complete"})
        return json_response({".tag": "failed", "failed": _union(err.split("/"))})

    # -- members ---------------------------------------------------------------------------
    async def add_folder_member(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/add_folder_member")
        ns = self._sfid(a)
        members = a.obj.get("members")
        if not isinstance(members, list) or not members:
            raise BadInput(a.route, "members: expected a non-empty list")
        if len(members) > ADD_MEMBERS_MAX:
            raise ApiError(["too_many_invitees"])
        add = []
        for m in members:
            if not isinstance(m, dict):
                raise BadInput(a.route, "members: expected AddMember objects")
            sel = self._selector(a, m.get("member"))
            add.append(
                C.ShareMember(sel.account_id, sel.email, self._access(a, m.get("access_level")))
            )
        a.bool("quiet")
        a.str("custom_message")
        await self._row(who, ns)  # not a member: invalid_id, as an unknown folder
        _raise(await self.meta.write(C.AddMembers(who.account_id, ns, add)))
        return json_response(None)

    async def _members_page(self, who: Any, ns: int, start: int, limit: int) -> web.Response:
        users, invitees = await self.meta.read(lambda s: S.members(s.db, ns))
        both = [("u", m) for m in users] + [("i", m) for m in invitees]
        page = both[start : start + limit]
        out: dict = {"users": [], "groups": [], "invitees": []}
        for kind, m in page:
            if kind == "u":
                out["users"].append(
                    {
                        "access_type": {".tag": m.access},
                        "user": {
                            "account_id": m.account_id,
                            "email": m.email,
                            "display_name": m.display_name or m.email.split("@")[0],
                            "same_team": False,
                        },
                        "permissions": [],
                        "is_inherited": False,
                    }
                )
            else:
                out["invitees"].append(
                    {
                        "access_type": {".tag": m.access},
                        "invitee": {".tag": "email", "email": m.email},
                        "permissions": [],
                        "is_inherited": False,
                    }
                )
        if start + limit < len(both):
            out["cursor"] = self.meta.sign_cursor(["members", who.account_id, ns, start + limit])
        return json_response(out)

    async def list_folder_members(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/list_folder_members")
        ns = self._sfid(a, [])
        limit = a.int("limit", default=MEMBERS_PAGE_MAX, lo=1, hi=MEMBERS_PAGE_MAX)
        await self._row(who, ns, ())
        return await self._members_page(who, ns, 0, limit)

    def _open(self, who: Any, a: Args, kind: str) -> list:
        cursor = a.str("cursor", required=True)
        try:
            st = self.meta.open_cursor(cursor)
        except (CursorInvalid, ValueError, TypeError):
            st = None
        if not isinstance(st, list) or len(st) != 4 or st[0] != kind or st[1] != who.account_id:
            raise ApiError(["invalid_cursor"])
        return st

    async def list_folder_members_continue(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/list_folder_members/continue")
        _, _, ns, start = self._open(who, a, "members")
        await self._row(who, ns)
        return await self._members_page(who, ns, int(start), MEMBERS_PAGE_MAX)

    async def update_folder_member(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/update_folder_member")
        ns = self._sfid(a)
        sel = self._selector(a, a.obj.get("member"))
        access = self._access(a, a.obj.get("access_level"))
        await self._row(who, ns)
        member = C.ShareMember(sel.account_id, sel.email, access)
        _raise(await self.meta.write(C.SetMemberAccess(who.account_id, ns, member)))
        return json_response({})

    async def remove_folder_member(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/remove_folder_member")
        ns = self._sfid(a)
        sel = self._selector(a, a.obj.get("member"))
        leave = a.bool("leave_a_copy")
        await self._row(who, ns)
        job_id = self._new_job_id()
        _raise(await self.meta.write(C.RemoveMember(who.account_id, ns, sel, leave, job_id)))
        return json_response({".tag": "async_job_id", "async_job_id": job_id})

    # -- listing, mounting -----------------------------------------------------------------
    async def _folders(self, who: Any, mountable: bool, start: int, limit: int) -> web.Response:
        rows = await self.meta.read(
            lambda s: S.shares_of(s.db, who.account_id, who.email, mountable)
        )
        out: dict = {"entries": [folder_json(r) for r in rows[start : start + limit]]}
        if start + limit < len(rows):
            kind = "mountable" if mountable else "folders"
            out["cursor"] = self.meta.sign_cursor([kind, who.account_id, limit, start + limit])
        return json_response(out)

    async def list_folders(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/list_folders")
        limit = a.int("limit", default=LIST_MAX, lo=1, hi=LIST_MAX)
        return await self._folders(who, False, 0, limit)

    async def list_folders_continue(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/list_folders/continue")
        _, _, limit, start = self._open(who, a, "folders")
        return await self._folders(who, False, int(start), int(limit))

    async def list_mountable(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/list_mountable_folders")
        limit = a.int("limit", default=LIST_MAX, lo=1, hi=LIST_MAX)
        return await self._folders(who, True, 0, limit)

    async def list_mountable_continue(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/list_mountable_folders/continue")
        _, _, limit, start = self._open(who, a, "mountable")
        return await self._folders(who, True, int(start), int(limit))

    async def mount_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/mount_folder")
        ns = self._sfid(a)
        await self._row(who, ns)
        _raise(await self.meta.write(C.MountFolder(who.account_id, ns)))
        return json_response(folder_json(await self._row(who, ns)))

    async def unmount_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/unmount_folder")
        ns = self._sfid(a)
        await self._row(who, ns)
        _raise(await self.meta.write(C.UnmountFolder(who.account_id, ns)))
        return json_response(None)

    async def relinquish(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/relinquish_folder_membership")
        ns = self._sfid(a)
        leave = a.bool("leave_a_copy")
        await self._row(who, ns)
        _raise(await self.meta.write(C.Relinquish(who.account_id, ns, leave)))
        return json_response({".tag": "complete"})

    async def unshare_folder(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/unshare_folder")
        ns = self._sfid(a)
        leave = a.bool("leave_a_copy")
        await self._row(who, ns)
        job_id = self._new_job_id()
        r = _raise(await self.meta.write(C.Unshare(who.account_id, ns, leave, job_id)))
        if r.failed and r.failed[0]:  # refused before anything changed: say so at once
            raise ApiError(r.failed[0].split("/"))
        return json_response({".tag": "async_job_id", "async_job_id": job_id})

    async def get_folder_metadata(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "sharing/get_folder_metadata")
        ns = self._sfid(a, [])
        return json_response(folder_json(await self._row(who, ns, ())))

    # -- users -----------------------------------------------------------------------------
    async def _accounts(self, who: Any, ids: list[str]) -> list[Any]:
        """The accounts of `ids` that `who` may see (itself, a co-member), else None each."""

        def q(s: Any) -> list[Any]:
            mine = {
                r[0]
                for r in s.db.execute(
                    "SELECT o.account_id FROM share_members m JOIN share_members o "
                    "ON o.ns = m.ns WHERE m.account_id = ?",
                    (who.account_id,),
                )
            } | {who.account_id}
            return [s.get_account(i) if i in mine else None for i in ids]

        return await self.meta.read(q)

    @staticmethod
    def _basic(acct: Any) -> dict:
        return {
            "account_id": acct.account_id,
            "name": name_json(acct.display_name, acct.email),
            "email": acct.email,
            "email_verified": True,
            "disabled": bool(acct.disabled),
            "is_teammate": False,
        }

    @staticmethod
    def _account_id(a: Args, v: Any) -> str:
        if not isinstance(v, str) or not 40 <= len(v) <= 40:
            raise BadInput(a.route, "account_id: expected a 40-character account id")
        return v

    async def get_account(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "users/get_account")
        aid = self._account_id(a, a.str("account_id", required=True))
        (acct,) = await self._accounts(who, [aid])
        if acct is None:
            raise ApiError(["no_account"])
        return json_response(self._basic(acct))

    async def get_account_batch(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "users/get_account_batch")
        ids = a.obj.get("account_ids")
        if not isinstance(ids, list) or not ids or len(ids) > 300:
            raise BadInput(a.route, "account_ids: expected 1 to 300 account ids")
        ids = [self._account_id(a, i) for i in ids]
        found = await self._accounts(who, ids)
        for i, acct in zip(ids, found, strict=True):
            if acct is None:
                raise ApiError(["no_account"], {"no_account": i})
        return json_response([self._basic(acct) for acct in found])


def _union(tags: list[str]) -> dict:
    return union(tags)


def _job_error(err: str) -> dict:
    """JobError of a failed unshare / relinquish / remove, by the first tag's route."""
    tags = err.split("/")
    if tags[0] in ("folder_owner", "mounted", "no_explicit_access"):
        return {"failed": _union(["relinquish_folder_membership_error", *tags])}
    if tags[0] in ("member_error",):
        return {"failed": _union(["remove_folder_member_error", *tags])}
    return {"failed": _union(["unshare_folder_error", *tags])}
