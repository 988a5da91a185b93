"""Decode: image bytes -> the 224x224 RGB pixels MobileNetV2 reads. Pure functions, one implementation.

bytes --decode--> uint8 (224, 224, 3) --scale--> float32 in [-1, 1]

`decode` fails in one way only: `Rejected`, whose `reason` is a code of fruits.reasons.REASONS
(the `reason` column of the errors table). Whatever an upload holds, it becomes pixels or a
reason, never another exception that would stop a task. Before anything is allocated, the bytes
decoding will hold are counted against a budget (`decode_budget`). `scale` is deterministic
arithmetic that cannot fail. Nothing here knows about Spark or files.
"""

from __future__ import annotations

import io
import math
import struct
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageMode, JpegImagePlugin, UnidentifiedImageError

from fruits.reasons import EMPTY_DETAIL, REASONS, exception_detail

INPUT_SIZE = 224
# Pillow bilinear (with its antialiasing support on downscale). Pillow and tf.image.resize
# differ enough to move features (cosine down to 0.96), so this is the only resize anywhere.
RESIZE_FILTER = Image.Resampling.BILINEAR
# Part of the featurizer's identity: bump the version when anything below changes numbers.
PREPROCESSING = "pil-jpeg-draft/exif-transpose/rgb-on-white/bilinear-224x224/x:127.5-1/v1"

# Only the parsers of what upload names allow (.jpg, .jpeg, .png). Pillow picks its parser from the
# content, so any other parser would be one rename away. An MPO (a JPEG with more frames, format "MPO")
# opens through the JPEG parser.
Image.init()
ALLOWED_FORMATS = ("JPEG", "PNG")
_JPEG_FORMATS = ("JPEG", "MPO")
# The modes those formats decode to, all converted below.
_SUPPORTED_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"}
# Truncated files must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Decoding one image may hold this many bytes per pixel of the pixel limit: an 8-bit RGB image at the
# limit, as Pillow stores it (4 bytes a pixel): 256 MB at the default 64 megapixels.
BUDGET_BYTES_PER_PIXEL = 4
# Pixels converted to RGB at a time: the conversion's own copies stay a few MB whatever the image.
STRIP_PIXELS = 1 << 20
# libjpeg decodes every scan over the whole image: a small file of empty progressive scans can keep
# it busy for minutes (libjpeg-turbo's "LJT-01-003"). Encoders write a dozen; 500 is NVIDIA DALI's limit.
MAX_JPEG_SCANS = 500
_JPEG_SOS, _JPEG_EOI = b"\xff\xda", b"\xff\xd9"
# What Pillow's parsers raise on invalid data (Image.open itself takes SyntaxError, IndexError, TypeError
# and struct.error for "not this format"), and its decoders on broken or short pixel data.
_PARSER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
# What EXIF orientations 2..8 ask for, as Pillow's ImageOps.exif_transpose reads them.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class Rejected(Exception):
    """Why an upload cannot become features: `reason` is a code of REASONS, `detail` says more."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}: add it to fruits.reasons.REASONS")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_budget(max_pixels: int) -> int:
    """The bytes decoding one image may hold, derived from the pixel limit."""
    return max_pixels * BUDGET_BYTES_PER_PIXEL


def decode(data: bytes | None, max_pixels: int) -> np.ndarray:
    """Image bytes -> uint8 array (224, 224, 3), or raise Rejected: never another exception.
    The only resize in the project.

    Unusual but valid images are converted, not rejected: grayscale, palette, CMYK, 16-bit,
    transparency (composited on white, the Fruits-360 background), EXIF rotation.
    """
    if not data:
        raise Rejected("empty", EMPTY_DETAIL)
    parsing = True  # until the pixels are decoded, a decoder's error means the file is broken
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about hostile metadata: nothing anyone can act on
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(data, max_pixels)
            img.load()
            parsing = False
            transposition = _transposition(img)
        if transposition is not None:
            _require_budget(img.size, img.mode, max_pixels, 2 * _image_bytes(img, img.mode))  # the turned copy too
            img = img.transpose(transposition)
        img = _to_rgb(img)
        if img.size != (INPUT_SIZE, INPUT_SIZE):
            img = img.resize((INPUT_SIZE, INPUT_SIZE), RESIZE_FILTER)
        return np.asarray(img, dtype=np.uint8)
    except Rejected:
        raise
    except Exception as exc:  # whatever else goes wrong is this upload's error, never the task's
        raise _rejection(exc, data, parsing) from None


def scale(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., 224, 224, 3) -> float32 in [-1, 1], as MobileNetV2's preprocess_input."""
    out = pixels.astype(np.float32)
    out *= np.float32(1 / 127.5)
    out -= np.float32(1.0)
    return out


# ----------------------------------------------------------------------------- before any pixel
def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header and refuse, before anything is allocated, what would not fit the limits."""
    img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    width, height = img.size
    if width < 1 or height < 1:
        raise Rejected("bad_dimensions", f"{width}x{height}")
    if width * height > max_pixels:
        raise Rejected("too_many_pixels", f"{width}x{height} exceeds the {max_pixels:,}-pixel limit")
    if img.mode not in _SUPPORTED_MODES:
        raise Rejected("unsupported_mode", f"image mode {img.mode!r}")
    held = 0
    if img.format in _JPEG_FORMATS:
        scans = _jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise Rejected("corrupt", f"{scans:,} JPEG scans, over the {MAX_JPEG_SCANS} any encoder writes")
        if scans > 1 or img.info.get("progressive"):
            held += _jpeg_coefficient_bytes(img)
        if min(width, height) >= 2 * INPUT_SIZE:
            # Let libjpeg decode at 1/2..1/8 scale: same final size, a fraction of the work.
            img.draft("RGB", (INPUT_SIZE, INPUT_SIZE))
    # Next to the decoded image: its RGB copy, or the turned copy when the EXIF (read before the pixels
    # for JPEGs, and PNGs whose eXIf chunk comes first; checked again before turning) says to turn it.
    decoded = _image_bytes(img, img.mode)
    turned = decoded if "exif" in img.info and _transposition(img) is not None else 0
    held += decoded + max(turned, _image_bytes(img, "RGB") if img.mode != "RGB" else 0)
    _require_budget((width, height), img.mode, max_pixels, held)
    return img


def _image_bytes(img: Image.Image, mode: str) -> int:
    """Bytes of an image of img's size in `mode` as Pillow stores it: bands x bytes per band, and
    multi-band 8-bit modes (RGB included) in 4 bytes a pixel."""
    layout = ImageMode.getmode(mode)
    per_band = np.dtype(layout.typestr).itemsize
    return img.width * img.height * (per_band if len(layout.bands) == 1 else 4 * per_band)


def _require_budget(size: tuple[int, int], mode: str, max_pixels: int, held: int) -> None:
    budget = decode_budget(max_pixels)
    if held > budget:
        raise Rejected(
            "too_many_pixels",
            f"decoding this {size[0]}x{size[1]} {mode} image would hold "
            f"{held / 1e6:,.0f} MB, over the {budget / 1e6:,.0f} MB budget",
        )


def _jpeg_scans(data: bytes) -> int:
    """The scans libjpeg will decode: start-of-scan markers from the image's first scan to its end.
    Counting bytes is exact there: entropy-coded data escapes every 0xFF it holds."""
    first = _jpeg_first_scan(data)
    end = data.find(_JPEG_EOI, first)
    return data.count(_JPEG_SOS, first, len(data) if end < 0 else end)


def _jpeg_first_scan(data: bytes) -> int:
    """Where the image's first scan starts, walking the marker segments as Pillow's parser does (an
    EXIF thumbnail inside APP1 is a JPEG of its own whose scans are not the image's)."""
    pos = 2  # after the start-of-image marker
    while pos + 4 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            pos += 1  # fill bytes and padding, skipped as Pillow skips them
            continue
        marker = 0xFF00 | data[pos + 1]
        if marker == 0xFFDA:  # start of scan
            return pos
        has_length = JpegImagePlugin.MARKER.get(marker, (None, None, None))[2] is not None
        pos += 2 + (int.from_bytes(data[pos + 2 : pos + 4], "big") if has_length else 0)
    return len(data)


def _jpeg_coefficient_bytes(img: Image.Image) -> int:
    """libjpeg's whole-image buffer for progressive and multi-scan JPEGs: a two-byte coefficient per
    pixel of each component at its sampling, at full size whatever the draft scale."""
    width, height = img.size
    sampling = [(h, v) for _, h, v, _ in img.layer]
    h_max, v_max = max([1, *(h for h, _ in sampling)]), max([1, *(v for _, v in sampling)])
    blocks = sum(math.ceil(width * h / h_max / 8) * math.ceil(height * v / v_max / 8) for h, v in sampling)
    return blocks * 64 * 2


# ----------------------------------------------------------------------------- after the pixels
def _transposition(img: Image.Image) -> Image.Transpose | None:
    """How the EXIF orientation says to turn the image upright, None to leave it as stored.
    Unreadable EXIF leaves it as stored: the pixels are fine, only their orientation is unknown."""
    try:
        return _UPRIGHT.get(img.getexif().get(0x0112))  # ExifTags.Base.Orientation
    except Exception:  # hostile metadata: whatever the EXIF parser raises
        return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """The RGB image the model reads, converted strip by strip: the same numbers as converting it at
    once (every conversion here works pixel by pixel), without the copies a whole-image chain makes."""
    if img.mode == "RGB":
        return img
    top = img.getextrema()[1] if img.mode == "I;16" else 0  # 16-bit: rescaled by the whole image's maximum
    width, height = img.size
    rows = max(1, STRIP_PIXELS // width)
    if rows >= height:
        return _strip_to_rgb(img, top)
    rgb = Image.new("RGB", img.size)
    for y in range(0, height, rows):
        rgb.paste(_strip_to_rgb(img.crop((0, y, width, min(height, y + rows))), top), (0, y))
    return rgb


def _strip_to_rgb(img: Image.Image, top: int) -> Image.Image:
    if img.mode == "I;16":
        # 16-bit grayscale (PNG): rescale to 8 bits instead of clipping at 255. In integers: v // 257 is
        # exactly what v1 computed in float64, floor(v * 255 / 65535), for every 16-bit v.
        deep = np.asarray(img)
        img = Image.fromarray((deep // 257 if top > 255 else deep).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


# ----------------------------------------------------------------------------- failures
def _rejection(exc: Exception, data: bytes, parsing: bool) -> Rejected:
    """The reason for an exception raised while decoding."""
    if isinstance(exc, UnidentifiedImageError):
        found = _content_format(data)
        if found in ALLOWED_FORMATS:
            return Rejected("corrupt", f"{found} signature, but its header cannot be parsed")
        if found is not None:
            return Rejected("unsupported_format", f"{found} content: only JPEG and PNG are decoded")
        return Rejected("not_an_image", "no image format recognised")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return Rejected("too_many_pixels", exception_detail(exc))
    detail = exception_detail(exc)
    if parsing and isinstance(exc, _PARSER_ERRORS):
        truncated = isinstance(exc, EOFError) or "truncated" in detail.lower()
        return Rejected("truncated" if truncated else "corrupt", detail)
    return Rejected("decode_failed", detail)


def _content_format(data: bytes) -> str | None:
    """The format Pillow would take `data` for, from its first 16 bytes only: no parser runs."""
    prefix = data[:16]
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # some signature checks read past a short prefix
            continue
    return None
