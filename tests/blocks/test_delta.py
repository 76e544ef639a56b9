"""The block delta codec (`raftbox.blocks.delta`): round trips, sizes, bounds, base picking."""

from __future__ import annotations

import random

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from raftbox.blocks import delta as D

MiB = 1024 * 1024


def _rand(r: random.Random, n: int) -> bytes:
    return r.randbytes(n)


def test_a_100_byte_insertion_into_a_1_mib_block_is_a_few_kb() -> None:
    r = random.Random(1)
    base = _rand(r, MiB)
    new = base[:400_000] + _rand(r, 100) + base[400_000:]
    sig = D.signature(base)
    assert len(sig) < 8 * 1024  # ~12 bytes per ~2.5 KiB piece
    delta = D.make_delta(sig, new, 4 * MiB)
    assert len(delta) < 12 * 1024  # the changed piece(s) and a few ops
    assert D.worth_it(len(delta), len(new))
    assert D.apply_delta(base, delta, 4 * MiB) == new


def test_unrelated_data_is_not_worth_a_delta_but_still_round_trips() -> None:
    r = random.Random(2)
    base, new = _rand(r, 300_000), _rand(r, 300_000)
    delta = D.make_delta(D.signature(base), new, 4 * MiB)
    assert not D.worth_it(len(delta), len(new))
    assert D.apply_delta(base, delta, 4 * MiB) == new


def test_empty_blocks() -> None:
    assert D.signature(b"") == b""
    assert D.apply_delta(b"abc", D.make_delta(b"", b"", MiB), MiB) == b""
    assert D.apply_delta(b"", D.make_delta(b"", b"xyz", MiB), MiB) == b"xyz"


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 200_000),
    edits=st.lists(
        st.tuples(st.sampled_from("idr"), st.floats(0, 1), st.integers(1, 5000)), max_size=4
    ),
)
def test_any_edit_round_trips(seed: int, size: int, edits: list) -> None:
    r = random.Random(seed)
    base = _rand(r, size)
    new = bytearray(base)
    for kind, where, n in edits:
        at = int(where * len(new))
        if kind == "i":
            new[at:at] = _rand(r, n)
        elif kind == "d":
            del new[at : at + n]
        else:
            new[at : at + n] = _rand(r, len(new[at : at + n]))
    new = bytes(new)
    delta = D.make_delta(D.signature(base), new, 4 * MiB)
    assert D.apply_delta(base, delta, 4 * MiB) == new


def _z(ops: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(ops)


@pytest.mark.parametrize(
    "delta,why",
    [
        (b"garbage", "not a zstd frame"),
        (_z(b"Q"), "unknown op"),
        (_z(D._COPY.pack(b"C", 90, 11)), "a copy of"),
        (_z(D._COPY.pack(b"C", 0, 0)), "a copy of"),
        (_z(D._COPY.pack(b"C", 0, 1)[:5]), "cut short"),
        (_z(D._LIT.pack(b"L", 10) + b"abc"), "cut short"),
        (_z(D._LIT.pack(b"L", 0)), "cut short"),
        (_z(D._COPY.pack(b"C", 0, 100) * 11), "more than 1000"),
        (_z(b"\0" * 20_000), "op stream exceeds"),
    ],
)
def test_bad_deltas_are_refused_within_bounds(delta: bytes, why: str) -> None:
    with pytest.raises(D.DeltaError, match=why):
        D.apply_delta(b"b" * 100, delta, 1000)


def test_a_frame_asking_for_a_huge_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=27)  # 128 MiB
    frame = zstandard.ZstdCompressor(compression_params=params).compress(b"L" + b"\0" * (40 * MiB))
    with pytest.raises(D.DeltaError, match="not a zstd frame"):
        D.apply_delta(b"b" * 100, frame, 4 * MiB)


def test_bad_signatures_are_refused() -> None:
    with pytest.raises(D.DeltaError, match="whole entries"):
        D.make_delta(b"x" * 13, b"new", MiB)
    with pytest.raises(D.DeltaError, match="not empty"):
        D.make_delta(D.SIG_ENTRY.pack(b"h" * 8, 0), b"new", MiB)
    with pytest.raises(D.DeltaError, match="more than"):
        D.make_delta(D.SIG_ENTRY.pack(b"h" * 8, MiB + 1), b"new", MiB)


def test_pick_bases_takes_the_old_block_over_the_same_bytes() -> None:
    old = [("a", 100), ("b", 100), ("c", 100)]
    # an insertion in b: b' is 150 bytes, a and c unchanged
    new = [("a", 100), ("b2", 150), ("c", 100)]
    assert D.pick_bases(old, new, ["b2"]) == {"b2": "b"}
    # an append: the last block changed, and a block past the old end takes the old last one
    assert D.pick_bases(old, [("a", 100), ("b", 100), ("c2", 100), ("d", 50)], ["c2", "d"]) == {
        "c2": "c",
        "d": "c",
    }
    # an old block the new version still has is never a base (it moved, not changed)
    assert D.pick_bases(old, [("x", 100), ("a", 100), ("c", 100)], ["x"]) == {"x": "b"}
    # part of a blocklist, starting at byte 200
    assert D.pick_bases(old, [("c2", 100)], ["c2"], new_start=200) == {"c2": "c"}
    assert D.pick_bases([], new, ["b2"]) == {}
    assert D.pick_bases(old, new, []) == {}
