"""Decode: image bytes -> the 224x224 RGB pixels MobileNetV2 reads. Pure functions, one implementation.

bytes --decode--> uint8 (224, 224, 3) --scale--> float32 in [-1, 1]

`decode` is where every rejection happens: it raises `Rejected` with a stable `reason` code
(the `reason` column of the errors table), so whatever calls it agrees on what is an error.
`scale` is deterministic arithmetic that cannot fail. Nothing here knows about Spark or files.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

INPUT_SIZE = 224
# Pillow bilinear (with its antialiasing support on downscale). Pillow and tf.image.resize
# differ enough to move features (cosine down to 0.96), so this is the only resize anywhere.
RESIZE_FILTER = Image.Resampling.BILINEAR
# Part of the featurizer's identity: bump the version when anything below changes numbers.
PREPROCESSING = "pil-jpeg-draft/exif-transpose/rgb-on-white/bilinear-224x224/x:127.5-1/v1"

# Formats we let Pillow parse. Restricting them keeps hostile uploads away from rarely used
# parsers (EPS, for instance, would start Ghostscript).
Image.init()
ALLOWED_FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF") if f in Image.OPEN)
# Floating-point ("F") images have no defined 0..255 range: rejected as an unsupported mode.
_SUPPORTED_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV",
                    "I", "I;16", "I;16B", "I;16L", "I;16N"}
# Truncated files must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class Rejected(Exception):
    """Why an upload cannot become features: `reason` is a stable code, `detail` says more."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(data: bytes | None, max_pixels: int) -> np.ndarray:
    """Image bytes -> uint8 array (224, 224, 3), or raise Rejected. The only resize in the project."""
    img = load_rgb(data, max_pixels)
    if img.size != (INPUT_SIZE, INPUT_SIZE):
        img = img.resize((INPUT_SIZE, INPUT_SIZE), RESIZE_FILTER)
    return np.asarray(img, dtype=np.uint8)


def scale(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., 224, 224, 3) -> float32 in [-1, 1], as MobileNetV2's preprocess_input."""
    out = pixels.astype(np.float32)
    out *= np.float32(1 / 127.5)
    out -= np.float32(1.0)
    return out


def load_rgb(data: bytes | None, max_pixels: int) -> Image.Image:
    """Decode any allowed image format to an RGB image, or raise Rejected.

    Unusual but valid images are converted, not rejected: grayscale, palette, CMYK, 16-bit,
    transparency (composited on white, the Fruits-360 background), EXIF rotation.
    """
    if not data:
        raise Rejected("empty", "file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise Rejected("bad_dimensions", f"{width}x{height}")
            if width * height > max_pixels:
                raise Rejected("too_many_pixels", f"{width}x{height} exceeds the {max_pixels:,}-pixel limit")
            if img.mode not in _SUPPORTED_MODES:
                raise Rejected("unsupported_mode", f"image mode {img.mode!r}")
            if img.format in ("JPEG", "MPO") and min(width, height) >= 2 * INPUT_SIZE:
                # Let libjpeg decode at 1/2..1/8 scale: same final size, a fraction of the work.
                img.draft("RGB", (INPUT_SIZE, INPUT_SIZE))
            img.load()
            img = ImageOps.exif_transpose(img)
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "no supported image format recognised") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        text = str(exc) or type(exc).__name__
        reason = "truncated" if "truncated" in text or isinstance(exc, EOFError) else "corrupt"
        raise Rejected(reason, text[:300]) from None
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grayscale (PNG): rescale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max()
        factor = 255.0 / (65535.0 if top > 255 else 255.0) if top > 0 else 1.0
        img = Image.fromarray(np.clip(arr * factor, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")
