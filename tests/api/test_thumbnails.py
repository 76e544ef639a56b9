"""Thumbnails through the official SDK against `raftbox up`: real images in (JPEG, PNG with
transparency, an animated GIF, WebP, TIFF, BMP, PPM, a sideways-stored JPEG with its EXIF
orientation), the right size, format and orientation out, for `get_thumbnail` (v1),
`get_thumbnail_v2` and `get_thumbnail_batch`; and each error in Dropbox's shape."""

from __future__ import annotations

import base64
import io
import random

import pytest
from dropbox import exceptions, files
from PIL import Image

from .sdk import Account, Target


@pytest.fixture
def acct(up_target: Target) -> Account:
    return up_target.new_account("thumbs")


def photo(w: int, h: int, fmt: str = "JPEG", **kw) -> bytes:
    """A noisy picture (not one flat colour: a real decode and resample), left half red."""
    rnd = random.Random(w * 7919 + h)
    im = Image.frombytes("RGB", (w, h), rnd.randbytes(w * h * 3))
    im.paste((255, 0, 0), (0, 0, w // 2, h))
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def thumb_v2(dbx, path: str, **kw):
    return dbx.files_get_thumbnail_v2(files.PathOrLink.path(path), **kw)


@pytest.mark.parametrize(
    "ext,fmt",
    [
        ("jpg", "JPEG"),
        ("png", "PNG"),
        ("gif", "GIF"),
        ("webp", "WEBP"),
        ("tiff", "TIFF"),
        ("bmp", "BMP"),
        ("ppm", "PPM"),
    ],  # fmt: skip
)
def test_each_image_format_gives_each_thumbnail_format(acct: Account, ext: str, fmt: str) -> None:
    dbx = acct.dbx()
    m = dbx.files_upload(photo(1200, 900, fmt), f"/pics/a.{ext}")
    for out_fmt, pil in (("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")):
        res, resp = thumb_v2(
            dbx, f"/pics/a.{ext}", format=files.ThumbnailFormat(out_fmt),
            size=files.ThumbnailSize.w256h256,
        )  # fmt: skip
        im = opened(resp.content)
        assert (im.format, im.size) == (pil, (256, 192)), (ext, out_fmt)
        assert res.file_metadata.id == m.id and res.link_metadata is None


def test_sizes_and_modes(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(photo(1200, 1600), "/p/portrait.jpg")
    want = {
        # (size, mode) -> output size for a 1200x1600 portrait
        ("w32h32", "strict"): (24, 32),
        ("w480h320", "strict"): (240, 320),
        ("w480h320", "bestfit"): (320, 427),  # fits the transpose, 320x480: larger
        ("w480h320", "fitone_bestfit"): (360, 480),  # covers the transpose: smaller
        ("w2048h1536", "strict"): (1152, 1536),
        ("w2048h1536", "bestfit"): (1200, 1600),  # never scaled up
        ("w64h64", "original"): (1200, 1600),
    }
    for (size, mode), dims in want.items():
        _, resp = thumb_v2(
            dbx, "/p/portrait.jpg", size=files.ThumbnailSize(size), mode=files.ThumbnailMode(mode)
        )
        assert opened(resp.content).size == dims, (size, mode)


def test_exif_orientation_is_applied(acct: Account) -> None:
    dbx = acct.dbx()
    im = Image.new("RGB", (800, 400), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 400, 400))  # stored: left half red
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    dbx.files_upload(out.getvalue(), "/p/sideways.jpg")
    _, resp = thumb_v2(dbx, "/p/sideways.jpg", format=files.ThumbnailFormat.png,
                       size=files.ThumbnailSize.w128h128)  # fmt: skip
    t = opened(resp.content).convert("RGB")
    assert t.size == (64, 128)  # upright: portrait
    top, bottom = t.getpixel((32, 10)), t.getpixel((32, 118))
    assert top[0] > 200 and top[2] < 60, top  # the stored left (red) is now on top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_transparency_kept_only_when_asked(acct: Account) -> None:
    dbx = acct.dbx()
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    im.paste((0, 255, 0, 255), (0, 0, 50, 100))
    out = io.BytesIO()
    im.save(out, "PNG")
    dbx.files_upload(out.getvalue(), "/p/alpha.png")
    _, resp = thumb_v2(dbx, "/p/alpha.png", format=files.ThumbnailFormat.png,
                       preserve_transparency=True)  # fmt: skip
    t = opened(resp.content)
    assert t.mode == "RGBA" and t.getpixel((60, 30))[3] == 0
    _, resp = thumb_v2(dbx, "/p/alpha.png", format=files.ThumbnailFormat.png)
    t = opened(resp.content).convert("RGB")
    assert t.getpixel((60, 30)) == (255, 255, 255)  # laid on white
    with pytest.raises(exceptions.ApiError) as e:
        thumb_v2(dbx, "/p/alpha.png", preserve_transparency=True)  # JPEG cannot
    assert e.value.error.is_unsupported_output_format()


def test_an_animated_gif_gives_its_first_frame(acct: Account) -> None:
    dbx = acct.dbx()
    frames = [Image.new("RGB", (200, 100), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    dbx.files_upload(out.getvalue(), "/p/anim.gif")
    _, resp = thumb_v2(dbx, "/p/anim.gif", format=files.ThumbnailFormat.png)
    t = opened(resp.content).convert("RGB")
    assert t.size == (64, 32) and t.getpixel((10, 10))[0] > 200


def test_v1_get_thumbnail(acct: Account) -> None:
    dbx = acct.dbx()
    m = dbx.files_upload(photo(640, 480, "PNG"), "/v1/shot.png")
    meta, resp = dbx.files_get_thumbnail("/v1/shot.png", format=files.ThumbnailFormat.png)
    assert meta.id == m.id and meta.content_hash == m.content_hash
    assert opened(resp.content).size == (64, 48)
    meta, resp = dbx.files_get_thumbnail(m.id)  # by id, default jpeg w64h64
    assert opened(resp.content).format == "JPEG"


def test_errors(acct: Account) -> None:
    dbx = acct.dbx()
    dbx.files_upload(b"just text", "/e/notes.txt")
    dbx.files_upload(b"not a png at all", "/e/broken.png")
    dbx.files_upload(photo(100, 100)[:300], "/e/truncated.jpg")
    dbx.files_create_folder_v2("/e/folder.jpg")

    def error(path: str):
        with pytest.raises(exceptions.ApiError) as e:
            thumb_v2(dbx, path)
        return e.value.error

    assert error("/e/missing.jpg").get_path().is_not_found()
    assert error("/e/folder.jpg").get_path().is_not_file()
    assert error("/e/notes.txt").is_unsupported_extension()
    assert error("/e/broken.png").is_unsupported_image()
    assert error("/e/truncated.jpg").is_unsupported_image()
    with pytest.raises(exceptions.ApiError) as e:
        dbx.files_get_thumbnail_v2(files.PathOrLink.link(files.SharedLinkFileInfo("https://x/s/1")))
    assert e.value.error.is_not_found()
    with pytest.raises(exceptions.ApiError) as e:
        dbx.files_get_thumbnail("/e/notes.txt")
    assert e.value.error.is_unsupported_extension()


def test_batch_answers_each_entry_on_its_own(acct: Account) -> None:
    dbx = acct.dbx()
    a = dbx.files_upload(photo(300, 200), "/b/a.jpg")
    dbx.files_upload(photo(200, 300, "WEBP"), "/b/b.webp")
    dbx.files_upload(b"text", "/b/c.txt")
    r = dbx.files_get_thumbnail_batch(
        [
            files.ThumbnailArg("/b/a.jpg", size=files.ThumbnailSize.w128h128),
            files.ThumbnailArg("/b/b.webp", format=files.ThumbnailFormat.png),
            files.ThumbnailArg("/b/c.txt"),
            files.ThumbnailArg("/b/none.jpg"),
        ]
    )
    e = r.entries
    assert e[0].get_success().metadata.id == a.id
    assert opened(base64.b64decode(e[0].get_success().thumbnail)).size == (128, 85)
    t = opened(base64.b64decode(e[1].get_success().thumbnail))
    assert (t.format, t.size) == ("PNG", (43, 64))
    assert e[2].get_failure().is_unsupported_extension()
    assert e[3].get_failure().get_path().is_not_found()
    with pytest.raises(exceptions.ApiError) as err:
        dbx.files_get_thumbnail_batch([files.ThumbnailArg("/b/a.jpg")] * 26)
    assert err.value.error.is_too_many_files()
