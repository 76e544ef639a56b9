"""The chunker: FastCDC within its bounds, deterministic, the same whatever the feed sizes,
fixed 4 MiB when asked, the Dropbox content_hash in the same pass — and an insertion near the
start of a big file changes one block under CDC but every block under fixed chunking."""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc.cy import FastCDC

import raftbox.blocks.chunker as chunker_mod
from raftbox.blocks import CDC, FIXED, Chunker, Chunking, chunk_bytes, chunk_file
from raftbox.blocks.chunker import CompiledChunkerMissing

from .helpers import MiB, bid, dropbox_content_hash, rand_bytes

KiB = 1024
SMALL_CDC = Chunking.cdc(1 * KiB, 4 * KiB, 16 * KiB)  # same algorithm, sizes for fast properties
DATA_12M = rand_bytes(12 * MiB, seed=7)


def reference_cuts(data: bytes, c: Chunking) -> list[int]:
    """Chunk lengths straight from pyfastcdc over the whole buffer, or plain slicing."""
    if c.mode == "fixed":
        return [min(c.max_bytes, len(data) - o) for o in range(0, len(data), c.max_bytes)]
    cdc = FastCDC(c.avg_bytes, min_size=c.min_bytes, max_size=c.max_bytes)
    return [ch.length for ch in cdc.cut_buf(data)]


def streamed(data: bytes, cuts: list[int], c: Chunking) -> tuple[list, str]:
    ch = Chunker(c)
    out, prev = [], 0
    for cut in [*sorted(cuts), len(data)]:
        out += ch.feed(data[prev:cut])
        prev = cut
    out += ch.finish()
    return out, ch.content_hash()


def test_the_compiled_fastcdc_backend_is_the_one_in_use():
    assert chunker_mod.FastCDC.__module__ == "pyfastcdc.cy.fastcdc"
    assert chunker_mod.FastCDC is FastCDC


def test_start_up_fails_loudly_without_the_compiled_backend(monkeypatch):
    """Load the module afresh with pyfastcdc.cy unimportable: it must refuse, not crawl."""
    monkeypatch.setitem(sys.modules, "pyfastcdc.cy", None)
    monkeypatch.setitem(sys.modules, "pyfastcdc.cy.fastcdc", None)
    name = "raftbox.blocks._chunker_without_cy"
    spec = importlib.util.spec_from_file_location(name, chunker_mod.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    with pytest.raises(ImportError, match="compiled backend") as e:
        spec.loader.exec_module(module)
    # the class of the freshly loaded module, a twin of the one we import
    assert type(e.value).__name__ == CompiledChunkerMissing.__name__


def test_cdc_chunks_stay_within_bounds_and_average_about_one_mib():
    chunks = chunk_bytes(DATA_12M + rand_bytes(20 * MiB, seed=8))
    sizes = [c.size for c in chunks]
    assert all(CDC.min_bytes <= s <= CDC.max_bytes for s in sizes[:-1])
    assert 0 < sizes[-1] <= CDC.max_bytes
    assert 0.75 * MiB <= statistics.mean(sizes) <= 2 * MiB
    assert b"".join(c.data for c in chunks) == DATA_12M + rand_bytes(20 * MiB, seed=8)
    assert [c.offset for c in chunks] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert all(c.id == bid(c.data) for c in chunks)


def test_cdc_boundaries_are_deterministic_and_match_pyfastcdc():
    a = [c.size for c in chunk_bytes(DATA_12M)]
    b = [c.size for c in chunk_bytes(DATA_12M)]
    assert a == b == reference_cuts(DATA_12M, CDC)
    assert len(a) > 5


def test_fixed_chunking_cuts_4_mib_blocks():
    data = DATA_12M[: 10 * MiB + 5]
    assert [c.size for c in chunk_bytes(data, FIXED)] == [4 * MiB, 4 * MiB, 2 * MiB + 5]
    assert [c.size for c in chunk_bytes(DATA_12M[: 8 * MiB], FIXED)] == [4 * MiB, 4 * MiB]
    assert Chunking.parse("fixed") == FIXED and Chunking.parse("cdc") == CDC


@pytest.mark.parametrize("chunking", [CDC, FIXED], ids=["cdc", "fixed"])
@pytest.mark.parametrize("size", [0, 1, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 9 * MiB + 3])
def test_content_hash_is_dropboxs(chunking, size):
    data = DATA_12M[:size]
    ch = Chunker(chunking)
    chunks = ch.feed(data) + ch.finish()
    assert ch.content_hash() == dropbox_content_hash(data)
    assert ch.size == size
    assert len(ch.window_digests()) == -(-size // (4 * MiB))
    assert (chunks == []) == (size == 0)


def test_an_empty_file_has_no_blocks_and_the_empty_content_hash():
    ch = Chunker()
    assert ch.feed(b"") == [] and ch.finish() == []
    assert ch.content_hash() == bid(b"")


def test_inserting_100_bytes_near_the_start_of_64_mib_changes_one_cdc_block(capsys):
    """The issue's measurement, on our chunker: 17 of 17 fixed blocks change, 1 under CDC."""
    original = rand_bytes(64 * MiB, seed=64)
    edited = original[:1000] + rand_bytes(100, seed=65) + original[1000:]
    changed = {}
    for name, chunking in (("fixed", FIXED), ("cdc", CDC)):
        before = {c.id for c in chunk_bytes(original, chunking)}
        after = [c.id for c in chunk_bytes(edited, chunking)]
        changed[name] = (sum(1 for i in after if i not in before), len(after))
    with capsys.disabled():
        print(f"\n  100-byte insertion, 64 MiB: blocks changed (new/total) {changed}")
    assert changed["fixed"] == (17, 17)
    assert changed["cdc"][0] == 1
    assert 40 <= changed["cdc"][1] <= 80


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=40_000) | st.integers(0, 200_000).map(rand_bytes),
    cuts=st.lists(st.integers(0, 200_000), max_size=12),
    chunking=st.sampled_from([SMALL_CDC, Chunking.fixed(5000)]),
)
def test_streaming_equals_one_shot_for_any_feed_sizes(data, cuts, chunking):
    cuts = [c for c in cuts if c <= len(data)]
    chunks, content_hash = streamed(data, cuts, chunking)
    assert [c.size for c in chunks] == reference_cuts(data, chunking)
    assert b"".join(c.data for c in chunks) == data
    assert all(c.id == bid(c.data) for c in chunks)
    assert content_hash == dropbox_content_hash(data)


@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(0, len(DATA_12M)), max_size=6))
def test_streaming_equals_one_shot_with_production_sizes(cuts):
    chunks, content_hash = streamed(DATA_12M, cuts, CDC)
    assert [c.size for c in chunks] == reference_cuts(DATA_12M, CDC)
    assert content_hash == dropbox_content_hash(DATA_12M)


def test_memory_stays_bounded_while_streaming_a_large_input():
    ch = Chunker(CDC)
    piece = rand_bytes(1 * MiB, seed=9)
    tracemalloc.start()
    try:
        for _ in range(32):
            for c in ch.feed(piece):
                del c
        ch.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ch.size == 32 * MiB
    assert peak < 2 * CDC.max_bytes + 2 * MiB, peak  # the chunk being handed out, one piece


def test_chunk_file_matches_chunk_bytes(tmp_path):
    path = tmp_path / "f.bin"
    data = DATA_12M[: 7 * MiB + 11]
    path.write_bytes(data)
    cf = chunk_file(path)
    chunks = list(cf)
    assert [(c.id, c.size) for c in chunks] == [(c.id, c.size) for c in chunk_bytes(data)]
    assert cf.blocks == [(c.id, c.size) for c in chunks]
    assert cf.size == len(data) and cf.content_hash == dropbox_content_hash(data)


def test_a_chunker_is_single_use():
    ch = Chunker()
    ch.feed(b"abc")
    with pytest.raises(RuntimeError):
        ch.content_hash()
    ch.finish()
    with pytest.raises(RuntimeError):
        ch.feed(b"more")
    with pytest.raises(RuntimeError):
        ch.finish()


def test_chunking_settings_are_validated():
    for bad in (
        lambda: Chunking("cdc", 10, 20, 30),
        lambda: Chunking("cdc", 1000, 500, 2000),
        lambda: Chunking("fixed", 1, 2, 3),
        lambda: Chunking("zigzag", 1, 1, 1),
        lambda: Chunking.parse("rolling"),
    ):
        with pytest.raises(ValueError):
            bad()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=40_000) | st.integers(0, 200_000).map(rand_bytes),
    reads=st.lists(st.integers(1, 70_000), min_size=1, max_size=12),
    chunking=st.sampled_from([SMALL_CDC, Chunking.fixed(5000)]),
)
def test_feed_from_equals_one_shot_for_any_read_sizes(data, reads, chunking):
    """Reading straight into the chunker's buffer cuts exactly as `chunk_bytes` does, whatever
    sizes the reads ask for and however short they come back."""
    src = memoryview(data)
    pos = 0
    k = 0

    def readinto(view: memoryview) -> int:
        nonlocal pos, k
        n = min(len(view), reads[k % len(reads)], len(src) - pos)  # short reads too
        k += 1
        view[:n] = src[pos : pos + n]
        pos += n
        return n

    ch = Chunker(chunking)
    chunks = []
    while True:
        got, n = ch.feed_from(readinto, reads[k % len(reads)] * 2)
        chunks += got
        if n == 0 and pos == len(src):
            break
    chunks += ch.finish()
    assert [c.size for c in chunks] == reference_cuts(data, chunking)
    assert b"".join(c.data for c in chunks) == data
    assert all(c.id == bid(c.data) for c in chunks)
    assert ch.content_hash() == dropbox_content_hash(data)


def test_feed_from_reads_a_file_in_production_sizes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA_12M)
    ch = Chunker(CDC)
    chunks = []
    with open(path, "rb", buffering=0) as f:
        while True:
            got, n = ch.feed_from(f.readinto, 4 * MiB)
            chunks += got
            if not n:
                break
    chunks += ch.finish()
    assert [c.size for c in chunks] == reference_cuts(DATA_12M, CDC)
    assert ch.content_hash() == dropbox_content_hash(DATA_12M)
