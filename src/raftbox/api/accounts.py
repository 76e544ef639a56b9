"""Accounts and tokens an operator can manage, and the Dropbox route that revokes a token.

Routes (`AccountRoutes(meta).routes()`, registered on a meta member's `ApiServer`):

| route                             | auth  | argument                  | result                  |
| --------------------------------- | ----- | ------------------------- | ----------------------- |
| `auth/token/revoke`               | user  | Void (`null` or empty)    | `null`                  |
| `raftbox/admin/list_accounts`     | admin | Void                      | `{"accounts": [...]}`   |
| `raftbox/admin/disable_account`   | admin | `{"email": E}`            | the account (below)     |
| `raftbox/admin/enable_account`    | admin | `{"email": E}`            | the account             |
| `raftbox/admin/remove_account`    | admin | `{"email": E}`            | the account, as it was  |
| `raftbox/admin/revoke_tokens`     | admin | `{"email": E}`            | `{"revoked": N}`        |

An account is `{"email", "account_id", "display_name", "disabled", "tokens"}` (`tokens`: how
many tokens it has; in `list_accounts` only). An unknown email is a 409 `account_not_found`.

`auth/token/revoke` is Dropbox's: it revokes the token that authenticated the call (the
official SDK's `dbx.auth_token_revoke()`); afterwards that token gets 401
`invalid_access_token`, on every member (`raftbox.meta.service`, "Authentication"). A disabled
account's token gets 401 `user_suspended` (Dropbox's `AuthError` member for a suspended user)
until the account is enabled again; its data is kept. A removed account's token gets
`invalid_access_token`; its files are deleted with it (their blocks are then garbage unless
another account holds them, and GC collects them) and its email can be used again.

Each change is one state machine command, so it is all or nothing and happens once.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from raftbox.meta import commands as C
from raftbox.meta.service import MetaService

from .args import rpc_args
from .errors import ApiError, BadInput
from .wire import json_response

EMAIL_MAX_BYTES = 254


def account_json(acct: C.AccountInfo, tokens: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "email": acct.email,
        "account_id": acct.account_id,
        "display_name": acct.display_name,
        "disabled": acct.disabled,
    }
    if tokens is not None:
        out["tokens"] = tokens
    return out


def bearer_token(request: web.Request) -> str:
    h = request.headers.get("Authorization", "")
    return h[7:].strip() if h.startswith("Bearer ") else ""


class AccountRoutes:
    def __init__(self, meta: MetaService) -> None:
        self.meta = meta

    def routes(self) -> list[tuple[str, str, Any]]:
        """(route, auth, handler) of the account routes."""
        return [
            ("auth/token/revoke", "user", self.token_revoke),
            ("raftbox/admin/list_accounts", "admin", self.list_accounts),
            ("raftbox/admin/disable_account", "admin", self.disable),
            ("raftbox/admin/enable_account", "admin", self.enable),
            ("raftbox/admin/remove_account", "admin", self.remove),
            ("raftbox/admin/revoke_tokens", "admin", self.revoke_tokens),
        ]

    async def token_revoke(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "auth/token/revoke")  # Void: any JSON is ignored
        self._raise(await self.meta.revoke_token(bearer_token(request)))
        return _null()

    async def list_accounts(self, request: web.Request, who: Any) -> web.Response:
        await rpc_args(request, "raftbox/admin/list_accounts")
        rows = await self.meta.list_accounts()
        return _json({"accounts": [account_json(a, n) for a, n in rows]})

    async def _email(self, request: web.Request, route: str) -> str:
        a = await rpc_args(request, route)
        email = a.str("email", required=True)
        if not email.strip() or len(email.encode(errors="replace")) > EMAIL_MAX_BYTES:
            raise BadInput(route, "email: not an email address")
        return email

    async def _set_disabled(self, request: web.Request, route: str, disabled: bool) -> Any:
        email = await self._email(request, route)
        acct = self._raise(await self.meta.write(C.SetDisabled(email, disabled)))
        return _json(account_json(acct))

    async def disable(self, request: web.Request, who: Any) -> web.Response:
        return await self._set_disabled(request, "raftbox/admin/disable_account", True)

    async def enable(self, request: web.Request, who: Any) -> web.Response:
        return await self._set_disabled(request, "raftbox/admin/enable_account", False)

    async def remove(self, request: web.Request, who: Any) -> web.Response:
        email = await self._email(request, "raftbox/admin/remove_account")
        acct = self._raise(await self.meta.write(C.RemoveAccount(email)))
        return _json(account_json(acct))

    async def revoke_tokens(self, request: web.Request, who: Any) -> web.Response:
        email = await self._email(request, "raftbox/admin/revoke_tokens")
        r = self._raise(await self.meta.write(C.RevokeTokens(email)))
        return _json({"revoked": r.n})

    @staticmethod
    def _raise(result: Any) -> Any:
        if isinstance(result, C.MetaError):
            raise ApiError(result.tags, result.extra)
        return result


def _json(obj: Any) -> web.Response:
    return json_response(obj)


def _null() -> web.Response:
    return _json(None)
