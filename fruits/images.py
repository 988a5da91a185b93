"""Image decoding and preprocessing: pure functions, ONE implementation for fit and stream.

bytes --load_rgb--> RGB PIL image --to_array--> uint8 224x224x3 --scale--> float32 in [-1, 1]

`load_rgb` is where every rejection happens (it raises ImageRejected with a stable reason
code), so a quick validity check (`check`) and the full preprocessing always agree on what
is an error. Everything after it is deterministic arithmetic that cannot fail.
"""

from __future__ import annotations

import io
import posixpath
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

INPUT_SIZE = 224
# Pillow bilinear (with its antialiasing support on downscale). Pillow and tf.image.resize
# differ enough to move features (cosine down to 0.96), so this is the only resize anywhere.
RESIZE_FILTER = Image.Resampling.BILINEAR
# Part of the featurizer's identity: bump the version when anything below changes numbers.
PREPROCESSING = "pil-jpeg-draft/exif-transpose/rgb-on-white/bilinear-224x224/x:127.5-1/v1"

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")
# Formats we let Pillow parse. Restricting them keeps hostile uploads away from rarely used
# parsers (EPS, for instance, would start Ghostscript).
Image.init()
ALLOWED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF") if f in Image.OPEN)
# Floating-point ("F") images have no defined 0..255 range: rejected as an unsupported mode.
_SUPPORTED_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV",
                    "I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageRejected(Exception):
    """Why an upload cannot become features. `reason` is a stable code for the errors table."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def glob_for_extensions(extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> str:
    """A case-insensitive Hadoop glob for file names: '*.{[jJ][pP][gG],...}'."""
    parts = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext) for ext in extensions]
    return "*.{" + ",".join(parts) + "}"


IMAGE_GLOB = glob_for_extensions()
_IMAGE_NAME = re.compile(r"\.(" + "|".join(IMAGE_EXTENSIONS) + r")$", re.IGNORECASE)


def is_image_name(path: str) -> bool:
    """IMAGE_GLOB plus Spark's hidden-file rule, on the file NAME (Spark also skips '.'/'_' folders:
    callers that list trees skip those themselves)."""
    name = posixpath.basename(path)
    return bool(_IMAGE_NAME.search(name)) and not name.startswith((".", "_"))


def label_from_path(path: str, root: str | None = None) -> str | None:
    """The class of an image is the name of the folder that holds it.

    ".../Apple Red 1/r_12_100.jpg" -> "Apple Red 1". With `root`, an image directly in the
    root folder has no class folder and gets None. Schemes are ignored, so Spark's
    'file:/x/...' and a user's '/x' or 'file:///x' compare equal.
    """
    parent = posixpath.dirname(comparable_path(path))
    if not parent or (root is not None and parent == comparable_path(root)):
        return None
    return posixpath.basename(parent)


def comparable_path(uri: str) -> str:
    """'file:/a/b/', 'file:///a/b', '/a/b' -> 'a/b'; 's3a://bucket/a' -> 'bucket/a'."""
    return re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*:", "", uri).strip("/")


# ----------------------------------------------------------------------------- decoding
def load_rgb(data: bytes | None, max_pixels: int = 64_000_000) -> Image.Image:
    """Decode any Pillow-readable image to an RGB image, or raise ImageRejected.

    Unusual but valid images are converted, not rejected: grayscale, palette, CMYK, 16-bit,
    transparency (composited on white, the Fruits-360 background), EXIF rotation.
    """
    if not data:
        raise ImageRejected("empty", "file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageRejected("bad_dimensions", f"{width}x{height}")
            if width * height > max_pixels:
                raise ImageRejected("too_many_pixels", f"{width}x{height} exceeds the {max_pixels:,}-pixel limit")
            if img.mode not in _SUPPORTED_MODES:
                raise ImageRejected("unsupported_mode", f"image mode {img.mode!r}")
            if img.format in ("JPEG", "MPO") and min(width, height) >= 2 * INPUT_SIZE:
                # Let libjpeg decode at 1/2..1/8 scale: same final size, a fraction of the work.
                img.draft("RGB", (INPUT_SIZE, INPUT_SIZE))
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "no supported image format recognised") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        text = str(exc) or type(exc).__name__
        reason = "truncated" if "truncated" in text or isinstance(exc, EOFError) else "corrupt"
        raise ImageRejected(reason, text[:300]) from None
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grayscale (PNG): rescale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max()
        scale = 255.0 / (65535.0 if top > 255 else 255.0) if top > 0 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def to_array(img: Image.Image) -> np.ndarray:
    """RGB image -> uint8 array (224, 224, 3). The only resize in the project."""
    if img.size != (INPUT_SIZE, INPUT_SIZE):
        img = img.resize((INPUT_SIZE, INPUT_SIZE), RESIZE_FILTER)
    return np.asarray(img, dtype=np.uint8)


def scale(batch: np.ndarray) -> np.ndarray:
    """uint8 (..., 224, 224, 3) -> float32 in [-1, 1], as MobileNetV2's preprocess_input."""
    out = batch.astype(np.float32)
    out *= np.float32(1 / 127.5)
    out -= np.float32(1.0)
    return out


def preprocess(data: bytes, max_pixels: int = 64_000_000) -> np.ndarray:
    """bytes -> float32 (224, 224, 3) in [-1, 1]; raises ImageRejected."""
    return scale(to_array(load_rgb(data, max_pixels)))


def check(data: bytes | None, max_pixels: int = 64_000_000) -> Rejection | None:
    """None if `data` decodes to an image the featurizer accepts, else why not."""
    try:
        load_rgb(data, max_pixels)
    except ImageRejected as exc:
        return Rejection(exc.reason, exc.detail)
    return None


# Truncated files must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
