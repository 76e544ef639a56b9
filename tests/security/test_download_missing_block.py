"""Issue 11, attacks 5 (download side) and 6 (hang-ups).

- A download whose first block is missing from this member's store (a cluster whose members
  do not share one; here: its file deleted under the data dir's `blocks/`) gets no `200`: a 503
  the SDK retries, and one ERROR line naming the file, the rev and the block.
- A block missing later, once `200` and the length are sent: one ERROR line (path, id, rev,
  block id; no traceback) and the connection aborted, so the client sees a truncated transfer
  — never a short file taken as complete.
- The same for the native `raftbox/blocks/get`.
- A client that hangs up mid-download or mid-upload: at most one INFO line, no traceback.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from pathlib import Path

import pytest
import requests

from api.procs import wait_for

from .badinput import Server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("missing-block"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _file_with_blocks(srv: Server, path: str, size: int) -> tuple[dict, list[list]]:
    """Upload `size` random bytes (several blocks: content-defined chunks of ~1-2 MiB)."""
    meta = srv.upload(path, os.urandom(size))
    blocks = srv.ok("raftbox/blocks/list", {"path": path})["blocks"]
    assert len(blocks) >= 3, blocks
    return meta, blocks


def _delete_block(srv: Server, block_id: str) -> None:
    found = [p for p in Path(srv.up.data, "blocks").rglob(block_id + "*") if p.is_file()]
    assert found, f"block {block_id} not under blocks/"
    for p in found:
        p.unlink()


def _download(srv: Server, path: str) -> requests.Response:
    with srv.session() as s:
        return s.post(
            f"https://{srv.hostport}/2/files/download",
            headers={
                "Authorization": f"Bearer {srv.token}",
                "Dropbox-API-Arg": json.dumps({"path": path}),
            },
            timeout=60,
        )


def _errors(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if " ERROR " in ln]


def test_first_block_missing_is_not_a_200(srv: Server) -> None:
    meta, blocks = _file_with_blocks(srv, "/first.bin", 6 * MiB)
    _delete_block(srv, blocks[0][0])
    mark = srv.log_mark()
    r = _download(srv, "/first.bin")
    assert r.status_code == 503, (r.status_code, r.headers, r.content[:200])
    errors = _errors(srv.log_since(mark))
    assert len(errors) == 1, errors
    assert blocks[0][0] in errors[0] and meta["rev"] in errors[0] and "/first.bin" in errors[0]
    assert "Traceback" not in srv.log_since(mark)
    # the SDK sees a server error (retried), never a short file
    from dropbox import exceptions

    dbx = srv.sdk(max_retries_on_error=0)
    with pytest.raises(exceptions.InternalServerError) as ei:
        dbx.files_download("/first.bin")
    assert ei.value.status_code == 503
    # a Range inside the first block: the same
    with srv.session() as s:
        r = s.post(
            f"https://{srv.hostport}/2/files/download",
            headers={
                "Authorization": f"Bearer {srv.token}",
                "Dropbox-API-Arg": json.dumps({"path": "/first.bin"}),
                "Range": "bytes=0-9",
            },
            timeout=60,
        )
    assert r.status_code == 503


def test_later_block_missing_aborts_the_transfer(srv: Server) -> None:
    meta, blocks = _file_with_blocks(srv, "/later.bin", 8 * MiB)
    _delete_block(srv, blocks[2][0])
    mark = srv.log_mark()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _download(srv, "/later.bin").content  # noqa: B018
    log = wait_for(lambda: srv.log_since(mark) if _errors(srv.log_since(mark)) else "", 10, "ERROR")
    errors = _errors(log)
    assert len(errors) == 1, errors
    for what in (blocks[2][0], meta["rev"], meta["id"], "/later.bin"):
        assert what in errors[0], (what, errors[0])
    assert "Traceback" not in log
    # the SDK: the status is 200, then the body breaks off (not a short file taken as whole)
    dbx = srv.sdk(max_retries_on_error=0)
    _, resp = dbx.files_download("/later.bin")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        resp.content  # noqa: B018


def test_native_get_of_a_missing_block(srv: Server) -> None:
    _, blocks = _file_with_blocks(srv, "/native.bin", 6 * MiB)
    _delete_block(srv, blocks[0][0])
    _delete_block(srv, blocks[2][0])
    mark = srv.log_mark()
    r = srv.rpc("raftbox/blocks/get", {"ids": [blocks[0][0]]})
    assert r.status == 503, (r.status, r.body[:200])
    with srv.session() as s:
        r2 = s.post(
            f"https://{srv.hostport}/2/raftbox/blocks/get",
            json={"ids": [blocks[1][0], blocks[2][0]]},
            headers={"Authorization": f"Bearer {srv.token}"},
            timeout=60,
            stream=True,
        )
        assert r2.status_code == 200  # the first block is there: the stream starts
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            r2.content  # noqa: B018
    log = srv.log_since(mark)
    assert len(_errors(log)) == 2 and "Traceback" not in log, log


def _hang_up_after(srv: Server, request: bytes, read_bytes: int) -> None:
    ctx = ssl.create_default_context(cafile=srv.ca)
    host, port = srv.hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as c:
            c.sendall(request)
            got = 0
            while got < read_bytes:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            # an RST, not a polite FIN: the way a killed client goes
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_hang_up_mid_download_logs_no_traceback(srv: Server) -> None:
    srv.upload("/big.bin", os.urandom(24 * MiB))
    mark = srv.log_mark()
    arg = json.dumps({"path": "/big.bin"})
    req = (
        f"POST /2/files/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
        f"Dropbox-API-Arg: {arg}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    _hang_up_after(srv, req, 256 * 1024)
    wait_for(lambda: "went away" in srv.log_since(mark), 20, "the hang-up logged")
    log = srv.log_since(mark)
    assert "Traceback" not in log and not _errors(log), log
    assert sum("went away" in ln for ln in log.splitlines()) == 1, log
    assert all(" INFO " in ln or " DEBUG " in ln for ln in log.splitlines() if "went away" in ln)


def test_hang_up_mid_upload_logs_no_traceback(srv: Server) -> None:
    before = srv.snapshot()
    mark = srv.log_mark()
    arg = json.dumps({"path": "/half.bin"})
    req = (
        f"POST /2/files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
        f"Dropbox-API-Arg: {arg}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {50 * MiB}\r\n\r\n"
    ).encode() + os.urandom(3 * MiB)
    _hang_up_after(srv, req, 0)
    wait_for(lambda: "went away" in srv.log_since(mark), 20, "the hang-up logged")
    log = srv.log_since(mark)
    assert "Traceback" not in log and not _errors(log), log
    srv.assert_unchanged(before)
