"""raft-kv's state machine: the snapshot image made off the loop (`begin_snapshot`)."""

from __future__ import annotations

import msgspec
import pytest

from raftbox.raft import kv
from raftbox.raft.kv import KVStateMachine, Put
from raftbox.raft.sessions import Command


def put(sm: KVStateMachine, index: int, key: bytes, value: bytes) -> None:
    payload = msgspec.msgpack.encode(Put(key, value))
    sm.apply(index, Command(client_id=7, seq=index, ack_below=index, stamp_ms=1, payload=payload))


@pytest.mark.parametrize("keys", [0, 1, 15, 16, 1023, 1024, 1025, 3000, 65535, 65536, 70000])
def test_the_image_is_the_bytes_of_snapshot(keys: int) -> None:
    """Same bytes as `snapshot()`, whatever the map header's size and however the keys fall
    into chunks, so `restore()` reads either."""
    sm = KVStateMachine()
    sm.data = {b"k%d" % i: b"v" * (i % 40) for i in range(keys)}
    put(sm, 1, b"last", b"x")
    assert sm.begin_snapshot()() == sm.snapshot()


def test_the_image_is_the_state_when_begin_snapshot_was_called() -> None:
    sm = KVStateMachine()
    for i in range(1, 2000):
        put(sm, i, b"k%d" % i, b"old")
    image_of = sm.begin_snapshot()
    expected = sm.snapshot()
    put(sm, 2000, b"k1", b"new")  # apply goes on before the image is made
    put(sm, 2001, b"k9999", b"added")
    assert image_of() == expected
    again = KVStateMachine()
    again.restore(image_of())
    assert again.applied_index() == 1999 and again.data[b"k1"] == b"old"
    assert b"k9999" not in again.data


def test_the_image_is_encoded_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No single encode call covers the whole map (each holds the GIL from start to end)."""
    sizes: list[int] = []
    real = msgspec.msgpack.encode

    def counting(obj):  # type: ignore[no-untyped-def]
        if isinstance(obj, dict):
            sizes.append(len(obj))
        return real(obj)

    sm = KVStateMachine()
    sm.data = {b"k%d" % i: b"v" for i in range(5000)}
    image_of = sm.begin_snapshot()
    monkeypatch.setattr(kv.msgspec.msgpack, "encode", counting)
    image_of()
    assert sum(sizes) == 5000 and max(sizes) <= kv._IMAGE_CHUNK_KEYS
