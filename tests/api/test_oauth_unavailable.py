"""The OAuth2 endpoints when the meta group cannot answer (no majority, a timeout): a 503 the
client may retry, in the endpoint's own shape (JSON for `/oauth2/token`, a page for
`/oauth2/authorize`), never a 500 or a hung request; a bug is a logged 500 `server_error`."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftbox.api.oauth import OAuthRoutes
from raftbox.raft.node import Unavailable


class Meta:
    """A meta role whose reads fail as `fail` says."""

    def __init__(self, fail: BaseException) -> None:
        self.fail = fail

    async def read(self, fn, stale: bool = False):
        raise self.fail

    async def write(self, cmd):
        raise self.fail

    async def auth(self, token: str):
        raise self.fail


def call(fail: BaseException) -> list[tuple[int, str, str]]:
    async def run() -> list[tuple[int, str, str]]:
        app = web.Application()
        api = type("Api", (), {"add_routes": lambda self, rows: None})()
        OAuthRoutes(Meta(fail)).install(api, app)  # type: ignore[arg-type]
        out = []
        async with TestClient(TestServer(app)) as c:
            form = {"grant_type": "refresh_token", "refresh_token": "r", "client_id": "k"}
            r = await c.post("/oauth2/token", data=form)
            out.append((r.status, r.content_type, await r.text()))
            r = await c.get("/oauth2/authorize", params={"client_id": "k", "response_type": "code"})
            out.append((r.status, r.content_type, await r.text()))
        return out

    return asyncio.run(asyncio.wait_for(run(), 30))


def test_no_majority_is_a_503_the_client_may_retry():
    (s1, t1, b1), (s2, t2, b2) = call(Unavailable("no leader"))
    assert (s1, t1) == (503, "application/json") and '"temporarily_unavailable"' in b1
    assert (s2, t2) == (503, "text/html") and "temporarily_unavailable" in b2


def test_a_timeout_is_a_503_too():
    (s1, _, _), (s2, _, _) = call(TimeoutError())
    assert (s1, s2) == (503, 503)


def test_a_bug_is_a_500_server_error(caplog):
    (s1, _, b1), (s2, _, _) = call(ZeroDivisionError())
    assert (s1, s2) == (500, 500) and '"server_error"' in b1
    assert "internal error in /oauth2/token" in caplog.text
