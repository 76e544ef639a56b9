"""Space usage and quotas on the API: Dropbox's `users/get_space_usage`, and the operator's route
that sets an account's quota (`raftbox user quota EMAIL SIZE|none`).

Routes (`UsageRoutes(meta).routes()`, registered on a meta member's `ApiServer`):

| route                        | auth  | argument                                | result              |
| ---------------------------- | ----- | --------------------------------------- | ------------------- |
| `users/get_space_usage`      | user  | Void                                    | `SpaceUsage`        |
| `raftbox/admin/set_quota`    | admin | `{"email": E, "quota_bytes": N|null}`   | the usage (below)   |

`SpaceUsage` is Dropbox's: `{"used": N, "allocation": {".tag": "individual", "allocated": Q}}`
— `used` the bytes of the account's current files (`raftbox.meta.quota`: a counter in the
replicated state, read after ReadIndex, never a scan), `allocated` its quota, or
`UNLIMITED_ALLOCATION_BYTES` (1 PiB) when it has none (Dropbox's type has no "unlimited"; a
large figure keeps `rclone about` and the SDKs' arithmetic meaningful). The admin route answers
`{"email", "account_id", "used", "quota_bytes"}` (`quota_bytes` null: no quota); an unknown
email is a 409 `account_not_found`, a quota that is not a number of bytes in
[0, `QUOTA_MAX_BYTES`] a 400.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta import quota
from raftbox.meta.service import MetaService

from .args import rpc_args
from .errors import ApiError, BadInput, Unavailable
from .wire import json_response

SET_QUOTA_ROUTE = "raftbox/admin/set_quota"


def space_usage_json(u: C.SpaceUsage) -> dict[str, Any]:
    """Dropbox's `users.SpaceUsage` of an account."""
    allocated = quota.UNLIMITED_ALLOCATION_BYTES if u.quota is None else u.quota
    return {"used": u.used, "allocation": {".tag": "individual", "allocated": allocated}}


def usage_admin_json(u: C.SpaceUsage) -> dict[str, Any]:
    return {"email": u.email, "account_id": u.account_id, "used": u.used, "quota_bytes": u.quota}


class UsageRoutes:
    def __init__(self, meta: MetaService) -> None:
        self.meta = meta

    def routes(self) -> list[tuple[str, str, Any]]:
        """(route, auth, handler) of the usage routes."""
        return [
            ("users/get_space_usage", "user", self.get_space_usage),
            (SET_QUOTA_ROUTE, "admin", self.set_quota),
        ]

    async def get_space_usage(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "users/get_space_usage")  # Void
        u = await self.meta.read(lambda s: s.space_usage(who.account_id))
        if u is None:  # removed between authentication and this read
            raise Unavailable("the account is being removed")
        return json_response(space_usage_json(u))

    async def set_quota(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, SET_QUOTA_ROUTE)
        email = a.str("email", required=True)
        if not email.strip():
            raise BadInput(a.route, "email: not an email address")
        if "quota_bytes" not in a.obj:
            raise BadInput(a.route, "request body: missing required field 'quota_bytes'")
        q = a.int("quota_bytes", lo=0, hi=quota.QUOTA_MAX_BYTES)
        r = await self.meta.write(C.SetQuota(email, q))
        if isinstance(r, C.MetaError):
            raise ApiError(r.tags, r.extra)
        return json_response(usage_admin_json(r))
