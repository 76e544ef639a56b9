"""Thumbnails of images, as Dropbox makes them: pure (bytes in, bytes out; no I/O, no clock).

What
----
`render(data, spec)` decodes an image (Pillow) and answers it scaled to one of Dropbox's sizes
(`SIZES`: `w32h32` … `w2048h1536`), in one of its formats (`jpeg`, `png`, `webp`) and modes:

- `strict`: scale down to fit within the size;
- `bestfit`: scale down to fit within the size or its transpose (whichever keeps more);
- `fitone_bestfit`: scale down to cover the size or its transpose (the smaller cover);
- `original`: no resizing (the format may still change).

Never scaled up. The EXIF orientation is applied (a portrait photo stored sideways comes out
upright) and the metadata dropped. Transparency is kept only when asked
(`Spec.keep_alpha`, Dropbox's `preserve_transparency`, PNG and WebP); else the image is laid on
white. An animated GIF or WebP gives its first frame.

Which files: Dropbox's list, by extension (`EXTENSIONS`: jpg, jpeg, png, tiff, tif, gif, webp,
ppm, bmp — `unsupported_extension` otherwise). Pillow is told to try only the decoders of
those formats (`DECODERS`; a `.jpg` that is really a PNG still works, as files misnamed so are
common): a file that is none of them is `unsupported_image`, never a guess through Pillow's
other plugins.

Bounds (why: an image is attacker-controlled input, and a decompression bomb — a small file
that declares a huge picture — must be refused before anything is allocated for it):

- the caller refuses sources over `SOURCE_MAX_BYTES` (20 MB, as Dropbox) before reading them;
- the pixel count is read from the header (`Image.open` parses headers only) and a picture of
  more than `pixels_max` pixels (default `PIXELS_MAX`, 50 million) is `unsupported_image` before
  decoding; Pillow's own bomb check is a second line behind it;
- a JPEG is decoded at the smallest DCT scale still at least the output size (`draft`), so a
  large photo costs a fraction of a full decode;
- decode time: `render` cannot be interrupted once Pillow runs, so the caller runs it off the
  event loop with a deadline and a bounded number of workers (`raftbox.api.thumbnails`); the
  caps above bound how long a decode can take.

Errors (`ThumbnailFailure.tag`, Dropbox's `ThumbnailError` member): `unsupported_extension`,
`unsupported_image` (not an image of its kind, truncated, too many pixels, too big), and
`conversion_error` (decoded, but could not be converted).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

SIZES: dict[str, tuple[int, int]] = {
    "w32h32": (32, 32),
    "w64h64": (64, 64),
    "w128h128": (128, 128),
    "w256h256": (256, 256),
    "w480h320": (480, 320),
    "w640h480": (640, 480),
    "w960h640": (960, 640),
    "w1024h768": (1024, 768),
    "w2048h1536": (2048, 1536),
}
FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
MODES = ("strict", "bestfit", "fitone_bestfit", "original")
# extension -> the Pillow decoders a file of that extension may be read with
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "jpg": ("JPEG",),
    "jpeg": ("JPEG",),
    "png": ("PNG",),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "tif": ("TIFF",),
    "tiff": ("TIFF",),
    "bmp": ("BMP",),
    "ppm": ("PPM",),
}
DECODERS = sorted({d for ds in EXTENSIONS.values() for d in ds})
SOURCE_MAX_BYTES = 20 * 1024 * 1024
PIXELS_MAX = 50_000_000
JPEG_QUALITY = 85
WEBP_QUALITY = 80

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


class ThumbnailFailure(Exception):
    """A thumbnail that cannot be made; `tag` is Dropbox's `ThumbnailError` member."""

    def __init__(self, tag: str, why: str = "") -> None:
        super().__init__(f"{tag}: {why}" if why else tag)
        self.tag = tag


@dataclass(frozen=True)
class Spec:
    """What to make: a size name of `SIZES`, a format of `FORMATS`, a mode of `MODES`."""

    size: str = "w64h64"
    format: str = "jpeg"
    mode: str = "strict"
    keep_alpha: bool = False

    def __post_init__(self) -> None:
        if self.size not in SIZES or self.format not in FORMATS or self.mode not in MODES:
            raise ValueError(f"not a thumbnail spec: {self}")


def extension_of(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def check_extension(name: str) -> str:
    """The extension of `name` if Dropbox makes thumbnails of it, else `unsupported_extension`."""
    ext = extension_of(name)
    if ext not in EXTENSIONS:
        raise ThumbnailFailure("unsupported_extension", name)
    return ext


def target_size(w: int, h: int, size: str, mode: str) -> tuple[int, int]:
    """The output size of a `w`x`h` picture (already upright) for `size` and `mode`."""
    bw, bh = SIZES[size]
    if mode == "original":
        scale = 1.0
    elif mode == "strict":
        scale = min(bw / w, bh / h)
    elif mode == "bestfit":
        scale = max(min(bw / w, bh / h), min(bh / w, bw / h))
    else:  # fitone_bestfit
        scale = min(max(bw / w, bh / h), max(bh / w, bw / h))
    scale = min(scale, 1.0)
    return max(1, round(w * scale)), max(1, round(h * scale))


def render(data: bytes, name: str, spec: Spec, pixels_max: int = PIXELS_MAX) -> bytes:
    """The thumbnail of the file `name` holding `data` (module docstring), or
    `ThumbnailFailure`."""
    ext = check_extension(name)
    if len(data) > SOURCE_MAX_BYTES:
        raise ThumbnailFailure("unsupported_image", f"over {SOURCE_MAX_BYTES} bytes")
    try:
        im = Image.open(io.BytesIO(data), formats=DECODERS)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError, EOFError, TypeError, IndexError, KeyError) as e:  # fmt: skip
        raise ThumbnailFailure("unsupported_image", f"not a {ext} image: {e}") from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0 or w * h > pixels_max:
            raise ThumbnailFailure("unsupported_image", f"{w}x{h} is over {pixels_max} pixels")
        try:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        except Exception:  # a broken EXIF block: keep the picture as stored
            orientation = 1
        rotated = orientation in _ROTATED
        uw, uh = (h, w) if rotated else (w, h)
        tw, th = target_size(uw, uh, spec.size, spec.mode)
        try:
            if im.format == "JPEG" and spec.mode != "original":
                im.draft("RGB", (th, tw) if rotated else (tw, th))
            im.load()
        except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError,
                MemoryError, IndexError, KeyError, TypeError) as e:  # fmt: skip
            raise ThumbnailFailure("unsupported_image", f"cannot decode: {e}") from None
        try:
            return _convert(im, orientation, (tw, th), spec)
        except ThumbnailFailure:
            raise
        except Exception as e:  # decoded, but Pillow could not convert it
            raise ThumbnailFailure("conversion_error", repr(e)) from None


def _convert(im: Image.Image, orientation: int, size: tuple[int, int], spec: Spec) -> bytes:
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    alpha = spec.keep_alpha and spec.format in ("png", "webp") and _has_alpha(im)
    if alpha:
        im = im.convert("RGBA")
    elif _has_alpha(im):
        rgba = im.convert("RGBA")
        im = Image.new("RGB", rgba.size, (255, 255, 255))
        im.paste(rgba, mask=rgba.getchannel("A"))
    else:
        im = im.convert("RGB")
    if im.size != size:
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    fmt = FORMATS[spec.format]
    if fmt == "JPEG":
        im.save(out, fmt, quality=JPEG_QUALITY, optimize=True)
    elif fmt == "WEBP":
        im.save(out, fmt, quality=WEBP_QUALITY)
    else:
        im.save(out, fmt, optimize=True)
    return out.getvalue()


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
