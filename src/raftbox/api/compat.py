"""Routes older and other Dropbox clients still call: `check/user` and the v1 file operations.

Routes (`CompatRoutes(api).routes()`, registered on a meta member's `ApiServer`):

| route                 | auth | argument                     | result (200)                    |
| --------------------- | ---- | ---------------------------- | ------------------------------- |
| `check/user`          | user | `{"query": S}` (≤ 500 chars) | `{"result": S}`                 |
| `files/copy`          | user | as `files/copy_v2`           | `Metadata` (with `.tag`)        |
| `files/move`          | user | as `files/move_v2`           | `Metadata` (with `.tag`)        |
| `files/delete`        | user | as `files/delete_v2`         | `Metadata` (with `.tag`)        |
| `files/create_folder` | user | as `files/create_folder_v2`  | `FolderMetadata` (no `.tag`)    |

Why: the Python SDK (11.x and 12.x alike) still exposes `files_copy`, `files_move`,
`files_delete` and `files_create_folder` — deprecated, but in use — and `check_user` is how
tools test a token (`dbx.check_user("ping")`). A v1 file route is its v2 route whose result is
the metadata itself rather than `{"metadata": ...}` (the SDK's route table: `copy` returns
`Metadata`, `create_folder` returns `FolderMetadata`); its argument and its error union
(`RelocationError`, `DeleteError`, `CreateFolderError`) are the v2 route's. So each alias runs
the v2 handler and unwraps its answer; errors pass through unchanged (a 400 names the alias the
client called). `check/app` (app key and secret as Basic auth) needs registered apps (OAuth2)
and is not served here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .args import rpc_args
from .errors import BadInput
from .wire import json_response

ECHO_QUERY_MAX_CHARS = 500  # check.EchoArg.query: String(max_length=500)


class CompatRoutes:
    def __init__(self, api: Any) -> None:
        """`api`: the `ApiServer` whose v2 handlers the aliases run."""
        self.api = api

    def routes(self) -> Iterable[tuple[str, str, Any]]:
        api = self.api
        return [
            ("check/user", "user", self.check_user),
            ("files/copy", "user", _unwrapped("files/copy", api.copy)),
            ("files/move", "user", _unwrapped("files/move", api.move)),
            ("files/delete", "user", _unwrapped("files/delete", api.delete)),
            ("files/create_folder", "user", _unwrapped("files/create_folder", api.create_folder)),
        ]

    async def check_user(self, request: web.Request, who: Any) -> web.Response:
        a = await rpc_args(request, "check/user")
        query = a.str("query", default="")
        if len(query) > ECHO_QUERY_MAX_CHARS:
            raise BadInput(a.route, f"query: longer than {ECHO_QUERY_MAX_CHARS} characters")
        return json_response({"result": query})


def _unwrapped(route: str, v2: Any) -> Any:
    """The v1 alias `route` of a v2 handler: its answer's `metadata`; its errors unchanged,
    except that a 400 names the route the client called."""

    async def handler(request: web.Request, who: Any) -> web.Response:
        try:
            resp = await v2(request, who)
        except BadInput as e:
            raise BadInput(route, str(e).partition('": ')[2]) from None
        if resp.status != 200 or not isinstance(resp.body, bytes):
            return resp
        return json_response(json.loads(resp.body)["metadata"])

    return handler
