"""The batch, job-check and thumbnail routes under attack: no token, another account's job ids
and paths, oversize and garbled arguments. Each is refused with Dropbox's shape (401, 409
`invalid_async_job_id`, 400 text, 409 `too_many_files`) and changes nothing; another
account's job is never told apart from a job that does not exist."""

from __future__ import annotations

import pytest

from .badinput import Server, expect_400, expect_409

LAUNCHES = {
    "files/copy_batch_v2": {"entries": [{"from_path": "/keep/a.txt", "to_path": "/x/a.txt"}]},
    "files/move_batch_v2": {"entries": [{"from_path": "/keep/a.txt", "to_path": "/x/a.txt"}]},
    "files/delete_batch": {"entries": [{"path": "/keep/a.txt"}]},
    "files/create_folder_batch": {"paths": ["/x"], "force_async": True},
}
CHECKS = {
    "files/copy_batch_v2": "files/copy_batch/check_v2",
    "files/move_batch_v2": "files/move_batch/check_v2",
    "files/delete_batch": "files/delete_batch/check",
    "files/create_folder_batch": "files/create_folder_batch/check",
}
ALL_CHECKS = [*CHECKS.values(), "files/upload_session/finish_batch/check"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("batch-routes"))
    try:
        s.start()
        s.upload("/keep/a.txt", b"a")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def other(srv: Server) -> dict:
    """Another account with a file and one job of each kind."""
    token = srv.new_account("other")
    srv.upload("/theirs/a.txt", b"theirs", token=token)
    ns = srv.ok("users/get_current_account", None, token)["root_info"]["root_namespace_id"]
    jobs = {}
    for route in CHECKS:
        arg = {
            "files/copy_batch_v2": {"entries": [{"from_path": "/theirs/a.txt", "to_path": "/c"}]},
            "files/move_batch_v2": {"entries": [{"from_path": "/c", "to_path": "/m"}]},
            "files/delete_batch": {"entries": [{"path": "/m"}]},
            "files/create_folder_batch": {"paths": ["/f"], "force_async": True},
        }[route]
        jobs[route] = srv.ok(route, arg, token)["async_job_id"]
    return {"token": token, "ns": ns, "jobs": jobs}


@pytest.mark.parametrize(
    "route",
    [*LAUNCHES, *ALL_CHECKS, "files/upload_session/finish_batch", "files/get_thumbnail_batch"],
)
def test_no_token_is_refused(srv: Server, clean: None, route: str) -> None:
    r = srv.rpc(route, LAUNCHES.get(route, {"async_job_id": "dbjid:x", "entries": []}), token=None)
    assert r.status == 401, (r.status, r.text)
    assert r.json()["error"][".tag"] == "invalid_access_token"


@pytest.mark.parametrize("route", ["files/get_thumbnail", "files/get_thumbnail_v2"])
def test_no_token_is_refused_on_the_content_routes(srv: Server, route: str) -> None:
    arg = {"path": "/keep/a.txt", "resource": {".tag": "path", "path": "/keep/a.txt"}}
    r = srv.content(route, arg, token=None)
    assert r.status == 401, (r.status, r.text)


@pytest.mark.parametrize("launch", sorted(CHECKS))
def test_another_accounts_job_is_not_found(srv: Server, other: dict, clean: None, launch: str):
    theirs = other["jobs"][launch]
    for check in ALL_CHECKS:
        expect_409(srv.rpc(check, {"async_job_id": theirs}), "invalid_async_job_id")
    r = srv.rpc(CHECKS[launch], {"async_job_id": theirs}, token=other["token"])
    assert r.status == 200 and r.json()[".tag"] == "complete", r.text


@pytest.mark.parametrize("jid", ["dbjid:" + "A" * 32, "x", "é" * 50, "a" * 100_000])
def test_unknown_job_ids(srv: Server, clean: None, jid: str) -> None:
    for check in ALL_CHECKS:
        expect_409(srv.rpc(check, {"async_job_id": jid}), "invalid_async_job_id")


def test_another_accounts_paths_are_not_reachable(srv: Server, other: dict) -> None:
    ns = other["ns"]
    before = srv.snapshot(other["token"])
    jid = srv.ok(
        "files/delete_batch",
        {"entries": [{"path": f"ns:{ns}/theirs/a.txt"}, {"path": f"ns:{ns}"}]},
    )["async_job_id"]
    out = srv.ok("files/delete_batch/check", {"async_job_id": jid})["entries"]
    assert [e["failure"]["path_lookup"][".tag"] for e in out] == ["not_found", "not_found"]
    jid = srv.ok(
        "files/copy_batch_v2",
        {"entries": [{"from_path": f"ns:{ns}/theirs/a.txt", "to_path": "/stolen.txt"}]},
    )["async_job_id"]
    out = srv.ok("files/copy_batch/check_v2", {"async_job_id": jid})["entries"]
    assert out[0]["failure"]["relocation_error"]["from_lookup"][".tag"] == "not_found"
    r = srv.content(
        "files/get_thumbnail_v2", {"resource": {".tag": "path", "path": f"ns:{ns}/theirs/a.txt"}}
    )
    expect_409(r, "path", "not_found")
    srv.assert_unchanged(before, other["token"])


GARBLED = [
    ("files/copy_batch_v2", {"entries": "nope"}),
    ("files/copy_batch_v2", {"entries": []}),  # at least one
    ("files/copy_batch_v2", {"entries": [{"from_path": "/a"}]}),
    ("files/copy_batch_v2", {"entries": [{"from_path": "a", "to_path": "/b"}]}),  # no pattern
    ("files/copy_batch_v2", {"entries": [{"from_path": "/a", "to_path": "/b"}] * 1001}),
    ("files/move_batch_v2", {"entries": [["/a", "/b"]]}),
    ("files/move_batch_v2", {"entries": [{"from_path": "/a", "to_path": "/b"}], "autorename": 1}),
    ("files/delete_batch", {"entries": [{"path": "/a"}] * 1001}),
    ("files/delete_batch", {"entries": [{"path": "/a", "parent_rev": "zz"}]}),
    ("files/delete_batch", {"entries": [7]}),
    ("files/create_folder_batch", {"paths": ["/a", 7]}),
    ("files/create_folder_batch", {"paths": ["/a"] * 10_001}),
    ("files/create_folder_batch", {"paths": ["/a"], "force_async": "yes"}),
    ("files/upload_session/finish_batch", {"entries": [{"cursor": "x"}]}),
    ("files/upload_session/finish_batch", {"entries": {}}),
    ("files/delete_batch/check", {"async_job_id": 12}),
    ("files/delete_batch/check", {"async_job_id": ""}),
    ("files/copy_batch/check_v2", {}),
    ("files/get_thumbnail_batch", {"entries": [{"path": "/a.jpg", "size": "w99h99"}]}),
    ("files/get_thumbnail_batch", {"entries": [{"path": "/a.jpg", "format": "gif"}]}),
    ("files/get_thumbnail_batch", {"entries": [{"path": "/a.jpg", "mode": {".tag": 5}}]}),
    ("files/get_thumbnail_batch", {"entries": None}),
]


@pytest.mark.parametrize("route,arg", GARBLED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(GARBLED)])
def test_garbled_arguments_are_400_and_change_nothing(srv: Server, clean: None, route, arg):
    expect_400(srv.rpc(route, arg), route)


def test_broken_json_and_oversize_bodies(srv: Server, clean: None) -> None:
    for route in [*LAUNCHES, *ALL_CHECKS, "files/get_thumbnail_batch"]:
        expect_400(srv.rpc(route, body=b'{"entries": [}'), route)
    big = b'{"paths": ["/' + b"a" * (5 * 1024 * 1024) + b'"]}'
    expect_400(srv.rpc("files/create_folder_batch", body=big), "files/create_folder_batch")


def test_paths_no_one_can_name_fail_their_own_entry(srv: Server, clean: None) -> None:
    bad = ["/nul\x00", "/\ud800.txt", "/a/", "/" + "d/" * 300 + "x", "ns:99999999/x", "id:"]
    jid = srv.ok("files/delete_batch", {"entries": [{"path": p} for p in bad]})["async_job_id"]
    out = srv.ok("files/delete_batch/check", {"async_job_id": jid})["entries"]
    tags = [e["failure"]["path_lookup"][".tag"] for e in out]
    assert tags == ["malformed_path"] * 4 + ["not_found", "malformed_path"], out
    body = [{"from_path": "/keep/a.txt", "to_path": p} for p in bad]
    jid = srv.ok("files/move_batch_v2", {"entries": body})["async_job_id"]
    out = srv.ok("files/move_batch/check_v2", {"async_job_id": jid})["entries"]
    assert all(e[".tag"] == "failure" for e in out), out
    assert [e["failure"]["relocation_error"]["to"][".tag"] for e in out] == [
        *["malformed_path"] * 4,
        "no_write_permission",
        "malformed_path",
    ], out
    r = srv.ok("files/create_folder_batch", {"paths": bad})
    assert [e["failure"]["path"][".tag"] for e in r["entries"]] == [
        *["malformed_path"] * 4,
        "no_write_permission",
        "malformed_path",
    ], r


def test_thumbnail_arguments(srv: Server, clean: None) -> None:
    route = "files/get_thumbnail_v2"
    for arg in (
        {"resource": {".tag": "path"}},
        {"resource": {".tag": "url", "url": "x"}},
        {"resource": {".tag": "path", "path": "/keep/a.txt"}, "size": "w1h1"},
        {"resource": {".tag": "path", "path": "/keep/a.txt"}, "preserve_transparency": "no"},
    ):
        expect_400(srv.content(route, arg), route)
    expect_409(
        srv.rpc("files/get_thumbnail_batch", {"entries": [{"path": "/keep/a.txt"}] * 26}),
        "too_many_files",
    )


def test_a_blockserver_may_run_as_a_job_only_what_it_may_write() -> None:
    """The internal write route's whitelist looks inside a `RunJob`: a blockserver (holding
    the cluster token) can run a finish batch as a job, never an account or GC command."""
    from raftbox.api.metaclient import allowed_write
    from raftbox.meta import commands as C

    def job(inner) -> C.RunJob:
        return C.RunJob("dbjid:j", 1, "finish_batch", C.encode_command(inner))

    assert allowed_write(job(C.FinishBatch([])))
    assert not allowed_write(job(C.RemoveAccount("a@example.test")))
    assert not allowed_write(job(C.WriteBatch([C.Delete(1, "/a")])))
    assert not allowed_write(job(job(C.FinishBatch([]))))
    assert not allowed_write(C.RunJob("dbjid:j", 1, "k", b"\xc1"))
    assert not allowed_write(C.GcRelease("run", []))
