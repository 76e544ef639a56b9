"""Block deltas (issue 16): `raftbox/blocks/signatures` and `raftbox/blocks/put_delta` attacked.

- A base block of another account is exactly an unknown base: no signature, `base_unknown` in
  the same answer, nothing stored — so the routes tell nobody what another account stored.
- A delta that rebuilds something else than the block it names is refused (400) and stores
  nothing: neither in the store nor in the namespace's rights.
- Garbled, oversize and out-of-bounds deltas, malformed ids, too many frames: 400, nothing
  stored; no token: 401. The server logs no error for any of them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
import zstandard

from raftbox.blocks import delta as D
from raftbox.blocks.native import DELTA_FRAME, MAX_DELTA_BLOCKS, MAX_FRAME_BLOCK_BYTES

from .badinput import Server, expect_400

MiB = 1024 * 1024
PUT = "raftbox/blocks/put_delta"
SIGS = "raftbox/blocks/signatures"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("block-deltas"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _stored(srv: Server, block_id: str) -> bool:
    return any(p.is_file() for p in Path(srv.up.data, "blocks").rglob(block_id + "*"))


def _has(srv: Server, block_id: str, token: str = "") -> bool:
    return block_id in srv.ok("raftbox/blocks/has", {"ids": [block_id]}, token)["have"]


def _frames(*items: tuple[str, str, bytes]) -> bytes:
    return b"".join(
        DELTA_FRAME.pack(len(d), bytes.fromhex(n), bytes.fromhex(b)) + d for n, b, d in items
    )


def _put(srv: Server, body: bytes, token: str | None = ""):
    return srv.raw(PUT, {"Content-Type": "application/octet-stream"}, body, token=token)


def _one_block_file(srv: Server, path: str, token: str = "") -> tuple[str, bytes]:
    """Upload a file small enough to be one block: (its block id, its bytes)."""
    data = os.urandom(200 * 1024)  # under the 256 KiB minimum block
    srv.upload(path, data, token=token)
    (block,) = srv.ok("raftbox/blocks/list", {"path": path}, token)["blocks"]
    assert block == [_sha(data), len(data)]
    return block[0], data


def _edited(base: bytes) -> bytes:
    return base[:1000] + os.urandom(100) + base[1000:]


def test_own_base_rebuilds_and_stores_a_normal_block(srv: Server) -> None:
    base_id, base = _one_block_file(srv, "/own.bin")
    new = _edited(base)
    sigs = srv.ok(SIGS, {"ids": [base_id]})["signatures"]
    sig = base64.b64decode(sigs[base_id])
    assert sig == D.signature(base)
    delta = D.make_delta(sig, new, MAX_FRAME_BLOCK_BYTES)
    assert len(delta) < len(new) // 10
    r = _put(srv, _frames((_sha(new), base_id, delta)))
    assert r.status == 200, r.text
    assert r.json() == {"received": 1, "base_unknown": []}
    assert _has(srv, _sha(new)) and _stored(srv, _sha(new))
    out = srv.ok("raftbox/commit_batch", {"entries": [
        {"path": "/own-2.bin", "blocks": [[_sha(new), len(new)]], "mode": "add"}]})  # fmt: skip
    assert out["entries"][0][".tag"] == "success", out
    r = srv.content("files/download", {"path": "/own-2.bin"})
    assert r.status == 200 and r.body == new


def test_another_accounts_base_is_an_unknown_base(srv: Server) -> None:
    other = srv.new_account("other")
    theirs_id, theirs = _one_block_file(srv, "/theirs.bin", token=other)
    unknown_id = _sha(os.urandom(64))
    before, mark = srv.snapshot(), srv.log_mark()
    # no signature for it, the same answer as for a block nobody stored
    for bid in (theirs_id, unknown_id):
        assert srv.ok(SIGS, {"ids": [bid]}) == {"signatures": {}}
    # a delta against it: base_unknown, exactly as against an unknown base; nothing stored
    new = _edited(theirs)
    delta = D.make_delta(D.signature(theirs), new, MAX_FRAME_BLOCK_BYTES)
    answers = []
    for bid in (theirs_id, unknown_id):
        r = _put(srv, _frames((_sha(new), bid, delta)))
        assert r.status == 200, r.text
        answers.append(r.json())
    assert answers[0] == answers[1] == {"received": 0, "base_unknown": [_sha(new)]}
    assert not _stored(srv, _sha(new)) and not _has(srv, _sha(new))
    assert not _has(srv, _sha(new), token=other)
    srv.assert_unchanged(before)
    srv.assert_log_clean(mark)


def test_a_delta_that_rebuilds_another_block_is_refused_and_stores_nothing(srv: Server) -> None:
    base_id, base = _one_block_file(srv, "/mismatch.bin")
    good_new, claimed = _edited(base), _edited(base)  # two different edits
    delta = D.make_delta(D.signature(base), good_new, MAX_FRAME_BLOCK_BYTES)
    # a valid frame first: the request is all or nothing, so it is not stored either
    ok_new = _edited(base)
    ok_delta = D.make_delta(D.signature(base), ok_new, MAX_FRAME_BLOCK_BYTES)
    before, mark = srv.snapshot(), srv.log_mark()
    r = _put(srv, _frames((_sha(ok_new), base_id, ok_delta), (_sha(claimed), base_id, delta)))
    expect_400(r, PUT)
    assert "rebuilds" in r.text
    for bid in (_sha(claimed), _sha(good_new), _sha(ok_new)):
        assert not _stored(srv, bid) and not _has(srv, bid)
    srv.assert_unchanged(before)
    srv.assert_log_clean(mark)


def _zstd(ops: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(ops)


@pytest.mark.parametrize(
    "case",
    ["not-zstd", "unknown-op", "copy-past-base", "empty-copy", "short-literal", "too-big-output",
     "truncated-frame", "oversize-length", "zero-length", "too-many-frames"],
)  # fmt: skip
def test_garbled_and_oversize_deltas_are_400_and_store_nothing(srv: Server, case: str) -> None:
    base_id, base = _one_block_file(srv, f"/garbled-{case}.bin")
    new_id = _sha(b"never built " + case.encode())
    copy = D._COPY.pack
    body = {
        "not-zstd": lambda: _frames((new_id, base_id, b"definitely not zstd")),
        "unknown-op": lambda: _frames((new_id, base_id, _zstd(b"X" + b"\0" * 8))),
        "copy-past-base": lambda: _frames((new_id, base_id, _zstd(copy(b"C", len(base) - 10, 11)))),
        "empty-copy": lambda: _frames((new_id, base_id, _zstd(copy(b"C", 0, 0)))),
        "short-literal": lambda: _frames((new_id, base_id, _zstd(D._LIT.pack(b"L", 50) + b"x"))),
        "too-big-output": lambda: _frames(
            (
                new_id,
                base_id,
                _zstd(copy(b"C", 0, len(base)) * (MAX_FRAME_BLOCK_BYTES // len(base) + 1)),
            )
        ),
        "truncated-frame": lambda: _frames((new_id, base_id, b"x" * 100))[:-10],
        "oversize-length": lambda: DELTA_FRAME.pack(
            MAX_FRAME_BLOCK_BYTES + 1, bytes.fromhex(new_id), bytes.fromhex(base_id)
        ),
        "zero-length": lambda: DELTA_FRAME.pack(0, bytes.fromhex(new_id), bytes.fromhex(base_id)),
        "too-many-frames": lambda: _frames(  # unknown bases: only the count can refuse it
            *[(new_id, _sha(b"no such base"), b"x")] * (MAX_DELTA_BLOCKS + 1)
        ),
    }[case]()
    before, mark = srv.snapshot(), srv.log_mark()
    expect_400(_put(srv, body), PUT)
    assert not _stored(srv, new_id) and not _has(srv, new_id)
    srv.assert_unchanged(before)
    srv.assert_log_clean(mark)


def test_no_token_and_malformed_ids(srv: Server) -> None:
    base_id, base = _one_block_file(srv, "/auth.bin")
    new = _edited(base)
    delta = D.make_delta(D.signature(base), new, MAX_FRAME_BLOCK_BYTES)
    r = _put(srv, _frames((_sha(new), base_id, delta)), token=None)
    assert r.status == 401 and not _stored(srv, _sha(new))
    assert srv.rpc(SIGS, {"ids": [base_id]}, token=None).status == 401
    expect_400(srv.rpc(SIGS, {"ids": ["ABC"]}), SIGS)
    expect_400(srv.rpc(SIGS, {"ids": [base_id] * 65}), SIGS)
    expect_400(srv.rpc(SIGS, {"ids": "nope"}), SIGS)
