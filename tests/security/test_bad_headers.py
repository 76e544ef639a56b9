"""Issue 11, attack 6: malformed headers, arguments and bodies get the Dropbox-shaped error the
SDK expects — never a 5xx — leave no traceback or ERROR line in the server's log, and change
nothing (the same tree, no new change after a cursor taken before).

Each case is sent through raw HTTP (`http.client`, so a header can carry any byte) and, where
the official SDK can send it, through the SDK too. The conventions of the older cases are in
`tests/api/test_bad_input.py`; these are the inputs that used to reach the 500 path.
"""

from __future__ import annotations

import json

import pytest

from .badinput import Server, expect_400, expect_409, expect_malformed_upload


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("bad-headers"))
    try:
        s.start()
        s.upload("/keep/one.txt", b"one")
        s.ok("files/create_folder_v2", {"path": "/empty"})
        yield s
    finally:
        s.stop()


DEEP = b"[" * 100_000 + b"]" * 100_000  # past the interpreter's recursion limit
DEEPISH = json.dumps({"path": "/x", "pad": json.loads("[" * 40 + "]" * 40)}).encode()

# (route, Dropbox-API-Arg bytes): each a 400 text
BAD_ARG_HEADERS = [
    ("files/upload", b'{"path": "/\xff.txt"}'),  # invalid UTF-8
    ("files/upload", b'{"path": "/\xc3\xa9.txt"}'),  # raw UTF-8: must be \u escapes
    ("files/upload", b'{"path": "/\x80"}'),
    ("files/upload", b'{"path": "/a.txt", "mode": "\xe9"}'),
    ("files/download", b'{"path": "/keep/\xff"}'),
    ("files/upload_session/start", b'{"close": fals\xe9}'),
    ("files/upload", b"[" * 3000 + b"]" * 3000),  # nested too deep (in 8 KiB)
    ("files/upload", b'{"path": "/x", "autorename": NaN}'),
    ("files/upload", b'{"path": "/x", "autorename": Infinity}'),
    ("files/upload", b'{"path": "/x", "n": ' + b"9" * 5000 + b"}"),  # over int digits limit
    ("files/upload_session/append_v2", b'{"cursor": {"session_id": "s", "offset": 1e400}}'),
    (
        "files/upload_session/append_v2",
        b'{"cursor": {"session_id": "s", "offset": 99999999999999999999999999}}',
    ),
    ("files/upload_session/append_v2", b'{"cursor": {"session_id": "\\ud800", "offset": 0}}'),
    ("files/upload_session/finish", b'{"cursor": {"session_id": "\\udfff", "offset": 0}}'),
    ("files/upload", b'{"path": "/x", "content_hash": "\\ud800"}'),
    ("files/download", b'{"path": "rev:\\ud800"}'),
    ("files/download", b'{"path": "/keep/one.txt", "rev": "\\ud800aaaaaaaaa"}'),
]


@pytest.mark.parametrize("route,arg", BAD_ARG_HEADERS, ids=range(len(BAD_ARG_HEADERS)))
def test_bad_arg_header_is_400(srv: Server, clean: None, route: str, arg: bytes) -> None:
    expect_400(srv.content(route, None, b"x", raw_arg=arg), route)


# (route, JSON body): each a 400 text
BAD_BODIES = [
    ("files/list_folder", DEEP),
    ("files/list_folder", DEEPISH),
    ("files/list_folder/longpoll", b"[" * 2000 + b"]" * 2000),  # (its body max is 16 KiB)
    ("files/list_folder/longpoll", b'{"cursor": "c", "timeout": NaN}'),
    ("files/list_folder", b'{"path": "", "limit": NaN}'),
    ("files/list_folder", b'{"path": "", "limit": -Infinity}'),
    ("files/list_folder", b'{"path": "", "limit": 1e400}'),
    ("files/list_folder", b'{"path": "", "limit": ' + b"1" * 4500 + b"}"),
    ("files/list_folder", b'{"path": "", "limit": 100000000000000000000000000000000}'),
    ("files/list_folder/continue", b'{"cursor": "\\ud800"}'),
    ("files/create_folder_v2", b'{"path": "/x", "autorename": "\\ud800"}'),
    ("files/create_folder_v2", b'{"path": "/\xed\xa0\x80"}'),  # a surrogate as raw UTF-8
    ("files/get_metadata", b'{"path": "rev:\\ud800"}'),
    ("files/get_metadata", b'{"path": "ns:1\\u0000"}'),
    ("files/delete_v2", b'{"path": "/keep/one.txt", "parent_rev": "\\udc00"}'),
    ("files/restore", b'{"path": "/keep/one.txt", "rev": "\\ud800"}'),
    ("files/list_revisions", b'{"path": "/keep/one.txt", "limit": 1e3}'),
    ("files/upload_session/finish_batch_v2", b'{"entries": [' * 50 + b"]}" * 50),
    (
        "files/upload_session/finish_batch_v2",
        b'{"entries": [{"cursor": {"session_id": "\\ud800", "offset": 0}, '
        b'"commit": {"path": "/x"}}]}',
    ),
    ("raftbox/blocks/has", b'{"ids": ["\\ud800"]}'),
    ("raftbox/blocks/get", b'{"ids": [' + b'"' + b"a" * 64 + b'",' * 1 + b"1]}"),
    ("raftbox/commit_batch", b'{"entries": [{"path": "/x", "blocks": [], "size": NaN}]}'),
    ("raftbox/commit_batch", b'{"entries": [{"path": "/x", "blocks": [], "size": 1e400}]}'),
    (
        "raftbox/commit_batch",
        b'{"entries": [{"path": "/x", "blocks": [], "content_hash": "\\ud800"}]}',
    ),
]


@pytest.mark.parametrize("route,body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_bad_json_body_is_400(srv: Server, clean: None, route: str, body: bytes) -> None:
    expect_400(srv.rpc(route, body=body), route)


BAD_PATHS = ["/\ud800", "/a/\udfff/b", "id:\ud800", "ns:1/\ud800", "/nul\x00x"]


@pytest.mark.parametrize("path", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_bad_path_strings_are_malformed_path(srv: Server, clean: None, path: str) -> None:
    """A lone surrogate (sent as a JSON escape) or NUL in a path: `malformed_path`, on every
    kind of route, never a 500."""
    expect_malformed_upload(srv.content("files/upload", {"path": path}, b"x"))
    expect_409(srv.rpc("files/create_folder_v2", {"path": path}), "path", "malformed_path")
    expect_409(srv.rpc("files/get_metadata", {"path": path}), "path", "malformed_path")
    expect_409(srv.rpc("files/delete_v2", {"path": path}), "path_lookup", "malformed_path")
    r = srv.rpc("files/move_v2", {"from_path": "/keep/one.txt", "to_path": path})
    expect_409(r, "to", "malformed_path")
    expect_409(srv.content("files/download", {"path": path}), "path", "malformed_path")
    r = srv.rpc("raftbox/commit_batch", {"entries": [{"path": path, "blocks": []}]})
    expect_409(r, "path", "malformed_path")


def test_bad_paths_through_the_sdk(srv: Server, clean: None) -> None:
    from dropbox import exceptions

    dbx = srv.sdk()
    for path in ("/\ud800", "/a/\udfff"):
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_upload(b"x", path)
        assert ei.value.error.get_path().reason.is_malformed_path()
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_create_folder_v2(path)
        assert ei.value.error.get_path().is_malformed_path()
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_get_metadata(path)
        assert ei.value.error.get_path().is_malformed_path()
        with pytest.raises(exceptions.ApiError) as ei:
            dbx.files_download(path)
        assert ei.value.error.get_path().is_malformed_path()
    with pytest.raises(exceptions.BadInputError):
        dbx.files_list_folder_continue("\ud800")


AUTH_HEADERS = [
    b"Bearer \xe9t\xe9",
    b"Bearer \xff\xfe",
    b"Bearer " + b"a" * 5000,
    b"bearer lowercase-scheme",
    b"Bearer\ttab",
    b"Basic \xe9",
]


@pytest.mark.parametrize("auth", AUTH_HEADERS, ids=range(len(AUTH_HEADERS)))
def test_bad_authorization_is_401(srv: Server, clean: None, auth: bytes) -> None:
    for r in (
        srv.raw(
            "files/list_folder",
            {"Authorization": auth, "Content-Type": "application/json"},
            b'{"path": ""}',
            token=None,
        ),
        srv.raw(
            "files/upload",
            {
                "Authorization": auth,
                "Dropbox-API-Arg": b'{"path": "/nope.txt"}',
                "Content-Type": "application/octet-stream",
            },
            b"x",
            token=None,
        ),
        srv.raw("raftbox/admin/status", {"Authorization": auth}, b"", token=None),
    ):
        assert r.status == 401, (r.status, r.text)
        assert r.json()["error"] == {".tag": "invalid_access_token"}


CONTENT_TYPES = [b"application/\xe9", b"text/html", b"\xff", b"\xe9; charset=utf-8"]


@pytest.mark.parametrize("ctype", CONTENT_TYPES, ids=range(len(CONTENT_TYPES)))
def test_bad_content_type(srv: Server, clean: None, ctype: bytes) -> None:
    r = srv.raw("files/create_folder_v2", {"Content-Type": ctype}, b'{"path": "/ct"}')
    expect_400(r, "files/create_folder_v2")


RANGES = [
    (b"bytes=0-1,2-3", 416),  # several ranges: not supported
    (b"bytes=99999999999999999999999999999-", 416),
    (b"bytes=0-" + b"9" * 5000, 206),  # past the end: to the end
    (b"bytes=-" + b"9" * 5000, 206),  # a suffix longer than the file: all of it
    (b"bytes=\xd9\xa3-", 416),  # a non-ASCII digit
    (b"bytes=1-0", 416),
    (b"bytes=-0", 416),
    (b"bytes=-", 416),
    (b"items=0-1", 416),
    (b"bytes=\xff", 416),
]


@pytest.mark.parametrize("rng,status", RANGES, ids=range(len(RANGES)))
def test_bad_range(srv: Server, clean: None, rng: bytes, status: int) -> None:
    r = srv.raw(
        "files/download",
        {"Dropbox-API-Arg": json.dumps({"path": "/keep/one.txt"}), "Range": rng},
    )
    assert r.status == status, (r.status, r.text)
    if status == 416:
        assert r.json()["error_summary"] == "range/not_satisfiable/..", r.text
    else:
        assert r.body == b"one"


def test_arg_query_parameter(srv: Server, clean: None) -> None:
    """`?arg=` (the Dropbox API's alternative to the header): bad escapes and encodings. The
    URL is decoded with U+FFFD for invalid UTF-8, so those name a file that is not there."""
    for q, want in (
        ("arg=%7B%22path%22%3A%22%2F%ED%A0%80%22%7D", "path/not_found/.."),
        ("arg=%7B%22path%22%3A%22%2F%FF%22%7D", "path/not_found/.."),
        ("arg=%7B%22path%22%3A%22%2F%5Cud800%22%7D", "path/malformed_path/.."),  # "\ud800"
        ("arg=%ZZ", 400),
        ("arg=" + "%5B" * 2000, 400),  # (a longer request line is the protocol limit)
    ):
        r = srv.raw("files/download", {}, path=f"/2/files/download?{q}")
        if want == 400:
            expect_400(r, "files/download")
        else:
            assert r.status == 409 and r.json()["error_summary"] == want, (q, r.status, r.text)


def test_far_future_date_through_the_sdk(srv: Server, clean: None) -> None:
    """What the SDK can send: a datetime it encodes as client_modified, refused with a 400
    (BadInputError), nothing stored."""
    import datetime as dt

    from dropbox import exceptions

    dbx = srv.sdk()
    for when in (dt.datetime(2263, 1, 1), dt.datetime(9999, 12, 31), dt.datetime(1969, 12, 31)):
        with pytest.raises(exceptions.BadInputError):
            dbx.files_upload(b"x", "/far.txt", client_modified=when)


def _raw_exchange(srv: Server, request: bytes) -> bytes:
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=srv.ca)
    host, port = srv.hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as c:
            c.sendall(request)
            out = b""
            while chunk := c.recv(65536):
                out += chunk
            return out


def test_http_parser_refusals_are_quiet(srv: Server, clean: None) -> None:
    """What aiohttp's HTTP parser refuses (a bad chunk size, a control byte in a header) is a
    400 and one INFO line, not an ERROR with a traceback."""
    head = (
        f"POST /2/files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
        'Dropbox-API-Arg: {"path": "/chunked.bin"}\r\n'
        "Content-Type: application/octet-stream\r\n"
    ).encode()
    for req in (
        head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n",
        head + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\nabc\r\n0\r\n\r\n",
        head + b"X-Bad: a\x01b\r\nContent-Length: 1\r\n\r\nx",
    ):
        answer = _raw_exchange(srv, req)
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
