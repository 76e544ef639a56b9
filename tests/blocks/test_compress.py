"""Compression: zstd per block only when it saves at least 5%; the id is of the raw bytes;
reads verify after decompression; raw and compressed blocks coexist in one store."""

from __future__ import annotations

import pytest
import zstandard

from raftbox.blocks import (
    BlockMismatch,
    CompressedStore,
    CorruptBlock,
    LocalStore,
    MemoryStore,
    codec,
)

from .helpers import bid, rand_bytes, run, text_bytes

TEXT = text_bytes(500_000, seed=1)
NOISE = rand_bytes(500_000, seed=2)


def test_incompressible_data_is_stored_raw():
    inner = MemoryStore()
    s = CompressedStore(inner)
    run(lambda: s.put(bid(NOISE), NOISE))
    assert inner.blocks[bid(NOISE)] == NOISE
    assert run(lambda: s.stored_size(bid(NOISE))) == len(NOISE)


def test_compressible_data_is_stored_as_a_smaller_zstd_frame():
    inner = MemoryStore()
    s = CompressedStore(inner, level=3)
    run(lambda: s.put(bid(TEXT), TEXT))
    stored = inner.blocks[bid(TEXT)]
    assert stored[:4] == codec.ZSTD_MAGIC
    assert run(lambda: s.stored_size(bid(TEXT))) == len(stored) < 0.5 * len(TEXT)
    assert run(lambda: s.get(bid(TEXT))) == TEXT
    assert run(lambda: inner.get(bid(TEXT))) == TEXT  # any store reads either form


def test_a_saving_under_five_percent_is_not_worth_it():
    mostly_noise = rand_bytes(100_000, seed=3) + bytes(3000)  # ~3% zeros
    inner = MemoryStore()
    run(lambda: CompressedStore(inner).put(bid(mostly_noise), mostly_noise))
    assert inner.blocks[bid(mostly_noise)] == mostly_noise
    half = rand_bytes(50_000, seed=4) + bytes(50_000)
    run(lambda: CompressedStore(inner).put(bid(half), half))
    assert inner.blocks[bid(half)][:4] == codec.ZSTD_MAGIC


def test_the_level_is_configurable():
    sizes = {}
    for level in (1, 19):
        inner = MemoryStore()
        run(
            lambda level=level, inner=inner: CompressedStore(inner, level=level).put(
                bid(TEXT), TEXT
            )
        )
        sizes[level] = len(inner.blocks[bid(TEXT)])
    assert sizes[19] < sizes[1]
    with pytest.raises(ValueError):
        CompressedStore(MemoryStore(), level=0)


def test_a_valid_frame_of_other_bytes_is_corrupt_not_served():
    """Decompression succeeding proves nothing: the decompressed bytes must hash to the id."""
    inner = MemoryStore()
    run(lambda: CompressedStore(inner).put(bid(TEXT), TEXT))
    other = zstandard.ZstdCompressor().compress(TEXT[:-1] + b"!")
    inner.blocks[bid(TEXT)] = other
    with pytest.raises(CorruptBlock):
        run(lambda: inner.get(bid(TEXT)))


def test_a_frame_whose_contents_do_not_match_the_id_is_refused_on_put():
    frame = zstandard.ZstdCompressor().compress(TEXT)
    with pytest.raises(BlockMismatch):
        run(lambda: MemoryStore().put(bid(TEXT[:-1]), frame))


def test_a_raw_block_that_is_itself_a_zstd_file_reads_back_as_itself(tmp_path):
    """The first block of a .zst file starts with the zstd magic but is stored raw."""
    zst_file = zstandard.ZstdCompressor().compress(TEXT)
    for store in (MemoryStore(), LocalStore(str(tmp_path)), CompressedStore(MemoryStore())):
        run(lambda store=store: store.put(bid(zst_file), zst_file))
        assert run(lambda store=store: store.get(bid(zst_file))) == zst_file


def test_a_frame_claiming_a_huge_content_size_is_not_decompressed():
    inner = MemoryStore()
    run(lambda: CompressedStore(inner).put(bid(TEXT), TEXT))
    frame = bytearray(inner.blocks[bid(TEXT)])
    assert zstandard.frame_content_size(bytes(frame)) == len(TEXT)
    huge = zstandard.ZstdCompressor().compress(bytes(64 * 1024 * 1024))
    inner.blocks[bid(TEXT)] = huge  # valid frame, 64 MiB of content: over MAX_BLOCK_BYTES
    with pytest.raises(CorruptBlock):
        run(lambda: inner.get(bid(TEXT)))


def test_raw_and_compressed_blocks_coexist_in_one_directory(tmp_path):
    plain = LocalStore(str(tmp_path))
    compressing = CompressedStore(LocalStore(str(tmp_path)))
    a, b = text_bytes(100_000, seed=5), text_bytes(100_000, seed=6)

    async def go():
        await plain.put(bid(a), a)  # written before compression was switched on
        await compressing.put(bid(b), b)
        assert await compressing.get(bid(a)) == a
        assert await plain.get(bid(b)) == b
        assert await compressing.stored_size(bid(a)) == len(a)
        assert await compressing.stored_size(bid(b)) < len(b) / 2

    run(go)


def test_a_duplicate_put_costs_no_compression(monkeypatch):
    inner = MemoryStore()
    s = CompressedStore(inner)
    run(lambda: s.put(bid(TEXT), TEXT))
    calls = []
    monkeypatch.setattr(codec, "compress", lambda *a: calls.append(a))
    assert run(lambda: s.put(bid(TEXT), TEXT)) is False
    assert calls == [] and inner.writes == 1
    with pytest.raises(BlockMismatch):  # and a known id still checks the bytes
        run(lambda: s.put(bid(TEXT), TEXT[:-1]))


def test_random_data_is_judged_from_a_sample_without_compressing_the_whole(monkeypatch):
    """A big incompressible block costs the compression of a 64 KiB sample, not of itself."""
    noise = rand_bytes(1_000_000, seed=5)
    sizes: list[int] = []
    real = codec._compressor

    class Counting:
        def __init__(self, c):
            self.c = c

        def compress(self, data):
            sizes.append(len(data))
            return self.c.compress(data)

    monkeypatch.setattr(codec, "_compressor", lambda level: Counting(real(level)))
    inner = MemoryStore()
    run(lambda: CompressedStore(inner).put(bid(noise), noise))
    assert inner.blocks[bid(noise)] == noise
    assert sizes == [codec.SAMPLE_SLICES * codec.SAMPLE_SLICE_BYTES]
    sizes.clear()
    text = text_bytes(1_000_000, seed=6)  # a sample that compresses: the whole is compressed
    run(lambda: CompressedStore(inner).put(bid(text), text))
    assert sizes == [codec.SAMPLE_SLICES * codec.SAMPLE_SLICE_BYTES, len(text)]
    assert inner.blocks[bid(text)][:4] == codec.ZSTD_MAGIC


def test_the_sample_spans_the_block_from_its_start_to_its_end():
    """A compressible stretch of a seventh of the block is seen wherever it lies."""
    n = 1_000_000
    for where in range(0, n - n // 7, n // 20):
        data = bytearray(rand_bytes(n, seed=7))
        data[where : where + n // 7] = bytes(n // 7)
        assert codec.worth_trying(bytes(data), 3, 0.05), where
    assert not codec.worth_trying(rand_bytes(n, seed=8), 3, 0.05)
    assert codec.worth_trying(rand_bytes(100_000, seed=9), 3, 0.05)  # small: always tried
