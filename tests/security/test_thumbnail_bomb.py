"""Thumbnails against hostile images: a decompression bomb (a small file that declares a huge
picture: PNG, GIF, JPEG) is refused from its header, before Pillow decodes or allocates the
picture; a decode that outlives its deadline answers `conversion_error` without holding more
than the bounded number of workers; and through the server a bomb is a clean 409
`unsupported_image` that leaves the server serving thumbnails."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import pytest
from PIL import Image, ImageFile

from raftbox.api import imaging
from raftbox.api.thumbnails import Renderer

from .badinput import Server, expect_409


def png_declaring(w: int, h: int) -> bytes:
    """A valid-looking PNG header for a `w`x`h` RGB picture, with one tiny compressed row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * min(w, 1024)), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_declaring(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (8, 8)).save(out, "GIF")
    data = bytearray(out.getvalue())
    data[6:10] = struct.pack("<HH", w, h)  # the logical screen
    i = data.index(b"\x2c")  # the image descriptor
    data[i + 5 : i + 9] = struct.pack("<HH", w, h)
    return bytes(data)


def jpeg_declaring(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    i = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


BOMBS = {
    "huge.png": png_declaring(100_000, 100_000),  # 10^10 pixels: 30 GB decoded
    "under-pillow-limit.png": png_declaring(10_000, 6_000),  # 60 MP: over our cap only
    "huge.gif": gif_declaring(65_535, 65_535),
    "huge.jpg": jpeg_declaring(65_000, 65_000),
}


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels fails the test (the header is all a bomb may cost)."""

    def load(self, *a, **kw):
        raise AssertionError(f"decoded a {self.size} picture")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(Image.Image, "load", load)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_is_refused_from_its_header_without_decoding(name: str, no_decoding) -> None:
    assert len(BOMBS[name]) < 2000
    with pytest.raises(imaging.ThumbnailFailure) as e:
        imaging.render(BOMBS[name], name, imaging.Spec("w2048h1536", "png", "original"))
    assert e.value.tag == "unsupported_image"


def test_the_pixel_cap_is_the_callers_bound() -> None:
    img = io.BytesIO()
    Image.new("RGB", (100, 100)).save(img, "PNG")
    with pytest.raises(imaging.ThumbnailFailure) as e:
        imaging.render(img.getvalue(), "a.png", imaging.Spec(), pixels_max=9_999)
    assert e.value.tag == "unsupported_image"
    assert imaging.render(img.getvalue(), "a.png", imaging.Spec(), pixels_max=10_000)


def test_a_source_over_20_mb_is_refused_before_decoding(no_decoding) -> None:
    data = png_declaring(10, 10) + b"\0" * imaging.SOURCE_MAX_BYTES
    with pytest.raises(imaging.ThumbnailFailure) as e:
        imaging.render(data, "big.png", imaging.Spec())
    assert e.value.tag == "unsupported_image"


def test_a_decode_past_its_deadline_is_a_conversion_error_and_keeps_its_worker() -> None:
    """A decode that never ends (simulated) answers conversion_error at the deadline; it keeps
    the only worker until it ends, so the next request waits for a worker, not for a second
    thread; once it ends the worker serves again."""
    release = threading.Event()
    started = threading.Event()

    def stuck(data, name, spec, pixels_max):
        started.set()
        if data == b"slow":
            release.wait(30)
        return b"thumb:" + data

    async def main() -> None:
        r = Renderer(workers_max=1, deadline_s=0.2, render=stuck)
        try:

            async def read(data: bytes):
                return data

            with pytest.raises(imaging.ThumbnailFailure) as e:
                await r.thumbnail(("h1",), "a.jpg", lambda: read(b"slow"), imaging.Spec())
            assert e.value.tag == "conversion_error" and started.is_set()
            with pytest.raises(imaging.ThumbnailFailure) as e:  # the worker is still busy
                await r.thumbnail(("h2",), "b.jpg", lambda: read(b"fast"), imaging.Spec())
            assert e.value.tag == "conversion_error" and r.renders == 1
            release.set()
            got = None
            for _ in range(100):  # the stuck decode ends; its worker comes back
                try:
                    got = await r.thumbnail(("h2",), "b.jpg", lambda: read(b"fast"), imaging.Spec())
                    break
                except imaging.ThumbnailFailure:
                    continue
            assert got == b"thumb:fast"
            assert await r.thumbnail(("h2",), "b.jpg", lambda: read(b"x"), imaging.Spec()) == got
            assert r.renders == 2  # the second answer came from the cache
        finally:
            release.set()
            r.close()

    asyncio.run(main())


# -- through the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("thumbnail-bomb"))
    try:
        s.start()
        for name, data in BOMBS.items():
            s.upload(f"/bombs/{name}", data)
        good = io.BytesIO()
        Image.new("RGB", (300, 200), (0, 128, 255)).save(good, "JPEG")
        s.upload("/ok.jpg", good.getvalue())
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_through_the_server_is_unsupported_image(srv: Server, clean: None, name: str):
    arg = {"resource": {".tag": "path", "path": f"/bombs/{name}"}, "size": "w2048h1536"}
    expect_409(srv.content("files/get_thumbnail_v2", arg), "unsupported_image")
    r = srv.content("files/get_thumbnail_v2", {"resource": {".tag": "path", "path": "/ok.jpg"}})
    assert r.status == 200 and Image.open(io.BytesIO(r.body)).size == (64, 43)
