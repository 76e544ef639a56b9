"""The access log (issue 11): one line per request with the time, the route, the status, the
bytes in and out, the milliseconds and the account id — and never a token or the
`Dropbox-API-Arg` header (which holds paths), in JSON from a real `raftbox up`, and plain."""

from __future__ import annotations

import json
import re

import aiohttp
import pytest
from aiohttp import web
from dropbox.exceptions import AuthError

from api.procs import UpServer, quiet_port, wait_for
from api.sdk import Raw, connect
from raftbox.api import accesslog

SECRET_NAME = "never-logged-7f3a"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("access-log-up")
    srv = UpServer(base, quiet_port())
    srv.log_file = base / "access.jsonl"
    srv.proc.args += ["--access-log", "json", "--access-log-file", str(srv.log_file)]
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_json_lines_have_the_fields_and_never_a_token_or_the_arg(up):
    dbx = connect(up.hostport, up.token, up.ca)
    account_id = dbx.users_get_current_account().account_id
    body = b"x" * 5000
    dbx.files_upload(body, f"/{SECRET_NAME}.txt")
    _, resp = dbx.files_download(f"/{SECRET_NAME}.txt")
    assert resp.content == body
    bad = "rbx_" + "b" * 43
    with pytest.raises(AuthError):
        connect(up.hostport, bad, up.ca).users_get_current_account()
    raw = Raw(up.hostport, up.ca)
    try:  # the arg in the URL query: not logged either
        raw.post(f"files/download?arg=%7B%22path%22%3A%22%2F{SECRET_NAME}%22%7D", token=up.token)
    finally:
        raw.close()

    def lines() -> list[dict]:
        got = [json.loads(x) for x in up.log_file.read_text().splitlines() if x.strip()]
        return got if sum(1 for x in got if x["route"] == "/2/files/download") >= 2 else []

    entries = wait_for(lines, 30, "the access log has both downloads")
    text = up.log_file.read_text()
    for secret in (up.token, bad, SECRET_NAME, "Bearer", "Dropbox-API-Arg"):
        assert secret not in text
    keys = {"time", "remote", "method", "route", "status", "bytes_in", "bytes_out", "ms",
            "account_id"}  # fmt: skip
    for e in entries:
        assert set(e) == keys, e
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"])
        assert e["method"] == "POST" and e["remote"] == "127.0.0.1" and e["ms"] >= 0
    by_route = {}
    for e in entries:
        by_route.setdefault(e["route"], []).append(e)
    (upload,) = by_route["/2/files/upload"]
    assert upload["status"] == 200 and upload["bytes_in"] == len(body)
    assert upload["account_id"] == account_id and upload["bytes_out"] > 0
    download = by_route["/2/files/download"][0]
    assert download["status"] == 200 and download["bytes_out"] == len(body)
    assert download["account_id"] == account_id
    refusals = [e for e in by_route["/2/users/get_current_account"] if e["status"] == 401]
    assert refusals and all(e["account_id"] is None for e in refusals)


def test_plain_lines_and_statuses_of_raised_errors(tmp_path):
    async def body():
        mw = accesslog.configure("plain", str(tmp_path / "access.log"))

        async def ok(request: web.Request) -> web.Response:
            request[accesslog.ACCOUNT_KEY] = "dbid:someone"
            await request.read()
            return web.json_response({"a": 1})

        async def gone(request: web.Request) -> web.Response:
            raise web.HTTPNotFound()

        app = web.Application(middlewares=[mw])
        app.router.add_post("/2/ok", ok)
        app.router.add_post("/2/gone", gone)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            async with aiohttp.ClientSession() as s:
                h = {"Authorization": "Bearer rbx_secret", "Dropbox-API-Arg": '{"path":"/p"}'}
                async with s.post(f"http://{host}:{port}/2/ok", data=b"12345", headers=h) as r:
                    assert r.status == 200
                async with s.post(f"http://{host}:{port}/2/gone", headers=h) as r:
                    assert r.status == 404
        finally:
            await runner.cleanup()
            accesslog.configure("off")

    import asyncio

    asyncio.run(body())
    for h in list(accesslog.log.handlers):
        h.flush()
    text = (tmp_path / "access.log").read_text()
    ok_line, gone_line = text.splitlines()
    assert re.fullmatch(
        r"\S+Z 127\.0\.0\.1 POST /2/ok 200 in=5 out=8 ms=\d+\.\d account=dbid:someone", ok_line
    ), ok_line
    assert re.fullmatch(
        r"\S+Z 127\.0\.0\.1 POST /2/gone 404 in=0 out=0 ms=\S+ account=-", gone_line
    )
    assert "rbx_secret" not in text and '"/p"' not in text
