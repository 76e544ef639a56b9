"""The api layer's error hierarchy (`raftbox.api.errors`): each class's status, body, whose fault
it is and whether retrying helps; what the layers below raise maps onto it."""

import json

from aiohttp.web_protocol import RequestPayloadError

from raftbox.api import errors as E
from raftbox.meta import commands as C
from raftbox.raft.node import NodeError


def _json(resp) -> dict:
    assert resp.content_type == "application/json" and resp.charset is None
    return json.loads(resp.body)


def test_every_failure_says_whose_fault_and_whether_to_retry():
    cases = [
        (E.BadInput("r", "x"), 400, True, False),
        (E.AuthFailed(), 401, True, False),
        (E.ApiError(["path", "not_found"]), 409, True, False),
        (E.ApiError(["range", "not_satisfiable"], status=416), 416, True, False),
        (E.UploadWriteFailed(["path", "conflict", "file"]), 409, True, False),
        (E.RateLimited(3), 429, True, True),
        (E.Unavailable("no leader"), 503, False, True),
    ]
    for err, status, callers_fault, retry_helps in cases:
        assert isinstance(err, E.ApiFailure)
        assert (err.status, err.callers_fault, err.retry_helps) == (
            status,
            callers_fault,
            retry_helps,
        )
        assert err.response().status == status


def test_bodies_are_dropbox_shaped():
    assert E.BadInput("files/x", "path: bad \ud800").response().body == (
        b'Error in call to API function "files/x": path: bad \\ud800'
    )
    assert _json(E.AuthFailed("user_suspended").response()) == {
        "error_summary": "user_suspended/..",
        "error": {".tag": "user_suspended"},
    }
    assert _json(E.ApiError(["path", "conflict", "file"]).response()) == {
        "error_summary": "path/conflict/file/..",
        "error": {".tag": "path", "path": {".tag": "conflict", "conflict": {".tag": "file"}}},
    }
    # UploadError.path is the struct UploadWriteFailed: the reason sits next to the tag.
    assert _json(E.UploadWriteFailed(["path", "conflict", "file"]).response()) == {
        "error_summary": "path/conflict/file/..",
        "error": {
            ".tag": "path",
            "reason": {".tag": "conflict", "conflict": {".tag": "file"}},
            "upload_session_id": "",
        },
    }
    resp = E.RateLimited(7).response()
    assert resp.headers["Retry-After"] == "7"
    assert _json(resp)["error"] == {"reason": {".tag": "too_many_requests"}, "retry_after": 7}
    assert E.Unavailable("no leader").response().text == "service unavailable: no leader"


def test_lower_layers_map_onto_the_hierarchy():
    assert isinstance(E.from_lower("r", NodeError("no leader")), E.Unavailable)
    assert isinstance(E.from_lower("r", TimeoutError()), E.Unavailable)
    assert isinstance(E.from_lower("r", RequestPayloadError("bad chunk")), E.BadInput)
    assert E.from_lower("r", KeyError("bug")) is None  # a bug: 500, logged
    err = E.ApiError(["x"])
    assert E.from_lower("r", err) is err


def test_raise_meta():
    assert E.raise_meta(5) == 5
    for result, upload, cls in [
        (C.MetaError(["path", "not_found"]), False, E.ApiError),
        (C.MetaError(["path", "not_found"]), True, E.UploadWriteFailed),
        (C.MetaError(["payload_too_large"]), True, E.ApiError),
        ({"error": "not leader"}, False, E.Unavailable),
    ]:
        try:
            E.raise_meta(result, upload=upload)
        except E.ApiFailure as e:
            assert type(e) is cls
        else:
            raise AssertionError("not raised")
